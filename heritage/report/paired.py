"""Paired comparisons of two settings over their shared folds: the research questions' tables.

Reader: the comparison (``99_comparison``; :mod:`heritage.report.design` says which pairs answer
which question). Each row is a pair (A, B): the paired mIoU difference A - B over the folds both
have run, its 95% t interval, the artwork bootstrap beside it (:mod:`heritage.report.resampling`, never
deciding), what else differs, and :func:`~heritage.report.verdicts.decide`'s verdict. RQ4 and RQ6 add their
training-budget check (``BUDGET_FIELDS``) and a per-class table.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from heritage import errors
from heritage.data import taxonomy
from heritage.report import design
from heritage.report.design import rq4_pairs
from heritage.report.frames import CONFIG_FIELDS, SETTING, _matches, _same, encoder_label, setting_label
from heritage.report.tables import ABSENT, NOT_RECORDED, Table, _fixed, _sources
from heritage.report.verdicts import (CONFIDENCE, MIN_PAIRED_UNITS, NOT_COMPARED, NOT_SUPPORTED, PairedDifference,
                                      Verdict, decide)

# What fixes a training run's compute budget: the same values give the same steps and training pixels
# (an epoch has as many items as training samples in both sampling modes). RQ4 compares only arms that agree.
BUDGET_FIELDS = ("image_size", "batch_size", "epochs", "max_train_samples")
CI = f"{CONFIDENCE:.0%} CI"  # the display tables' interval column, and the level their captions state


def paired_runs(runs: pd.DataFrame, a: pd.Series, b: pd.Series) -> pd.DataFrame:
    """The (protocol, fold) both settings have run, sorted: ``miou_a/b`` and ``all_clean_miou_a/b``."""
    columns = ["miou", "all_clean_miou"]
    runs_a = runs[_matches(runs, [a[k] for k in SETTING])].set_index(["protocol", "fold"])[columns]
    runs_b = runs[_matches(runs, [b[k] for k in SETTING])].set_index(["protocol", "fold"])[columns]
    shared = runs_a.index.intersection(runs_b.index).sort_values()
    return runs_a.loc[shared].add_suffix("_a").join(runs_b.loc[shared].add_suffix("_b"))


def compare_settings(runs: pd.DataFrame, a: pd.Series, b: pd.Series, blocked: Sequence[str] = ()) -> Verdict:
    """The verdict (:func:`decide`) on the test mIoU of two settings over the folds both have run."""
    paired = paired_runs(runs, a, b)
    return decide(paired["miou_a"].to_numpy(), paired["miou_b"].to_numpy(),
                  paired["all_clean_miou_a"].to_numpy(), paired["all_clean_miou_b"].to_numpy(), blocked=blocked)


def comparison_table(name: str, caption: str, runs: pd.DataFrame, summary: pd.DataFrame,
                     pairs: Sequence[tuple[int, int]], factors: Sequence[str],
                     blocked: Callable[[pd.Series, pd.Series], list[str]] | None = None) -> Table:
    """One row per pair of summary rows (A, B): paired mIoU difference A - B, 95% CI and the verdict.

    The verdict is :func:`decide`'s. ``factors`` are the summary columns under test (the first is
    recorded as ``factor_a/b``; the others change with it by design, like the multi-task loss with the
    multi-task model). Other CONFIG_FIELDS that differ are listed in "also differs", since they
    confound the comparison. ``blocked(a, b)`` gives reasons a pair may not be compared at all (RQ4's
    budget check): its row says NOT_COMPARED and why instead of a difference.
    """
    factor = factors[0]
    data_rows, display_rows, notes = [], [], []
    for index_a, index_b in pairs:
        a, b = summary.loc[index_a], summary.loc[index_b]
        label_a, label_b = setting_label(a), setting_label(b)
        verdict = compare_settings(runs, a, b, blocked(a, b) if blocked is not None else ())
        difference = verdict.difference
        confounders = [f for f in CONFIG_FIELDS if f not in factors and not _same(a.get(f), b.get(f))]
        statement = verdict.statement(label_a, label_b)
        artworks = artwork_bootstrap(runs, a, b) if verdict.compared else NOT_COMPARED
        data_rows.append({
            "a": label_a, "b": label_b, "factor_a": a[factor], "factor_b": b[factor],
            "n_pairs": difference.n, "mean_diff": difference.mean, "ci_low": difference.ci_low,
            "ci_high": difference.ci_high, "a_folds_above_all_clean": verdict.above_a,
            "b_folds_above_all_clean": verdict.above_b, **_artwork_numbers(artworks),
            "also_differs": ", ".join(confounders),
            "verdict": verdict.label, "reason": "; ".join(verdict.reasons), "statement": statement,
        })
        if not verdict.compared:
            display_rows.append({"A": label_a, "B": label_b, **dict.fromkeys(_COMPARISON_COLUMNS[2:-2], NOT_COMPARED),
                                 "Also differs": ", ".join(confounders) or "—", "Verdict": verdict.cell})
            notes.append(f"- {statement}")
            continue
        display_rows.append({
            "A": label_a, "B": label_b, "Paired folds": difference.n,
            "A − B (mIoU pts)": _fixed(difference.mean, 2, 100),
            CI: _interval_cell(difference),
            "Folds A, B above all-Clean": (f"{_count(verdict.above_a)}, {_count(verdict.above_b)} of {difference.n}"
                                           if difference.n else "n/a"),
            **_artwork_cells(artworks),
            "Also differs": ", ".join(confounders) or "—",
            "Verdict": verdict.cell,
        })
        notes.append(f"- {statement}" + (f" (also differs: {', '.join(confounders)})" if confounders else ""))
    if not pairs:
        notes.append("- No pair of settings with runs for this question.")
    else:
        notes.append(f"- {_artwork_note()}")
    if pairs and not any(row["verdict"] != NOT_SUPPORTED for row in data_rows):
        notes.insert(0, f"No pair meets the verdict rules ({MIN_PAIRED_UNITS}+ paired folds, a {CI} excluding 0, "
                        "both sides above their all-Clean baseline on every paired fold): no difference is claimed.")
    involved = summary.loc[sorted({i for pair in pairs for i in pair})] if pairs else summary.iloc[0:0]
    return Table(name=name, caption=caption, data=pd.DataFrame(data_rows, columns=[
        "a", "b", "factor_a", "factor_b", "n_pairs", "mean_diff", "ci_low", "ci_high", "a_folds_above_all_clean",
        "b_folds_above_all_clean", *_ARTWORK_DATA, "also_differs", "verdict", "reason", "statement"]),
        display=pd.DataFrame(display_rows, columns=_COMPARISON_COLUMNS), runs=_sources(involved), notes=notes)


# Display columns of a comparison table, also when no pair has runs (a header with no rows).
# The artwork bootstrap's display columns (heritage.report.resampling.STATISTICS keys), beside the fold-level interval.
_ARTWORK_COLUMNS = {"dataset_miou": f"Artwork bootstrap, dataset-level A − B [{CI}]",
                    "per_image_miou": f"Artwork bootstrap, per-image A − B [{CI}]"}
_COMPARISON_COLUMNS = ["A", "B", "Paired folds", "A − B (mIoU pts)", CI, "Folds A, B above all-Clean",
                       *_ARTWORK_COLUMNS.values(), "Also differs", "Verdict"]
_ARTWORK_DATA = ["artwork_n_sources", "artwork_n_images", *(f"artwork_{statistic}_{name}" for statistic in (
    "dataset", "per_image") for name in ("diff", "ci_low", "ci_high")), "artwork_note"]


def _artwork_note() -> str:
    from heritage.report import resampling

    return (f"Artwork bootstrap: the test images of all paired folds, their source artworks resampled with "
            f"replacement ({resampling.RESAMPLES} draws, seed {resampling.SEED}, each artwork's images together), "
            f"percentile {CONFIDENCE:.0%} interval of A − B in dataset-level mIoU (pixels pooled over the drawn images) and in "
            "per-image mIoU (mean over the drawn images); shown beside the fold-level t interval, the verdict "
            "uses the folds only.")


def artwork_bootstrap(runs: pd.DataFrame, a: pd.Series, b: pd.Series) -> dict[str, Any] | str:
    """:func:`heritage.report.resampling.bootstrap_difference` of A and B over the test images of the folds both have
    run (every paired fold's ``per_image.csv``), or why there is none ("no paired fold", "no per_image.csv
    for 2 of 3 runs of A"). Beside the fold-level interval; the verdict (:func:`decide`) stays on folds."""
    from heritage.report import resampling

    shared = paired_runs(runs, a, b).index
    if not len(shared):
        return "no paired fold"
    tables = {}
    for side, row in (("A", a), ("B", b)):
        mine = runs[_matches(runs, [row[k] for k in SETTING])].set_index(["protocol", "fold"]).loc[shared]
        found = {run_dir: t for run_dir, t in zip(mine["run_dir"], mine["per_image"] if "per_image" in mine else [])
                 if isinstance(t, pd.DataFrame)}
        if len(found) < len(mine):
            return f"no per_image.csv for {len(mine) - len(found)} of {len(mine)} runs of {side}"
        tables[side] = found
    try:
        return resampling.bootstrap_difference(*(resampling.setting_images(tables[side]) for side in ("A", "B")))
    except errors.InputError as err:  # the same folds on different images: the data changed between them
        raise errors.InputError(f"{setting_label(a)} vs {setting_label(b)}: {err}") from None


def _artwork_numbers(artworks: dict[str, Any] | str) -> dict[str, Any]:
    """The comparison table's ``data`` columns of an :func:`artwork_bootstrap` (NaN and a note without one)."""
    if isinstance(artworks, str):
        return {**dict.fromkeys(_ARTWORK_DATA[:-1], math.nan), "artwork_note": artworks}
    first = artworks["dataset_miou"]
    numbers = {"artwork_n_sources": first.n_sources, "artwork_n_images": first.n_images, "artwork_note": ""}
    for statistic, key in (("dataset", "dataset_miou"), ("per_image", "per_image_miou")):
        result = artworks[key]
        numbers.update({f"artwork_{statistic}_diff": result.mean, f"artwork_{statistic}_ci_low": result.ci_low,
                        f"artwork_{statistic}_ci_high": result.ci_high})
    return numbers


def _artwork_cells(artworks: dict[str, Any] | str) -> dict[str, str]:
    """The display cells: "+1.23 [-0.40, +2.90], 139 artworks" per statistic, or the reason there is none."""
    if isinstance(artworks, str):
        return dict.fromkeys(_ARTWORK_COLUMNS.values(), artworks)
    return {column: (f"{_fixed(artworks[key].mean, 2, 100)} [{_fixed(artworks[key].ci_low, 2, 100)}, "
                     f"{_fixed(artworks[key].ci_high, 2, 100)}], {artworks[key].n_sources} artworks")
            for key, column in _ARTWORK_COLUMNS.items()}


def _interval_cell(difference: PairedDifference) -> str:
    """The CI cell of a paired difference in points: "[-0.40, 2.90]"-like bounds, "n/a" without an interval."""
    return f"[{_fixed(difference.ci_low, 2, 100)}, {_fixed(difference.ci_high, 2, 100)}]" if difference.testable else "n/a"


def _count(value: int | None) -> str:
    return "not recorded" if value is None else str(value)


def _budget_value(value: Any) -> Any:
    """A budget field as recorded (None when it is not: NaN in a frame); integral floats back to int."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value) if isinstance(value, (float, np.floating)) and float(value).is_integer() else value


def budget_problems(runs: pd.DataFrame, a: pd.Series, b: pd.Series) -> list[str]:
    """Why A's and B's training budgets (BUDGET_FIELDS) cannot be called the same on their paired folds:
    a field that differs ("training budget differs: epochs 6 vs 3") or is not recorded. [] when they agree."""
    shared = paired_runs(runs, a, b).index
    values = {side: runs[_matches(runs, [row[k] for k in SETTING])].set_index(["protocol", "fold"]).loc[shared]
              for side, row in (("A", a), ("B", b))}
    problems = []
    for name in BUDGET_FIELDS:
        found = {side: {_budget_value(v) for v in frame[name]} for side, frame in values.items()}
        missing = [side for side, seen in found.items() if None in seen]
        if missing:
            problems.append(f"training budget not recorded ({name} of {' and '.join(missing)})")
        elif found["A"] != found["B"] or len(found["A"]) > 1:
            problems.append(f"training budget differs: {name} "
                            f"{'/'.join(map(str, sorted(found['A'], key=str)))} vs {'/'.join(map(str, sorted(found['B'], key=str)))}")
    return problems


def budget_text(runs: pd.DataFrame, a: pd.Series, b: pd.Series) -> str:
    """The budget cell of an RQ4 row: the shared budget, or what keeps the two from being compared."""
    problems = budget_problems(runs, a, b)
    if problems:
        return "; ".join(problems)
    shared = paired_runs(runs, a, b).index
    if not len(shared):
        return "n/a"
    first = runs[_matches(runs, [a[k] for k in SETTING])].set_index(["protocol", "fold"]).loc[shared].iloc[0]
    size, batch, epochs, samples = (_budget_value(first[name]) for name in BUDGET_FIELDS)
    return f"same: {size} px, batch {batch}, {epochs} epochs, {samples} training samples"


def question_table(question: design.ResearchQuestion, runs: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """A research question's paired table (:func:`comparison_table` over ``question.pairs``, :func:`decide`); a
    budget-matched question (RQ4) adds a budget column, and a pair whose budgets differ (or are not recorded)
    is not compared."""
    pairs = question.pairs(summary)
    blocked = (lambda a, b: budget_problems(runs, a, b)) if question.budget_matched else None
    table = comparison_table(question.table, question.caption, runs, summary, pairs, question.factors, blocked=blocked)
    if question.budget_matched:
        budgets = [budget_text(runs, summary.loc[i], summary.loc[j]) for i, j in pairs]
        table.data.insert(len(table.data.columns) - 3, "budget", budgets)
        table.display.insert(len(table.display.columns) - 1, "Budget (both arms)", budgets)
    return table


def rq4_table(runs: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """RQ4's paired table (:func:`question_table`) with its budget column."""
    return question_table(design.question("rq4_sampling"), runs, summary)


THIN_MEAN = "Thin classes (mean)"  # the per-class table's row of the mean over taxonomy.THIN_CLASSES
THIN_DAMAGE = "Thin damage (one class)"  # its row of the thin classes' union IoU (test.thin; None before it was recorded)


def _class_scores(run: pd.Series, name: str) -> float | None:
    """A run's test IoU of class ``name``, for THIN_MEAN the mean over the thin classes it holds, for THIN_DAMAGE
    the IoU of their union."""
    if name == THIN_DAMAGE:
        return None if math.isnan(run["thin_iou"]) else float(run["thin_iou"])
    if name != THIN_MEAN:
        return run["per_class"].get(name)
    present = [run["per_class"].get(c) for c in taxonomy.THIN_CLASSES if run["per_class"].get(c) is not None]
    return float(np.mean(present)) if present else None


def rq4_per_class_table(runs: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """RQ4 per class: test IoU of A (patch) and B (letterbox) per class, their paired difference over the folds
    whose test part holds the class (IoU recorded in both runs), and the verdict rules on it (the all-Clean
    rule on the runs' mIoU); thin classes marked, plus their mean. Pairs with different budgets: not compared."""
    return paired_per_class_table(
        "rq4_per_class", runs, summary, rq4_pairs(summary), ("patch", "letterbox"),
        "RQ4 per class - patch (A) vs letterbox (B) at the same training budget",
        "- No patch arm with runs beside its letterbox main configuration.")


def rq6_per_class_table(runs: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """RQ6 per class: the thin-damage recipe (A) against the main configuration (B), as :func:`rq4_per_class_table`."""
    return paired_per_class_table(
        "rq6_per_class", runs, summary, design.rq6_pairs(summary), ("thin", "main"),
        "RQ6 per class - the thin-damage recipe (A) vs the main configuration (B) at the same training budget",
        "- No thin-recipe arm with runs beside its main configuration.")


def paired_per_class_table(name: str, runs: pd.DataFrame, summary: pd.DataFrame, pairs: Sequence[tuple[int, int]],
                    arms: tuple[str, str], title: str, none_note: str) -> Table:
    """Per class, the test IoU of A and B (``arms`` name them: columns ``iou_<arm>``), their paired difference
    over the folds whose test part holds the class, and the verdict rules on it (the all-Clean rule on the runs'
    mIoU); thin classes marked, plus their mean. Pairs with different budgets (BUDGET_FIELDS): not compared."""
    arm_a, arm_b = arms
    label_a, label_b = arm_a.capitalize(), arm_b.capitalize()
    column_a, column_b = f"{label_a} IoU (%)", f"{label_b} IoU (%)"
    column_diff = f"{label_a} − {arm_b} (IoU pts)"
    data_rows, display_rows, sources = [], [], []
    for index_a, index_b in pairs:
        a, b = summary.loc[index_a], summary.loc[index_b]
        problems = budget_problems(runs, a, b)
        paired = paired_runs(runs, a, b).index
        runs_a, runs_b = (runs[_matches(runs, [row[k] for k in SETTING])].set_index(["protocol", "fold"]).loc[paired]
                          for row in (a, b))
        sources += [{"run_dir": r, "config_hash": h} for frame in (runs_a, runs_b)
                    for r, h in zip(frame["run_dir"], frame["config_hash"])]
        for class_name in (*taxonomy.CLASS_NAMES, THIN_MEAN, THIN_DAMAGE):
            scores = [(_class_scores(ra, class_name), _class_scores(rb, class_name), ra, rb)
                      for (_, ra), (_, rb) in zip(runs_a.iterrows(), runs_b.iterrows())]
            held = [s for s in scores if s[0] is not None and s[1] is not None]
            verdict = decide([s[0] for s in held], [s[1] for s in held], [s[2]["all_clean_miou"] for s in held],
                             [s[3]["all_clean_miou"] for s in held], blocked=problems,
                             run_miou=([s[2]["miou"] for s in held], [s[3]["miou"] for s in held]))
            difference = verdict.difference
            recorded = class_name != THIN_DAMAGE or (runs_a["thin_recorded"].any() and runs_b["thin_recorded"].any())
            iou_a = float(np.mean([s[0] for s in held])) if held else ABSENT if recorded else NOT_RECORDED
            iou_b = float(np.mean([s[1] for s in held])) if held else ABSENT if recorded else NOT_RECORDED
            thin = class_name in taxonomy.THIN_CLASSES or class_name in (THIN_MEAN, THIN_DAMAGE)
            data_rows.append({
                "encoder": a["encoder"], "protocol": a["protocol"], "class": class_name, "thin": thin,
                "n_pairs": len(held), f"iou_{arm_b}": iou_b if verdict.compared else NOT_COMPARED,
                f"iou_{arm_a}": iou_a if verdict.compared else NOT_COMPARED, "mean_diff": difference.mean,
                "ci_low": difference.ci_low, "ci_high": difference.ci_high, "verdict": verdict.label,
                "reason": "; ".join(verdict.reasons)})
            numbers = {
                column_b: iou_b if isinstance(iou_b, str) else f"{100 * iou_b:.2f}",
                column_a: iou_a if isinstance(iou_a, str) else f"{100 * iou_a:.2f}",
                column_diff: _fixed(difference.mean, 2, 100) if held else "n/a",
                CI: _interval_cell(difference),
                "Folds": len(held)}
            if not verdict.compared:
                numbers = dict.fromkeys(numbers, NOT_COMPARED)
            display_rows.append({"Encoder": encoder_label(a["encoder"]), "Class": class_name,
                                 "Thin": "thin" if thin else "", **numbers, "Verdict": verdict.cell})
    thin_names = ", ".join(taxonomy.THIN_CLASSES)
    return Table(
        name=name,
        caption=(f"{title}: test IoU (%) per class at the working resolution (the same test pixels), mean over the "
                 "paired folds whose test part holds the class, the paired difference A − B with its "
                 f"{CONFIDENCE:.0%} t interval and the verdict rules (both runs above their all-Clean mIoU on every "
                 f"paired fold); thin classes ({thin_names}) marked, '{THIN_MEAN}' their mean per fold, "
                 f"'{THIN_DAMAGE}' the IoU of their union (folds recording it)"),
        data=pd.DataFrame(data_rows, columns=[
            "encoder", "protocol", "class", "thin", "n_pairs", f"iou_{arm_b}", f"iou_{arm_a}", "mean_diff", "ci_low",
            "ci_high", "verdict", "reason"]),
        display=pd.DataFrame(display_rows, columns=[
            "Encoder", "Class", "Thin", column_b, column_a, column_diff, CI, "Folds", "Verdict"]),
        runs=sorted({(r["run_dir"], r["config_hash"]): r for r in sources}.values(), key=lambda r: r["run_dir"]),
        notes=[] if data_rows else [none_note],
        csv_units={f"iou_{arm_b}": (f"iou_{arm_b} (%)", 100.0), f"iou_{arm_a}": (f"iou_{arm_a} (%)", 100.0),
                   **{column: (f"{column} (IoU points)", 100.0) for column in ("mean_diff", "ci_low", "ci_high")}},
    )
