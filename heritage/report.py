"""Tables and figures made from run folders.

Two readers use this module. The POC notebooks show one run (configuration, training curves,
per-class IoU, confusion matrix, prediction panels, throughput/memory/time) and the dataset
notebook shows a data folder. ``99_comparison`` rebuilds the paper's tables and figures from every
run's ``metrics.json``.

No number is typed in here: every cell comes from a run, a planned cell without a run says
"no run", and every table and figure written records the run folders (and config hashes) it was
made from in ``provenance.json``. Every table and figure also carries a provenance banner
(:class:`Banner`: profile, data and its fingerprint, pretrained or from scratch, epochs, how many
runs beat their all-Clean baseline). "A better" / "B better" is only stated where :func:`decide`
allows it (the verdict rules: at least 3 paired folds, a 95% t interval of the mean difference that
excludes 0, and both sides above their all-Clean baseline on every paired fold).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend
from scipy import stats

from heritage import errors, fileio, overlays, taxonomy
from heritage.config import RunConfig

NO_RUN = "no run"
ABSENT = "absent"  # a class in neither ground truth nor prediction, in every fold of a setting
METRICS_FILE = "metrics.json"
# A setting is one configuration evaluated on several folds; its runs differ only in the fold.
SETTING = ["poc", "variant", "encoder", "protocol"]
# Fields a paired comparison reports as "also differs" when they differ besides the factor tested.
CONFIG_FIELDS = ["architecture", "loss", "class_weights", "image_size", "batch_size", "lr", "epochs",
                 "sampling", "working_resolution"]  # the last two: a patch arm is no loss variant (issue 11)
ABLATION_POC = "poc59v2_flagship"
# What fixes a training run's compute budget: the same values give the same steps and training pixels
# (an epoch has as many items as training samples in both sampling modes). RQ4 compares only arms that agree.
BUDGET_FIELDS = ("image_size", "batch_size", "epochs", "max_train_samples")
ALL_SAMPLES = "all"  # max_train_samples of a run that trained on every sample (None in its config)
NOT_COMPARED = "not compared"
CONFIDENCE = 0.95
MIN_PAIRED_UNITS = 3  # fewer paired folds give an interval too unstable to state a verdict on
A_BETTER, B_BETTER, NOT_SUPPORTED = "A better", "B better", "not supported"
# heritage.synth.sample_id starts every stand-in id with it; ARTeFACT's own ids are cuids ("c...").
SYNTHETIC_ID_PREFIX = "syn"
SYNTHETIC, ARTEFACT = "synthetic stand-in", "ARTeFACT"
FAMILY_ORDER = ["CNN", "ViT", "hybrid"]
RUN_COLUMNS = [
    "run_dir", "poc", "variant", "encoder", "family", "architecture", "loss", "class_weights",
    "protocol", "fold", "profile", "pretrained", "seed", "config_hash", "image_size", "batch_size", "lr", "epochs",
    "sampling", "working_resolution", "max_train_samples",
    "params_m", "device", "best_epoch", "miou", "per_image_miou", "all_clean_miou", "pixel_accuracy", "binary_miou", "coarse_miou",
    "fine_miou", "train_images_per_s", "eval_images_per_s", "peak_memory_mb", "wall_time_s", "per_class",
    "seeds_miou", "seeds_all_clean_miou",  # test.seeds_convention: the seeds' metric on the same predictions
]
_MEANS = ["seeds_miou", "seeds_all_clean_miou", "per_image_miou", "all_clean_miou", "binary_miou", "coarse_miou", "fine_miou", "train_images_per_s", "eval_images_per_s",
          "wall_time_s", "peak_memory_mb", "params_m"]


# -- loading runs ----------------------------------------------------------------------------------


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read one run's ``metrics.json`` and check the keys the tables need; errors name the file."""
    metrics = fileio.read_json(path)
    if not isinstance(metrics, dict):
        raise errors.InputError(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    missing = [k for k in ("poc", "encoder", "protocol", "fold", "config_hash", "test") if k not in metrics]
    missing += [f"test.{k}" for k in ("miou", "per_class") if k not in (metrics.get("test") or {})]
    if missing:
        raise errors.InputError(f"{path}: lacks {', '.join(missing)}")
    return metrics


def load_runs(runs_root: str | Path) -> pd.DataFrame:
    """One row per finished run under ``runs_root`` (every ``**/metrics.json``), columns RUN_COLUMNS.

    ``run_dir`` is relative to ``runs_root``; ``variant`` is "" for a POC's main configuration;
    ``per_class`` maps class name -> test IoU (None for a class absent from the run's test set).
    """
    root = Path(runs_root)
    rows = [_run_row(load_metrics(path), path.parent.relative_to(root).as_posix())
            for path in sorted(root.glob(f"**/{METRICS_FILE}"))]
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    frame["pretrained"] = [_pretrained(root / d, p) for d, p in zip(frame["run_dir"], frame["pretrained"])]
    frame["max_train_samples"] = [_max_train_samples(root / d) for d in frame["run_dir"]]
    frame["per_image"] = [_per_image(root / d) for d in frame["run_dir"]]
    return frame


def _per_image(run_dir: Path) -> pd.DataFrame | None:
    """The run's ``per_image.csv`` (:func:`heritage.runs.read_per_image`), None for runs made before it existed."""
    from heritage import runs

    return runs.read_per_image(run_dir) if (run_dir / runs.PER_IMAGE_FILE).is_file() else None


def _pretrained(run_dir: Path, recorded: Any) -> bool | None:
    """``pretrained`` from metrics.json, else from the run's config.yaml; None when neither says."""
    if recorded is not None:
        return bool(recorded)
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("pretrained")
    return None if value is None else bool(value)


def _max_train_samples(run_dir: Path) -> int | str | None:
    """``max_train_samples`` from the run's config.yaml (metrics.json lacks it): an int, ALL_SAMPLES for
    None, or None when config.yaml does not record it."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "max_train_samples" not in config:
        return None
    value = config["max_train_samples"]
    return ALL_SAMPLES if value is None else int(value)


def _run_row(metrics: dict[str, Any], run_dir: str) -> dict[str, Any]:
    test = metrics["test"]
    hierarchical = metrics.get("hierarchical") or {}
    throughput = metrics.get("throughput") or {}
    seeds = test.get("seeds_convention") or {}  # runs made before it was recorded: NaN
    row = {key: metrics.get(key) for key in RUN_COLUMNS}
    row.update(
        run_dir=run_dir, variant=metrics.get("variant") or "", miou=_number(test["miou"]),
        per_image_miou=_number(test.get("per_image_miou")),  # runs made before it was recorded: NaN
        pixel_accuracy=_number(test.get("pixel_accuracy")),
        all_clean_miou=_number(test.get("all_clean_miou")),  # runs made before it was recorded: NaN
        binary_miou=_number(hierarchical.get("binary_miou")),
        coarse_miou=_number(hierarchical.get("coarse_miou")),
        fine_miou=_number(hierarchical.get("fine_miou")),
        train_images_per_s=_number(throughput.get("train_images_per_s")),
        eval_images_per_s=_number(throughput.get("eval_images_per_s")),
        peak_memory_mb=_number(metrics.get("peak_memory_mb")),
        wall_time_s=_number(metrics.get("wall_time_s")),
        params_m=_number(metrics.get("params_m")),
        per_class={name: entry.get("iou") for name, entry in test["per_class"].items()},
        seeds_miou=_number(seeds.get("miou")), seeds_all_clean_miou=_number(seeds.get("all_clean_miou")),
    )
    return row


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def planned_runs(configs: Iterable[RunConfig]) -> pd.DataFrame:
    """The plan (``heritage.config.plan``) as rows: SETTING + fold, config_hash, family, CONFIG_FIELDS."""
    from heritage import models

    rows = [{"poc": c.poc, "variant": c.variant or "", "encoder": c.encoder, "protocol": c.protocol,
             "fold": c.fold, "config_hash": c.config_hash(), "family": models.ENCODERS[c.encoder].family,
             **{name: getattr(c, name) for name in CONFIG_FIELDS}, "pretrained": c.pretrained} for c in configs]
    return pd.DataFrame(rows, columns=[*SETTING, "fold", "config_hash", "family", *CONFIG_FIELDS, "pretrained"])


def select_runs(runs: pd.DataFrame, planned: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``runs`` into those the plan asks for (same cell, same config hash) and the others.

    Returns ``(used, ignored)``; ``ignored`` has a ``reason`` column (a run of an older
    configuration, or a cell the plan does not hold). Without a plan every run is used.
    """
    if planned is None:
        return runs.reset_index(drop=True), runs.iloc[0:0].assign(reason=[])
    cell = [*SETTING, "fold"]
    merged = runs.merge(planned[[*cell, "config_hash"]].rename(columns={"config_hash": "planned_hash"}),
                        on=cell, how="left")
    matches = merged["planned_hash"] == merged["config_hash"]
    reason = np.where(merged["planned_hash"].isna(), "not in the plan",
                      "config hash differs from the plan's (an older configuration)")
    ignored = merged[~matches].assign(reason=reason[~matches.to_numpy()]).drop(columns="planned_hash")
    return merged[matches].drop(columns="planned_hash").reset_index(drop=True), ignored.reset_index(drop=True)


# -- statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedDifference:
    """Mean of paired differences A - B with a two-sided t confidence interval."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    confidence: float = CONFIDENCE

    @property
    def testable(self) -> bool:
        """An interval exists (two pairs or more)."""
        return self.n >= 2

    @property
    def excludes_zero(self) -> bool:
        return self.testable and (self.ci_low > 0 or self.ci_high < 0)

    def interval(self, scale: float = 100.0) -> str:
        return f"{self.confidence:.0%} CI [{self.ci_low * scale:+.2f}, {self.ci_high * scale:+.2f}]"


@dataclass(frozen=True)
class Verdict:
    """What a paired comparison of A and B may state (see :func:`decide`)."""

    difference: PairedDifference
    above_a: int | None  # paired folds on which A's mIoU is above its all-Clean mIoU; None: not recorded
    above_b: int | None
    label: str  # A_BETTER, B_BETTER or NOT_SUPPORTED
    reasons: tuple[str, ...] = ()  # why not supported
    compared: bool = True  # False: the pair may not be compared at all (``decide(blocked=...)``), no numbers

    @property
    def supported(self) -> bool:
        return self.label != NOT_SUPPORTED

    @property
    def cell(self) -> str:
        """The table cell: "A better", "B better" or "not supported: <reasons>"."""
        return self.label if self.supported else f"{NOT_SUPPORTED}: {'; '.join(self.reasons)}"

    def statement(self, a: str, b: str, scale: float = 100.0, unit: str = "mIoU points") -> str:
        """One sentence naming A and B; it says "beats" only for a supported verdict."""
        d = self.difference
        if not self.compared:
            return f"{a} vs {b}: {NOT_SUPPORTED}, {NOT_COMPARED} ({'; '.join(self.reasons)})"
        if self.supported:
            winner, loser = (a, b) if self.label == A_BETTER else (b, a)
            return (f"{winner} beats {loser} by {abs(d.mean) * scale:.2f} {unit} ({d.interval(scale)}, "
                    f"n={d.n} paired folds, both above their all-Clean baseline on every paired fold)")
        numbers = "no paired folds" if d.n == 0 else (
            f"mean A-B {d.mean * scale:+.2f} {unit}" + (f", {d.interval(scale)}" if d.testable else "") + f", n={d.n}")
        return f"{a} vs {b}: {NOT_SUPPORTED} ({'; '.join(self.reasons)}); {numbers}"


def decide(miou_a: Sequence[float], miou_b: Sequence[float], clean_a: Sequence[float], clean_b: Sequence[float],
           confidence: float = CONFIDENCE, *, blocked: Sequence[str] = (),
           run_miou: tuple[Sequence[float], Sequence[float]] | None = None) -> Verdict:
    """The verdict rules, the only place a table's "A better" / "B better" comes from.

    The inputs are aligned per paired fold: mIoU of A and of B, and the all-Clean mIoU of A's and of
    B's test pixels (``test.all_clean_miou``). "A better" (or "B better") needs all of:

    1. at least MIN_PAIRED_UNITS (3) paired folds;
    2. a ``confidence`` t interval of the mean difference A - B that excludes 0;
    3. A and B each above their all-Clean baseline on every paired fold (a model that does not beat
       predicting Clean everywhere has learnt nothing its ranking could mean).

    Otherwise the label is NOT_SUPPORTED with every failed rule as a reason: "both below the
    all-Clean baseline" (or "A below ..." / "B below ... on k of n paired folds"; below = not above),
    "no all-Clean baseline recorded for A", "2 paired folds: too few", "interval includes 0".

    ``blocked``: reasons the two may not be compared at all (RQ4: a different training budget); the
    verdict is then NOT_SUPPORTED with those reasons, ``compared`` False and no difference computed.
    ``run_miou``: the runs' mIoU of A and B per paired fold, for rule 3, when the scores compared are
    not the mIoU (a class's IoU): the all-Clean rule is about the run, whatever score is compared.
    """
    if blocked:
        nothing = PairedDifference(0, math.nan, math.nan, math.nan, confidence)
        return Verdict(nothing, None, None, NOT_SUPPORTED, tuple(blocked), compared=False)
    difference = paired_difference(miou_a, miou_b, confidence)
    n = difference.n
    checked_a, checked_b = run_miou if run_miou is not None else (miou_a, miou_b)
    above_a, above_b = _folds_above(checked_a, clean_a), _folds_above(checked_b, clean_b)
    reasons = []
    if n:
        reasons += [f"no all-Clean baseline recorded for {side}"
                    for side, above in (("A", above_a), ("B", above_b)) if above is None]
        short = [(side, above) for side, above in (("A", above_a), ("B", above_b)) if above is not None and above < n]
        if len(short) == 2 and all(above == 0 for _, above in short):
            reasons.append("both below the all-Clean baseline")
        else:
            reasons += [f"{side} below the all-Clean baseline" + (f" on {n - above} of {n} paired folds" if above else "")
                        for side, above in short]
    if n < MIN_PAIRED_UNITS:
        reasons.append(f"{n} paired fold{'' if n == 1 else 's'}: too few")
    if difference.testable and not difference.excludes_zero:
        reasons.append("interval includes 0")
    label = NOT_SUPPORTED if reasons else (A_BETTER if difference.mean > 0 else B_BETTER)
    return Verdict(difference, above_a, above_b, label, tuple(reasons))


def _folds_above(miou: Sequence[float], clean: Sequence[float]) -> int | None:
    clean = np.asarray(clean, dtype=float)
    if np.isnan(clean).any():
        return None
    return int((np.asarray(miou, dtype=float) > clean).sum())


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedDifference:
    """Paired differences ``a[i] - b[i]``: mean and t interval ``mean +- t(n-1) * sd / sqrt(n)``.

    With one pair the interval is undefined (NaN); with identical differences it has zero width.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples must be two sequences of equal length, got {len(a)} and {len(b)}")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.isnan(diff).any():
        raise ValueError("paired samples hold NaN values")
    n = len(diff)
    if n == 0:
        return PairedDifference(0, math.nan, math.nan, math.nan, confidence)
    mean = float(diff.mean())
    if n < 2:
        return PairedDifference(n, mean, math.nan, math.nan, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * diff.std(ddof=1) / math.sqrt(n))
    return PairedDifference(n, mean, mean - half, mean + half, confidence)


def summarise(runs: pd.DataFrame, planned: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per setting (SETTING) over its folds: mIoU mean and sample std, means of the rest.

    Settings come from the plan when given (a planned setting without runs has ``n_runs == 0`` and
    NaN numbers), else from the runs. ``run_dirs``/``config_hashes`` list the runs behind each row.
    """
    keys = planned if planned is not None else runs
    settings = keys[SETTING].drop_duplicates().itertuples(index=False, name=None)
    rows = []
    for setting in settings:
        mine = runs[_matches(runs, setting)]
        plan_rows = keys[_matches(keys, setting)]
        row: dict[str, Any] = dict(zip(SETTING, setting))
        first = mine.iloc[0] if len(mine) else plan_rows.iloc[0]
        row.update({name: first.get(name) for name in ["family", *CONFIG_FIELDS]})
        row.update(
            n_runs=len(mine), n_planned=plan_rows["fold"].nunique(),
            miou_mean=mine["miou"].mean() if len(mine) else math.nan,
            miou_std=mine["miou"].std(ddof=1) if len(mine) > 1 else math.nan,
            wall_time_total_s=mine["wall_time_s"].sum(min_count=1) if len(mine) else math.nan,
            run_dirs=list(mine["run_dir"]), config_hashes=list(mine["config_hash"]),
        )
        row.update({f"{name}_mean": mine[name].mean() if len(mine) else math.nan for name in _MEANS})
        rows.append(row)
    return pd.DataFrame(rows)


def _matches(frame: pd.DataFrame, setting: Sequence[Any]) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for name, value in zip(SETTING, setting):
        mask &= frame[name] == value
    return mask


# -- labels ----------------------------------------------------------------------------------------


def poc_label(poc: str) -> str:
    """``poc59v2_flagship`` -> ``POC-5.9-v2``: the seeds' names for the POCs."""
    found = re.fullmatch(r"poc(\d)(\d+)(v\d+)?(?:_.*)?", poc)
    if not found:
        return poc
    major, minor, version = found.groups()
    return f"POC-{major}.{minor}" + (f"-{version}" if version else "")


def poc_title(poc: str) -> str:
    """The one-line title of a POC (``title`` in its config file)."""
    from heritage import config

    return config.load_poc(poc).get("title") or poc_label(poc)


def encoder_label(encoder: str) -> str:
    from heritage import models

    spec = models.ENCODERS.get(encoder)
    return spec.display_name if spec is not None else encoder


def setting_label(row: Any) -> str:
    from heritage import splits

    label = f"{poc_label(row['poc'])} {encoder_label(row['encoder'])}"
    label += f" [{row['variant']}]" if row["variant"] else ""
    return label + (" (leaky split)" if row.get("protocol") == splits.LEAKY else "")  # never unlabelled


# -- tables ----------------------------------------------------------------------------------------


@dataclass
class Table:
    """A paper table: raw numbers for CSV, formatted cells for Markdown/LaTeX, and its runs.

    ``data`` holds numbers as stored in ``metrics.json`` (mIoU as a fraction) or the markers
    "no run"/"absent"; ``display`` holds the formatted cells (mIoU in %); ``runs`` lists
    ``{"run_dir", "config_hash"}`` of every run behind a cell; ``notes`` are lines printed under it;
    ``banner`` is the provenance banner (:class:`Banner`); ``csv_units`` maps a ``data`` column to its
    CSV header and scale where CSV_UNITS does not already (the CSV shows the units of the display).
    """

    name: str
    caption: str
    data: pd.DataFrame
    display: pd.DataFrame
    runs: list[dict[str, str]]
    notes: list[str] = field(default_factory=list)
    banner: str = ""
    csv_units: dict[str, tuple[str, float]] = field(default_factory=dict)

    def to_markdown(self) -> str:
        lines = [f"**{self.caption}**", ""]
        lines += [f"> {self.banner}", ""] if self.banner else []
        lines += [self.display.to_markdown(index=False, disable_numparse=True), ""]
        lines += [*(f"{note}  " for note in self.notes), ""] if self.notes else []
        lines.append(f"Made from {_runs_sentence(self.runs)}." if self.runs else "No run behind this table yet.")
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        """A ``table`` float for ``\\input``: booktabs rules, numeric columns right-aligned, shrunk to the
        text width when wider, ASCII only (LaTeX commands for minus, ±, dashes)."""
        columns = list(self.display.columns)
        spec = "".join(_column_spec(self.display[c]) for c in columns)
        caption = _latex_text(self.caption) + (f". {_latex_text(self.banner)}" if self.banner else "")
        lines = [
            f"% {self.name}: needs \\usepackage{{booktabs}} and \\usepackage{{graphicx}} in the preamble;",
            f"% use it with \\input{{tables/{self.name}.tex}}. Made by heritage.report from run folders (provenance.json).",
            # local to the float: small type and narrow gaps keep wide tables from shrinking much
            r"\begin{table}[htbp]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
            f"\\caption{{{caption}}}",
            f"\\label{{tab:{self.name}}}",
        ]
        if columns:  # a tabular needs a column
            # \width is the tabular's natural width: scale down only when it exceeds the line
            lines += [
                r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
                f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
                " & ".join(_latex_text(str(c)) for c in columns) + r" \\", r"\midrule",
                *(" & ".join(_latex_text(str(v)) for v in row) + r" \\" for row in self.display.itertuples(index=False)),
                r"\bottomrule", r"\end{tabular}}",
            ]
        if self.notes:
            lines += [r"\par\smallskip\raggedright", *(_latex_text(note.removeprefix("- ")) + r"\par" for note in self.notes)]
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"

    def csv_frame(self) -> pd.DataFrame:
        """``data`` in the display's units: numbers scaled, headers naming the unit ("miou_mean (%)")."""
        frame = self.data.copy()
        renamed = {}
        for column in frame.columns:
            unit = self.csv_units.get(column) or CSV_UNITS.get(column)
            if unit is None:
                continue
            header, scale = unit
            frame[column] = [_scaled(v, scale) for v in frame[column]]
            renamed[column] = header
        return frame.rename(columns=renamed)

    def to_csv(self) -> str:
        """CSV text whose first line is ``# <banner>`` (read it with ``pandas.read_csv(path, comment="#")``)."""
        body = self.csv_frame().to_csv(index=False)
        return (f"# {self.banner}\n" if self.banner else "") + body

    def to_html(self) -> str:
        """An HTML fragment (for the index page): caption, banner, the display table, its notes."""
        import html

        parts = [f"<figure class='table' id='tab-{html.escape(self.name)}'>"
                 f"<figcaption><strong>{html.escape(self.caption)}</strong>"
                 + (f"<br><span class='banner'>{html.escape(self.banner)}</span>" if self.banner else "")
                 + "</figcaption>",
                 self.display.to_html(index=False, escape=True, border=0, classes="data", na_rep="")]
        if self.notes:
            parts.append("<ul class='notes'>" + "".join(f"<li>{html.escape(n.removeprefix('- '))}</li>"
                                                        for n in self.notes) + "</ul>")
        return "\n".join(parts) + "</figure>\n"


# data column -> (CSV header, factor from the metrics.json unit to the display's)
CSV_UNITS: dict[str, tuple[str, float]] = {
    **{name: (f"{name} (%)", 100.0) for name in (
        "miou", "miou_mean", "miou_std", "all_clean_miou", "all_clean_miou_mean", "binary_miou_mean",
        "coarse_miou_mean", "fine_miou_mean")},
    **{name: (f"{name} (img/s)", 1.0) for name in (
        "train_images_per_s_mean", "eval_images_per_s_mean", "train_images_per_s_min", "train_images_per_s_max")},
    **{name: (f"{name.replace('_s_', '_').removesuffix('_s')} (min)", 1 / 60) for name in (
        "wall_time_s_mean", "wall_time_total_s", "run_mean_s", "encoder_all_folds_mean_s", "total_s")},
    "peak_memory_mb_mean": ("peak_memory_mean (MB)", 1.0), "params_m_mean": ("params_mean (M)", 1.0),
    **{name: (f"{name} (mIoU points)", 100.0) for name in ("mean_diff", "ci_low", "ci_high")},
    **{f"artwork_{statistic}_{name}": (f"artwork_{statistic}_{name} (mIoU points)", 100.0)
       for statistic in ("dataset", "per_image") for name in ("diff", "ci_low", "ci_high")},
    "per_image_miou": ("per_image_miou (%)", 100.0), "per_image_miou_mean": ("per_image_miou_mean (%)", 100.0),
    **{name: (f"{name} (%)", 100.0) for name in (
        "seeds_reported_miou", "seeds_protocol_miou", "seeds_protocol_all_clean_miou", "ours_miou_mean",
        "ours_miou_std", "ours_all_clean_miou_mean", "ours_seeds_metric_miou_mean")},
    "inflation": ("inflation (mIoU points)", 100.0),
    "seeds_reported_v100_images_per_s": ("seeds_reported_v100 (img/s)", 1.0),
}


def _scaled(value: Any, scale: float) -> Any:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return value  # markers ("no run", "absent") stay as they are
    return float(value) * scale


_NUMERIC_CELL = re.compile(r"[\[(]?[+\-−]?\d[\d.,]*(?:\s*(?:±|–|/|,)\s*[+\-−]?\d[\d.,]*)?[\])]?(?: px)?")
_NON_NUMBERS = {NO_RUN, ABSENT, NOT_COMPARED, "n/a", "—", "not planned", ""}


def _column_spec(cells: pd.Series) -> str:
    """LaTeX column type: numbers right-aligned, long text (a verdict's reasons) wrapped, the rest left."""
    if _is_numeric_column(cells):
        return "r"
    return "p{12em}" if max((len(str(c)) for c in cells), default=0) > 32 else "l"


def _is_numeric_column(cells: pd.Series) -> bool:
    """Cells are numbers ("32.00 ± 2.00", "[+0.1, +0.3]", "2/3", "64 px") or markers, with one number at least."""
    texts = [str(c) for c in cells]
    numbers = [t for t in texts if t not in _NON_NUMBERS]
    return bool(numbers) and all(_NUMERIC_CELL.fullmatch(t) for t in numbers)


_LATEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
                "±": r"$\pm$", "−": "$-$", "–": "--", "—": "---", "×": r"$\times$", "≥": r"$\geq$",
                "≤": r"$\leq$", "…": r"\dots{}", "’": "'", "“": "``", "”": "''"}


def _latex_text(text: str) -> str:
    """Text as LaTeX for pdflatex: special characters escaped, a sign before a number as a math minus."""
    escaped = "".join(_LATEX_CHARS.get(ch, ch) for ch in text)
    escaped = re.sub(r"(?<![\w.])-(?=\d)", "$-$", escaped)  # "-0.96", "[-1.2," but not "POC-5.9" or "2026-12"
    bad = sorted({ch for ch in escaped if ord(ch) > 127})
    if bad:
        raise ValueError(f"no LaTeX spelling for {''.join(bad)!r} in {text!r}: add it to _LATEX_CHARS")
    return escaped


def _runs_sentence(runs: list[dict[str, str]]) -> str:
    listed = ", ".join(f"`{r['run_dir']}` ({r['config_hash']})" for r in runs)
    return f"{len(runs)} run(s): {listed}"


def _sources(frame: pd.DataFrame) -> list[dict[str, str]]:
    """Provenance entries of every run listed in a summary's ``run_dirs``/``config_hashes``."""
    pairs = {(d, h) for dirs, hashes in zip(frame["run_dirs"], frame["config_hashes"]) for d, h in zip(dirs, hashes)}
    return [{"run_dir": d, "config_hash": h} for d, h in sorted(pairs)]


def _percent(mean: float, std: float = math.nan) -> str:
    if math.isnan(mean):
        return NO_RUN
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if not math.isnan(std) else "")


def _fixed(value: float, digits: int = 1, scale: float = 1.0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * scale:.{digits}f}"


def _cells(row: pd.Series, columns: dict[str, Callable[[pd.Series], Any]]) -> dict[str, Any]:
    """Evaluate ``columns`` on a summary row; every cell of a setting without runs says "no run"."""
    if row["n_runs"] == 0:
        return {name: (fn(row) if name in _KEY_COLUMNS else NO_RUN) for name, fn in columns.items()}
    return {name: fn(row) for name, fn in columns.items()}


# Columns that identify a row and stay filled in when the row has no run behind it.
_KEY_COLUMNS = {"POC", "poc", "Encoder", "encoder", "Family", "family", "Protocol", "protocol",
                "Size", "image_size", "Variant", "variant", "Loss", "loss", "Class weights",
                "class_weights", "Folds", "n_runs", "n_planned"}


def encoder_table(summary: pd.DataFrame, poc: str) -> Table:
    """The seeds' per-POC table: each encoder's mIoU (mean ± std over folds), speed, time, memory."""
    rows = summary[(summary["poc"] == poc) & (summary["variant"] == "")]
    if rows.empty:
        raise ValueError(f"no planned or finished setting of POC {poc!r}")
    hierarchical = rows["fine_miou_mean"].notna().any()
    data_columns: dict[str, Callable[[pd.Series], Any]] = {
        "encoder": lambda r: r["encoder"], "family": lambda r: r["family"], "protocol": lambda r: r["protocol"],
        "image_size": lambda r: r["image_size"], "n_runs": lambda r: r["n_runs"], "n_planned": lambda r: r["n_planned"],
        "miou_mean": lambda r: r["miou_mean"], "miou_std": lambda r: r["miou_std"],
    }
    display_columns: dict[str, Callable[[pd.Series], Any]] = {
        "Encoder": lambda r: encoder_label(r["encoder"]), "Family": lambda r: r["family"],
        "Protocol": lambda r: r["protocol"], "Size": lambda r: f"{r['image_size']} px",
        "Folds": lambda r: f"{r['n_runs']}/{r['n_planned']}",
        "mIoU (%)": lambda r: _percent(r["miou_mean"], r["miou_std"]),
        "All-Clean mIoU (%)": lambda r: _fixed(r["all_clean_miou_mean"], 2, 100),
    }
    data_columns["all_clean_miou_mean"] = lambda r: r["all_clean_miou_mean"]
    if hierarchical:
        for level in ("binary", "coarse", "fine"):
            data_columns[f"{level}_miou_mean"] = lambda r, c=f"{level}_miou_mean": r[c]
            display_columns[f"{level.capitalize()} mIoU (%)"] = lambda r, c=f"{level}_miou_mean": _percent(r[c])
    for name, label, digits, scale in (
        ("train_images_per_s_mean", "Train img/s", 1, 1.0), ("eval_images_per_s_mean", "Eval img/s", 1, 1.0),
        ("wall_time_s_mean", "Time/fold (min)", 1, 1 / 60), ("peak_memory_mb_mean", "Peak memory (MB)", 0, 1.0),
        ("params_m_mean", "Params (M)", 1, 1.0),
    ):
        data_columns[name] = lambda r, c=name: r[c]
        display_columns[label] = lambda r, c=name, d=digits, s=scale: _fixed(r[c], d, s)
    return Table(
        name=f"encoders_{poc}",
        caption=(f"{poc_label(poc)}: test mIoU per encoder, mean ± sample std over folds, beside the mIoU of "
                 "predicting Clean everywhere on the same test pixels (the trivial baseline a model must beat); "
                 "throughput, wall time per fold and peak memory are means over folds"),
        data=pd.DataFrame([_cells(r, data_columns) for _, r in rows.iterrows()]),
        display=pd.DataFrame([_cells(r, display_columns) for _, r in rows.iterrows()]),
        runs=_sources(rows),
    )


def poc_table(summary: pd.DataFrame) -> Table:
    """POC by POC (main configurations): best encoder by mean mIoU, throughput range, time to results."""
    main = summary[summary["variant"] == ""]
    data_rows, display_rows = [], []
    for (poc, protocol), rows in main.groupby(["poc", "protocol"], sort=False):
        done = rows[rows["n_runs"] > 0]
        if done.empty:
            data_rows.append({"poc": poc, "protocol": protocol, **dict.fromkeys(
                ["highest_miou_encoder", "miou_mean", "miou_std", "all_clean_miou_mean", "train_images_per_s_min",
                 "train_images_per_s_max", "wall_time_total_s", "n_runs"], NO_RUN)})
            display_rows.append({"POC": poc_label(poc), "Protocol": protocol, **dict.fromkeys(
                ["Highest mean mIoU", "Its mIoU (%)", "All-Clean mIoU (%)", "Train img/s", "Time to results (min)",
                 "Runs"], NO_RUN)})
            continue
        best = done.loc[done["miou_mean"].idxmax()]
        data_rows.append({
            "poc": poc, "protocol": protocol, "highest_miou_encoder": best["encoder"], "miou_mean": best["miou_mean"],
            "miou_std": best["miou_std"], "all_clean_miou_mean": best["all_clean_miou_mean"],
            "train_images_per_s_min": done["train_images_per_s_mean"].min(),
            "train_images_per_s_max": done["train_images_per_s_mean"].max(),
            "wall_time_total_s": done["wall_time_total_s"].sum(), "n_runs": int(done["n_runs"].sum()),
        })
        display_rows.append({
            "POC": poc_label(poc), "Protocol": protocol, "Highest mean mIoU": encoder_label(best["encoder"]),
            "Its mIoU (%)": _percent(best["miou_mean"], best["miou_std"]),
            "All-Clean mIoU (%)": _fixed(best["all_clean_miou_mean"], 2, 100),
            "Train img/s": "–".join(_fixed(f(done["train_images_per_s_mean"])) for f in (np.min, np.max)),
            "Time to results (min)": _fixed(done["wall_time_total_s"].sum(), 1, 1 / 60),
            "Runs": f"{int(done['n_runs'].sum())}/{int(rows['n_planned'].sum())}",
        })
    return Table(
        name="poc_comparison",
        caption=("POC by POC (main configurations): the encoder with the highest mean test mIoU "
                 "(a description, not a tested claim: see the RQ tables) beside the mIoU of predicting Clean "
                 "everywhere on its test pixels, the range of training throughput over encoders, and the summed "
                 "wall time of all runs"),
        data=pd.DataFrame(data_rows), display=pd.DataFrame(display_rows), runs=_sources(main),
    )


def time_table(summary: pd.DataFrame) -> Table:
    """Time to results per POC: one run, one encoder over all folds, and every run of the POC."""
    data_rows, display_rows = [], []
    for poc, rows in summary.groupby("poc", sort=False):
        done = rows[rows["n_runs"] > 0]
        if done.empty:
            data_rows.append({"poc": poc, **dict.fromkeys(
                ["n_runs", "run_mean_s", "encoder_all_folds_mean_s", "total_s"], NO_RUN)})
            display_rows.append({"POC": poc_label(poc), **dict.fromkeys(
                ["Runs", "One run (min)", "One encoder, all folds (min)", "All runs (min)"], NO_RUN)})
            continue
        n_runs = int(done["n_runs"].sum())
        total = float(done["wall_time_total_s"].sum())
        per_setting = float(done["wall_time_total_s"].mean())
        data_rows.append({"poc": poc, "n_runs": n_runs, "run_mean_s": total / n_runs,
                          "encoder_all_folds_mean_s": per_setting, "total_s": total})
        display_rows.append({"POC": poc_label(poc), "Runs": f"{n_runs}/{int(rows['n_planned'].sum())}",
                             "One run (min)": _fixed(total / n_runs, 1, 1 / 60),
                             "One encoder, all folds (min)": _fixed(per_setting, 1, 1 / 60),
                             "All runs (min)": _fixed(total, 1, 1 / 60)})
    return Table(
        name="time_to_results",
        caption=("Time to results: mean wall time of one run, of one setting over all its folds, "
                 "and of every run of the POC (variants included), run one after the other"),
        data=pd.DataFrame(data_rows), display=pd.DataFrame(display_rows), runs=_sources(summary),
    )


def per_class_table(runs: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """Test IoU per class (rows) and main setting (columns), mean over the folds where it is present."""
    main = summary[summary["variant"] == ""]
    data = pd.DataFrame({"class": list(taxonomy.CLASS_NAMES)})
    display = pd.DataFrame({"Class": list(taxonomy.CLASS_NAMES)})
    for _, setting in main.iterrows():
        mine = runs[_matches(runs, [setting[k] for k in SETTING])]
        label = setting_label(setting)
        values = [_class_mean(mine, name) for name in taxonomy.CLASS_NAMES]
        data[label] = values
        display[label] = [v if isinstance(v, str) else f"{100 * v:.2f}" for v in values]
    return Table(
        name="per_class_iou",
        caption=("Test IoU (%) per class, mean over the folds in which the class occurs; "
                 f"'{ABSENT}': in no test fold of that setting is the class in the ground truth or the prediction"),
        data=data, display=display, runs=_sources(main),
        csv_units={label: (f"{label} IoU (%)", 100.0) for label in data.columns if label != "class"},
    )


def _class_mean(runs: pd.DataFrame, name: str) -> float | str:
    if runs.empty:
        return NO_RUN
    values = [per_class.get(name) for per_class in runs["per_class"]]
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else ABSENT


def loss_variants(summary: pd.DataFrame, poc: str = ABLATION_POC) -> list[str]:
    """Variants of ``poc`` that change only the loss or the class weights against the main configuration.

    Other variants (e.g. a resolution arm) answer other questions and stay out of the loss ablation.
    """
    rows = summary[summary["poc"] == poc]
    main = rows[rows["variant"] == ""].set_index("encoder")
    chosen = []
    for _, row in rows[rows["variant"] != ""].iterrows():
        if row["encoder"] in main.index and row["protocol"] == main.at[row["encoder"], "protocol"] and all(
                _same(row[f], main.at[row["encoder"], f]) for f in CONFIG_FIELDS if f not in ("loss", "class_weights")):
            chosen.append(row["variant"])
    return list(dict.fromkeys(chosen))


def main_variant_name(poc: str) -> str:
    """What an ablation calls the POC's main configuration (``main_variant`` in its config)."""
    from heritage import config

    return config.load_poc(poc).get("main_variant") or "main"


def ablation_table(summary: pd.DataFrame, poc: str = ABLATION_POC) -> Table:
    """The loss ablation: the main configuration and its loss variants x encoder, mIoU mean ± std over folds."""
    rows = summary[(summary["poc"] == poc) & summary["variant"].isin(["", *loss_variants(summary, poc)])]
    if rows.empty:
        raise ValueError(f"no planned or finished setting of POC {poc!r}")
    main_name = f"{main_variant_name(poc)} (main)"
    data = pd.DataFrame([_cells(r, {
        "variant": lambda r: r["variant"] or main_name, "loss": lambda r: r["loss"],
        "class_weights": lambda r: r["class_weights"] or "none", "encoder": lambda r: r["encoder"],
        "n_runs": lambda r: r["n_runs"], "miou_mean": lambda r: r["miou_mean"], "miou_std": lambda r: r["miou_std"],
    }) for _, r in rows.iterrows()])
    display = rows.assign(
        Variant=rows["variant"].replace("", main_name), Loss=rows["loss"],
        **{"Class weights": rows["class_weights"].fillna("none")},
        cell=[_percent(m, s) for m, s in zip(rows["miou_mean"], rows["miou_std"])],
        enc=[encoder_label(e) for e in rows["encoder"]],
    ).pivot_table(index=["Variant", "Loss", "Class weights"], columns="enc", values="cell",
                  aggfunc="first", sort=False, fill_value="not planned").reset_index()
    display.columns.name = None
    return Table(
        name=f"loss_ablation_{poc}",
        caption=(f"{poc_label(poc)} loss ablation: test mIoU (%) per variant and encoder, "
                 "mean ± sample std over folds"),
        data=data, display=display, runs=_sources(rows),
    )


# -- the seeds' protocol beside ours (issue 12) --------------------------------------------------------

# What the seeds published for POC-5.9-v2 (test = their validation part): mIoU and training img/s on a V100S.
# The only typed-in numbers of the paper, kept here and nowhere else.
SEEDS_REPORTED = {"convnext_tiny": (0.2563, 122.6), "mit_b3": (0.3763, 81.9), "maxvit_tiny": (0.3458, 65.1)}
SEEDS_REPORTED_SOURCE = ("the seeds' document 'POC Evolution: Complete Comparison (5.5 -> 5.8 -> 5.9 -> 5.9-v2)', "
                         "section 6, POC-5.9-v2 actual results (V100S, 384 px, 50 epochs, their 80/20 split)")
SEEDS_PROTOCOL_VARIANT = "seeds_protocol"  # the flagship's main configuration on the leaky split


def seeds_protocol_table(summary: pd.DataFrame, profile: str, poc: str = ABLATION_POC) -> Table:
    """Per flagship encoder: what the seeds reported, the same configuration here under their protocol
    (leaky split, their metric) and under ours (kfold, dataset-level mIoU at the working resolution, mean
    over folds), each beside its all-Clean baseline, and the difference: the inflation measured here.
    ``profile`` is the banner's (:attr:`Banner.profile`): a smoke comparison says it is not comparable."""
    rows = summary[summary["poc"] == poc]
    main = rows[rows["variant"] == ""].set_index("encoder")
    leaky = rows[rows["variant"] == SEEDS_PROTOCOL_VARIANT].set_index("encoder")
    data_rows, display_rows = [], []
    for encoder in main.index:
        ours = main.loc[encoder]
        reported_miou, reported_speed = SEEDS_REPORTED.get(encoder, (math.nan, math.nan))
        leaky_ran = encoder in leaky.index and leaky.at[encoder, "n_runs"] > 0
        leaky_miou = leaky.at[encoder, "seeds_miou_mean"] if leaky_ran else math.nan
        leaky_clean = leaky.at[encoder, "seeds_all_clean_miou_mean"] if leaky_ran else math.nan
        ran = ours["n_runs"] > 0
        data_rows.append({
            "encoder": encoder, "seeds_reported_miou": reported_miou,
            "seeds_reported_v100_images_per_s": reported_speed,
            "seeds_protocol_miou": leaky_miou if leaky_ran else NO_RUN,
            "seeds_protocol_all_clean_miou": leaky_clean if leaky_ran else NO_RUN,
            "ours_miou_mean": ours["miou_mean"] if ran else NO_RUN, "ours_miou_std": ours["miou_std"] if ran else NO_RUN,
            "ours_all_clean_miou_mean": ours["all_clean_miou_mean"] if ran else NO_RUN,
            "ours_seeds_metric_miou_mean": ours["seeds_miou_mean"] if ran else NO_RUN,
            "inflation": leaky_miou - ours["miou_mean"],
            "n_folds_ours": int(ours["n_runs"]),
        })
        display_rows.append({
            "Encoder": encoder_label(encoder),
            "Seeds reported mIoU (%)": _fixed(reported_miou, 2, 100),
            "Seeds reported img/s (V100)": _fixed(reported_speed),
            "Here, seeds' protocol (leaky): mIoU (%)": _fixed(leaky_miou, 2, 100) if leaky_ran else NO_RUN,
            "Seeds' protocol all-Clean (%)": _fixed(leaky_clean, 2, 100) if leaky_ran else NO_RUN,
            "Here, ours: mIoU (%)": _percent(ours["miou_mean"], ours["miou_std"]) if ran else NO_RUN,
            "Ours all-Clean (%)": _fixed(ours["all_clean_miou_mean"], 2, 100) if ran else NO_RUN,
            "Ours, seeds' metric (%)": _fixed(ours["seeds_miou_mean"], 2, 100) if ran else NO_RUN,
            "Inflation measured here (pts)": _fixed(leaky_miou - ours["miou_mean"], 2, 100),
        })
    caption = ("The seeds' protocol beside ours, per flagship encoder: what the seeds reported "
               f"({SEEDS_REPORTED_SOURCE}); the same configuration here under the seeds' protocol (the leaky "
               "split: a random 80/20 split over the augmented copies, the held-out part also used to pick the "
               "epoch; the seeds' metric: Background scored as Lightleak, absent classes 0 in a mean over all "
               "16, letterboxed at the training size; one run) and under ours (k-fold split grouped by artwork, "
               "dataset-level mIoU at the working resolution, mean ± std over folds), each beside the all-Clean "
               "baseline of its own metric; 'ours, seeds' metric' scores our runs' predictions the seeds' way; "
               "the inflation is seeds' protocol − ours, in mIoU points")
    if "smoke" in profile.split(", "):
        caption += ("; smoke profile: these runs are a pipeline check, not comparable to the seeds' full runs "
                    "on ARTeFACT")
    sources = rows[rows["variant"].isin(["", SEEDS_PROTOCOL_VARIANT])]
    return Table(name="seeds_protocol", caption=caption, data=pd.DataFrame(data_rows),
                 display=pd.DataFrame(display_rows), runs=_sources(sources))


# -- paired comparisons (the research questions) -----------------------------------------------------


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
            "95% CI": (f"[{_fixed(difference.ci_low, 2, 100)}, {_fixed(difference.ci_high, 2, 100)}]"
                       if difference.testable else "n/a"),
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
        notes.insert(0, f"No pair meets the verdict rules ({MIN_PAIRED_UNITS}+ paired folds, a 95% CI excluding 0, "
                        "both sides above their all-Clean baseline on every paired fold): no difference is claimed.")
    involved = summary.loc[sorted({i for pair in pairs for i in pair})] if pairs else summary.iloc[0:0]
    return Table(name=name, caption=caption, data=pd.DataFrame(data_rows, columns=[
        "a", "b", "factor_a", "factor_b", "n_pairs", "mean_diff", "ci_low", "ci_high", "a_folds_above_all_clean",
        "b_folds_above_all_clean", *_ARTWORK_DATA, "also_differs", "verdict", "reason", "statement"]),
        display=pd.DataFrame(display_rows, columns=_COMPARISON_COLUMNS), runs=_sources(involved), notes=notes)


# Display columns of a comparison table, also when no pair has runs (a header with no rows).
# The artwork bootstrap's display columns (heritage.resampling.STATISTICS keys), beside the fold-level interval.
_ARTWORK_COLUMNS = {"dataset_miou": "Artwork bootstrap, dataset-level A − B [95% CI]",
                    "per_image_miou": "Artwork bootstrap, per-image A − B [95% CI]"}
_COMPARISON_COLUMNS = ["A", "B", "Paired folds", "A − B (mIoU pts)", "95% CI", "Folds A, B above all-Clean",
                       *_ARTWORK_COLUMNS.values(), "Also differs", "Verdict"]
_ARTWORK_DATA = ["artwork_n_sources", "artwork_n_images", *(f"artwork_{statistic}_{name}" for statistic in (
    "dataset", "per_image") for name in ("diff", "ci_low", "ci_high")), "artwork_note"]


def _artwork_note() -> str:
    from heritage import resampling

    return (f"Artwork bootstrap: the test images of all paired folds, their source artworks resampled with "
            f"replacement ({resampling.RESAMPLES} draws, seed {resampling.SEED}, each artwork's images together), "
            "percentile 95% interval of A − B in dataset-level mIoU (pixels pooled over the drawn images) and in "
            "per-image mIoU (mean over the drawn images); shown beside the fold-level t interval, the verdict "
            "uses the folds only.")


def artwork_bootstrap(runs: pd.DataFrame, a: pd.Series, b: pd.Series) -> dict[str, Any] | str:
    """:func:`heritage.resampling.bootstrap_difference` of A and B over the test images of the folds both have
    run (every paired fold's ``per_image.csv``), or why there is none ("no paired fold", "no per_image.csv
    for 2 of 3 runs of A"). Beside the fold-level interval; the verdict (:func:`decide`) stays on folds."""
    from heritage import resampling

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


def _count(value: int | None) -> str:
    return "not recorded" if value is None else str(value)


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y or (x is None and y is None)


def rq1_pairs(summary: pd.DataFrame) -> list[tuple[int, int]]:
    """RQ1 (CNN vs ViT vs hybrid): encoders of different families within each POC's main setting."""
    done = summary[(summary["variant"] == "") & (summary["n_runs"] > 0)]
    rank = {family: i for i, family in enumerate(FAMILY_ORDER)}
    pairs = []
    for _, rows in done.groupby(["poc", "protocol"], sort=False):
        ordered = sorted(rows.index, key=lambda i: (rank.get(rows.at[i, "family"], len(rank)), i))
        pairs += [(i, j) for k, i in enumerate(ordered) for j in ordered[k + 1:]
                  if rows.at[i, "family"] != rows.at[j, "family"]]
    return pairs


def rq2_pairs(summary: pd.DataFrame) -> list[tuple[int, int]]:
    """RQ2 (multi-task or not): each hierarchical setting vs every single-task main setting, same encoder."""
    done = summary[(summary["variant"] == "") & (summary["n_runs"] > 0)]
    multi = done[done["architecture"] == "hierarchical_upernet"]
    single = done[done["architecture"] != "hierarchical_upernet"]
    return [(i, j) for i in multi.index for j in single.index
            if all(multi.at[i, key] == single.at[j, key] for key in ("encoder", "protocol"))]


def rq3_pairs(summary: pd.DataFrame) -> list[tuple[int, int]]:
    """RQ3 (resolution): same encoder and protocol at two image sizes (larger first), fewest confounders first."""
    done = summary[summary["n_runs"] > 0]
    pairs = [(i, j) for i in done.index for j in done.index
             if done.at[i, "encoder"] == done.at[j, "encoder"] and done.at[i, "protocol"] == done.at[j, "protocol"]
             and done.at[i, "image_size"] > done.at[j, "image_size"]]

    def confounders(pair: tuple[int, int]) -> int:
        a, b = done.loc[pair[0]], done.loc[pair[1]]
        return sum(not _same(a[f], b[f]) for f in CONFIG_FIELDS if f != "image_size")

    return sorted(pairs, key=lambda p: (confounders(p), p))


def ablation_pairs(summary: pd.DataFrame, poc: str = ABLATION_POC) -> list[tuple[int, int]]:
    """Each loss variant vs the POC's main configuration on the same encoder and protocol."""
    done = summary[(summary["poc"] == poc) & (summary["n_runs"] > 0)]
    main = done[done["variant"] == ""]
    variants = done[done["variant"].isin(loss_variants(summary, poc))]
    return [(i, j) for i in variants.index for j in main.index
            if done.at[i, "encoder"] == main.at[j, "encoder"] and done.at[i, "protocol"] == main.at[j, "protocol"]]


def rq4_pairs(summary: pd.DataFrame) -> list[tuple[int, int]]:
    """RQ4 (letterbox vs patch): each patch variant (A) vs its POC's main letterbox setting (B), same encoder
    and protocol (the flagship's ``patch`` arm against its main configuration)."""
    done = summary[summary["n_runs"] > 0]
    main = done[(done["variant"] == "") & (done["sampling"] == "letterbox")]
    patch = done[(done["variant"] != "") & (done["sampling"] == "patch")]
    return [(i, j) for i in patch.index for j in main.index
            if all(patch.at[i, key] == main.at[j, key] for key in ("poc", "encoder", "protocol"))]


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


def rq4_table(runs: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """RQ4's paired table (:func:`comparison_table`, :func:`decide`) with a budget column: a pair whose
    budgets differ (or are not recorded) is not compared."""
    pairs = rq4_pairs(summary)
    table = comparison_table(
        "rq4_sampling", "RQ4 - patch sampling at the working resolution (A) vs a letterbox (B) at the same "
        "training budget (image size, batch size, epochs, training samples: the same steps and training pixels), "
        "tested on the same pixels at the working resolution, paired over folds", runs, summary, pairs,
        ("sampling", "working_resolution"), blocked=lambda a, b: budget_problems(runs, a, b))
    budgets = [budget_text(runs, summary.loc[i], summary.loc[j]) for i, j in pairs]
    table.data.insert(len(table.data.columns) - 3, "budget", budgets)
    table.display.insert(len(table.display.columns) - 1, "Budget (both arms)", budgets)
    return table


THIN_MEAN = "Thin classes (mean)"  # the per-class table's row of the mean over taxonomy.THIN_CLASSES


def _class_scores(run: pd.Series, name: str) -> float | None:
    """A run's test IoU of class ``name``, or for THIN_MEAN the mean over the thin classes it holds."""
    if name != THIN_MEAN:
        return run["per_class"].get(name)
    present = [run["per_class"].get(c) for c in taxonomy.THIN_CLASSES if run["per_class"].get(c) is not None]
    return float(np.mean(present)) if present else None


def rq4_per_class_table(runs: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """RQ4 per class: test IoU of A (patch) and B (letterbox) per class, their paired difference over the folds
    whose test part holds the class (IoU recorded in both runs), and the verdict rules on it (the all-Clean
    rule on the runs' mIoU); thin classes marked, plus their mean. Pairs with different budgets: not compared."""
    data_rows, display_rows, sources = [], [], []
    for index_a, index_b in rq4_pairs(summary):
        a, b = summary.loc[index_a], summary.loc[index_b]
        problems = budget_problems(runs, a, b)
        paired = paired_runs(runs, a, b).index
        runs_a, runs_b = (runs[_matches(runs, [row[k] for k in SETTING])].set_index(["protocol", "fold"]).loc[paired]
                          for row in (a, b))
        sources += [{"run_dir": r, "config_hash": h} for frame in (runs_a, runs_b)
                    for r, h in zip(frame["run_dir"], frame["config_hash"])]
        for name in (*taxonomy.CLASS_NAMES, THIN_MEAN):
            scores = [(_class_scores(ra, name), _class_scores(rb, name), ra, rb)
                      for (_, ra), (_, rb) in zip(runs_a.iterrows(), runs_b.iterrows())]
            held = [s for s in scores if s[0] is not None and s[1] is not None]
            verdict = decide([s[0] for s in held], [s[1] for s in held], [s[2]["all_clean_miou"] for s in held],
                             [s[3]["all_clean_miou"] for s in held], blocked=problems,
                             run_miou=([s[2]["miou"] for s in held], [s[3]["miou"] for s in held]))
            difference = verdict.difference
            iou_a = float(np.mean([s[0] for s in held])) if held else ABSENT
            iou_b = float(np.mean([s[1] for s in held])) if held else ABSENT
            thin = name in taxonomy.THIN_CLASSES or name == THIN_MEAN
            data_rows.append({
                "encoder": a["encoder"], "protocol": a["protocol"], "class": name, "thin": thin,
                "n_pairs": len(held), "iou_letterbox": iou_b if verdict.compared else NOT_COMPARED,
                "iou_patch": iou_a if verdict.compared else NOT_COMPARED, "mean_diff": difference.mean,
                "ci_low": difference.ci_low, "ci_high": difference.ci_high, "verdict": verdict.label,
                "reason": "; ".join(verdict.reasons)})
            numbers = {
                "Letterbox IoU (%)": iou_b if isinstance(iou_b, str) else f"{100 * iou_b:.2f}",
                "Patch IoU (%)": iou_a if isinstance(iou_a, str) else f"{100 * iou_a:.2f}",
                "Patch − letterbox (IoU pts)": _fixed(difference.mean, 2, 100) if held else "n/a",
                "95% CI": (f"[{_fixed(difference.ci_low, 2, 100)}, {_fixed(difference.ci_high, 2, 100)}]"
                           if difference.testable else "n/a"),
                "Folds": len(held)}
            if not verdict.compared:
                numbers = dict.fromkeys(numbers, NOT_COMPARED)
            display_rows.append({"Encoder": encoder_label(a["encoder"]), "Class": name, "Thin": "thin" if thin else "",
                                 **numbers, "Verdict": verdict.cell})
    thin_names = ", ".join(taxonomy.THIN_CLASSES)
    notes = [] if data_rows else ["- No patch arm with runs beside its letterbox main configuration."]
    return Table(
        name="rq4_per_class",
        caption=("RQ4 per class - patch (A) vs letterbox (B) at the same training budget: test IoU (%) per class "
                 "at the working resolution (the same test pixels), mean over the paired folds whose test part "
                 "holds the class, the paired difference A − B with its 95% t interval and the verdict rules "
                 f"(both runs above their all-Clean mIoU on every paired fold); thin classes ({thin_names}) marked, "
                 f"'{THIN_MEAN}' their mean per fold"),
        data=pd.DataFrame(data_rows, columns=[
            "encoder", "protocol", "class", "thin", "n_pairs", "iou_letterbox", "iou_patch", "mean_diff", "ci_low", "ci_high",
            "verdict", "reason"]),
        display=pd.DataFrame(display_rows, columns=[
            "Encoder", "Class", "Thin", "Letterbox IoU (%)", "Patch IoU (%)", "Patch − letterbox (IoU pts)", "95% CI",
            "Folds", "Verdict"]),
        runs=sorted({(r["run_dir"], r["config_hash"]): r for r in sources}.values(), key=lambda r: r["run_dir"]),
        notes=notes,
        csv_units={"iou_letterbox": ("iou_letterbox (%)", 100.0), "iou_patch": ("iou_patch (%)", 100.0),
                   **{name: (f"{name} (IoU points)", 100.0) for name in ("mean_diff", "ci_low", "ci_high")}},
    )


# -- figures ---------------------------------------------------------------------------------------


def per_class_heatmap(table: Table) -> Figure:
    """Heat map of a :func:`per_class_table` (IoU in %); "no run"/"absent" cells are blank and labelled."""
    import seaborn as sns

    values = table.data.set_index("class")
    numeric = values.apply(lambda column: pd.to_numeric(column, errors="coerce")) * 100
    labels = values.map(lambda v: v if isinstance(v, str) else f"{100 * v:.1f}")
    fig = Figure(figsize=(2.0 + 1.1 * max(1, numeric.shape[1]), 7.0), layout="constrained")
    ax = fig.add_subplot()
    sns.heatmap(numeric, ax=ax, annot=labels.to_numpy(), fmt="", vmin=0, vmax=100, cmap="viridis",
                cbar_kws={"label": "test IoU (%)"}, linewidths=0.5, linecolor="white",
                annot_kws={"fontsize": "x-small"})
    ax.set_facecolor("#eeeeee")
    for (y, x), text in np.ndenumerate(labels.to_numpy()):
        if math.isnan(numeric.iat[y, x]):  # seaborn leaves NaN cells blank: say why they are empty
            ax.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize="x-small", color="dimgrey")
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title("Per-class test IoU (mean over folds)")
    ax.tick_params(axis="x", labelrotation=45)
    return fig


def rq4_per_class_plot(table: Table) -> Figure:
    """The paired differences patch − letterbox of an :func:`rq4_per_class_table`, per class with their 95%
    intervals (one panel per encoder); thin classes in red; classes without a difference are labelled why."""
    data = table.data
    groups = list(data.groupby(["encoder", "protocol"], sort=False)) if len(data) else []
    fig = Figure(figsize=(7.0 * max(1, len(groups)), 6.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(groups)), squeeze=False)[0])
    if not groups:
        axes[0].text(0.5, 0.5, "no pair: no patch arm with runs beside its letterbox configuration",
                     transform=axes[0].transAxes, ha="center", va="center")
        axes[0].set_axis_off()
    for ax, ((encoder, protocol), rows) in zip(axes, groups):
        positions = np.arange(len(rows))
        for y, (_, row) in zip(positions, rows.iterrows()):
            colour = "tab:red" if row["thin"] else "tab:blue"
            if row["iou_patch"] == NOT_COMPARED or row["n_pairs"] == 0:
                why = NOT_COMPARED if row["iou_patch"] == NOT_COMPARED else ABSENT
                ax.text(0, y, f" {why}", va="center", fontsize="x-small", color="dimgrey")
                continue
            low, high = row["ci_low"], row["ci_high"]
            error = None if math.isnan(low) else [[100 * (row["mean_diff"] - low)], [100 * (high - row["mean_diff"])]]
            ax.errorbar(100 * row["mean_diff"], y, xerr=error, marker="o", color=colour, capsize=3, linestyle="none")
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_yticks(positions, list(rows["class"]))
        for label, thin in zip(ax.get_yticklabels(), rows["thin"]):
            label.set_color("tab:red" if thin else "black")
        ax.invert_yaxis()
        ax.set_xlabel("patch − letterbox test IoU (points; 95% CI over paired folds)")
        ax.set_title(f"RQ4: {encoder_label(encoder)}, {protocol} (red: thin classes)")
    return fig


def miou_throughput_plot(summary: pd.DataFrame) -> Figure:
    """Test mIoU (mean ± std over folds) against training throughput, one point per setting with runs."""
    done = summary[(summary["n_runs"] > 0) & summary["train_images_per_s_mean"].notna()]
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    markers = dict(zip(FAMILY_ORDER, "osD"))
    colours = {poc: f"C{i}" for i, poc in enumerate(dict.fromkeys(summary["poc"]))}
    for _, row in done.iterrows():
        ax.errorbar(row["train_images_per_s_mean"], 100 * row["miou_mean"],
                    yerr=0 if math.isnan(row["miou_std"]) else 100 * row["miou_std"],
                    marker=markers.get(row["family"], "^"), color=colours[row["poc"]], capsize=3,
                    linestyle="none", markersize=7)
        ax.annotate(encoder_label(row["encoder"]) + (f" [{row['variant']}]" if row["variant"] else ""),
                    (row["train_images_per_s_mean"], 100 * row["miou_mean"]), textcoords="offset points",
                    xytext=(5, 4), fontsize="x-small")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", linestyle="none", label=poc_label(p)) for p, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=m, linestyle="none", label=f) for f, m in markers.items()]
    ax.legend(handles=handles, fontsize="small", loc="best")
    speeds = done["train_images_per_s_mean"]
    # log only over a decade or more: within one, log ticks are minor ticks whose labels overlap
    wide = len(speeds) > 1 and speeds.max() >= 10 * speeds.min()
    if wide:
        ax.set_xscale("log")
    ax.set_xlabel("training throughput (images/s" + (", log scale)" if wide else ")"))
    ax.set_ylabel("test mIoU (%)")
    ax.set_title("mIoU vs throughput (error bars: std over folds)")
    if done.empty:
        ax.text(0.5, 0.5, NO_RUN, transform=ax.transAxes, ha="center", va="center")
    return fig


def per_image_images(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Every test image of every setting with runs (all folds): ``setting`` (its label), ``id``, ``source_id``,
    ``miou`` (the image's mIoU, per_image.csv), ``run_dir``. Runs without a per_image.csv are left out."""
    frames = []
    for _, row in summary[summary["n_runs"] > 0].iterrows():
        mine = runs[_matches(runs, [row[k] for k in SETTING])]
        for run_dir, table in zip(mine["run_dir"], mine["per_image"] if "per_image" in mine else []):
            if isinstance(table, pd.DataFrame):
                frames.append(table[["id", "source_id", "miou"]].assign(setting=setting_label(row), run_dir=run_dir))
    columns = ["setting", "id", "source_id", "miou", "run_dir"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


PER_IMAGE_CAPTION = ("Per-image test mIoU per setting, all folds: one point per test image (its mIoU over the classes "
                     "in its ground truth or prediction), box: quartiles and median; the diamond is the setting's "
                     "dataset-level mIoU (the headline: pixels pooled over the images of each fold, mean over folds)")


def per_image_plot(runs: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """:data:`PER_IMAGE_CAPTION`: seaborn box plot (no outlier markers: every image is a point) and strip plot."""
    import seaborn as sns

    images = per_image_images(runs, summary).dropna(subset=["miou"])
    order = list(dict.fromkeys(images["setting"]))
    fig = Figure(figsize=(8.0, 1.2 + 0.45 * max(1, len(order))), layout="constrained")
    ax = fig.add_subplot()
    if images.empty:
        ax.text(0.5, 0.5, "no run with per-image scores (per_image.csv)", transform=ax.transAxes,
                ha="center", va="center")
        ax.set_axis_off()
        return fig
    shown = images.assign(miou=100 * images["miou"])
    sns.boxplot(data=shown, x="miou", y="setting", order=order, ax=ax, color="0.9", showfliers=False, width=0.6)
    sns.stripplot(data=shown, x="miou", y="setting", order=order, ax=ax, size=3, alpha=0.6, jitter=0.2,
                  color="tab:blue")
    headline = {setting_label(row): 100 * row["miou_mean"] for _, row in summary[summary["n_runs"] > 0].iterrows()}
    ax.scatter([headline[label] for label in order], range(len(order)), marker="D", color="tab:red", zorder=5,
               label="dataset-level mIoU (mean over folds)")
    ax.set_xlabel("per-image test mIoU (%)")
    ax.set_ylabel("")
    ax.legend(fontsize="small", loc="lower right")
    ax.set_title(f"Per-image mIoU: {len(images)} image scores of {len(order)} settings")
    return fig


def add_footer(fig: Figure, text: str) -> None:
    """A text line under the figure (wrapped to its width); saved figures grow to hold it."""
    import textwrap

    width = max(40, int(fig.get_figwidth() * 19))  # ~19 x-small characters per inch
    # whole words only: a break after "all-" would come back as "all- Clean" from footer_text
    fig.text(0.0, 0.0, textwrap.fill(text, width, break_on_hyphens=False), ha="left", va="top", fontsize="x-small",
             color="dimgrey", gid="provenance-footer")


def footer_text(fig: Figure) -> str | None:
    """The footer :func:`add_footer` wrote, unwrapped; None when there is none."""
    found = [t.get_text() for t in fig.texts if t.get_gid() == "provenance-footer"]
    return " ".join(found[-1].split()) if found else None


def save_figure(fig: Figure, path_without_suffix: str | Path, footer: str | None = None) -> list[Path]:
    """Write ``fig`` as PNG and PDF next to each other (atomically); return both paths.

    With ``footer`` the figure gets that text line (:func:`add_footer`) once, before saving.
    """
    if footer is not None and footer_text(fig) != " ".join(footer.split()):
        add_footer(fig, footer)
    written = []
    for suffix in (".png", ".pdf"):
        path = Path(path_without_suffix).with_suffix(suffix)
        with fileio.atomic_path(path) as tmp:
            # a tight box holds the footer drawn below the axes area
            fig.savefig(tmp, format=suffix[1:], dpi=150, **({"bbox_inches": "tight"} if footer else {}))
        written.append(path)
    return written


# -- the provenance banner ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Banner:
    """What every table and figure says about where its numbers come from."""

    profile: str  # the runs' profile(s), e.g. "smoke"
    data: str  # SYNTHETIC, ARTEFACT, or "unknown"
    data_fingerprint: str | None  # sha256 of the data folder's metadata.csv
    weights: str  # "trained from scratch", "ImageNet-pretrained", ...
    epochs: str  # "3" or "3-50"
    n_runs: int
    n_above_all_clean: int  # runs whose test mIoU is above their all-Clean mIoU
    n_with_all_clean: int  # runs that recorded an all-Clean mIoU

    @property
    def text(self) -> str:
        data = self.data + (f" (metadata.csv sha256 {self.data_fingerprint[:12]})" if self.data_fingerprint else "")
        if self.n_runs == 0:
            baseline = "no finished run"
        else:
            baseline = f"{self.n_above_all_clean} of {self.n_with_all_clean} runs beat their all-Clean baseline"
            if self.n_with_all_clean < self.n_runs:
                baseline += f" ({self.n_runs - self.n_with_all_clean} recorded none)"
        text = f"Provenance: {self.profile} profile; data: {data}; {self.weights}; {self.epochs} epochs; {baseline}."
        if "smoke" in self.profile.split(", "):
            text += " Smoke profile: a pipeline check, not a measurement of the models."
        if self.data == SYNTHETIC:
            text += " Synthetic stand-in: these numbers say nothing about real artworks."
        return text

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "text": self.text}


def data_kind(data_dir: str | Path) -> str:
    """SYNTHETIC when every original sample id is a stand-in id, ARTEFACT when none is."""
    from heritage import ingest

    metadata = ingest.read_metadata(data_dir)
    synthetic = metadata.loc[metadata["transform"] == ingest.IDENTITY, "id"].str.startswith(SYNTHETIC_ID_PREFIX)
    return SYNTHETIC if synthetic.all() else ARTEFACT if not synthetic.any() else f"mixed ({SYNTHETIC} and other)"


def make_banner(runs: pd.DataFrame, planned: pd.DataFrame | None = None, data_dir: str | Path | None = None,
                profile: str | None = None) -> Banner:
    """The banner of a comparison: from the runs, or from the plan (and ``profile``) before any run."""
    from heritage import ingest

    source = runs if len(runs) or planned is None else planned
    profiles = sorted({str(p) for p in runs["profile"].dropna()}) if len(runs) else []
    epochs = sorted({int(e) for e in source["epochs"].dropna()}) if "epochs" in source else []
    pretrained = list(source["pretrained"]) if "pretrained" in source else [None] * len(source)
    known = [bool(v) for v in pretrained if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not pretrained or len(known) < len(pretrained):
        weights = f"pretrained or from scratch: not recorded for {len(pretrained) - len(known)} of {len(pretrained)} runs"
    elif not any(known):
        weights = "trained from scratch"
    elif all(known):
        weights = "ImageNet-pretrained encoders"
    else:
        weights = f"{sum(known)} of {len(known)} runs ImageNet-pretrained, the rest trained from scratch"
    has_baseline = runs["all_clean_miou"].notna()
    return Banner(
        profile=", ".join(profiles) or profile or "unknown",
        data=data_kind(data_dir) if data_dir is not None else "unknown",
        data_fingerprint=ingest.metadata_fingerprint(data_dir) if data_dir is not None else None,
        weights=weights,
        epochs="unknown" if not epochs else str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}",
        n_runs=len(runs), n_with_all_clean=int(has_baseline.sum()),
        n_above_all_clean=int((runs["miou"][has_baseline] > runs["all_clean_miou"][has_baseline]).sum()),
    )


def run_banner(run_dir: str | Path) -> Banner:
    """The banner of one finished run (``metrics.json``; data from its config's ``data_dir`` when present)."""
    import yaml

    run_dir = Path(run_dir)
    row = _run_row(load_metrics(run_dir / METRICS_FILE), run_dir.name)
    row["pretrained"] = _pretrained(run_dir, row["pretrained"])
    config_path = run_dir / "config.yaml"
    config = (yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}) if config_path.is_file() else {}
    data_dir = config.get("data_dir")
    known = data_dir is not None and (Path(data_dir) / "metadata.csv").is_file()
    banner = make_banner(pd.DataFrame([row], columns=RUN_COLUMNS), data_dir=data_dir if known else None)
    if not known and (config.get("data_fingerprint") or {}).get("metadata"):
        banner = dataclasses.replace(banner, data_fingerprint=config["data_fingerprint"]["metadata"])
    return banner


def banner_html(paper_dir: str | Path) -> str:
    """The banner of ``paper_dir/provenance.json`` as an HTML paragraph for the index page ("" without one)."""
    import html

    path = Path(paper_dir) / "provenance.json"
    if not path.is_file():
        return ""
    banner = fileio.read_json(path).get("banner")
    if not banner:
        return ("<p class='banner'><strong>provenance.json has no provenance banner: run the comparison "
                "(99_comparison) again.</strong></p>")
    return f"<p class='banner'><strong>{html.escape(banner['text'])}</strong></p>"


# -- the comparison --------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Everything ``99_comparison`` shows and writes, built from the runs (and the plan)."""

    runs: pd.DataFrame
    ignored: pd.DataFrame
    summary: pd.DataFrame
    tables: list[Table]
    figures: dict[str, tuple[Figure, list[dict[str, str]], str]]  # name -> (figure, runs, caption)
    banner: Banner

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"no table {name!r}; tables: {', '.join(t.name for t in self.tables)}")

    def figure(self, name: str) -> Figure:
        return self.figures[name][0]


def build_comparison(runs_root: str | Path, planned: pd.DataFrame | None = None,
                     data_dir: str | Path | None = None, profile: str | None = None) -> Comparison:
    """Read every run under ``runs_root``, keep those of the plan, and build all tables and figures.

    ``data_dir`` (the data folder of the plan) and ``profile`` go into the provenance banner.
    """
    runs, ignored = select_runs(load_runs(runs_root), planned)
    summary = summarise(runs, planned)
    if summary.empty:
        raise errors.InputError(f"{runs_root}: no finished run (no metrics.json) and no plan to report on")
    banner = make_banner(runs, planned, data_dir, profile)
    tables = [encoder_table(summary, poc) for poc in dict.fromkeys(summary["poc"])
              if (summary[(summary["poc"] == poc)]["variant"] == "").any()]
    tables += [poc_table(summary), time_table(summary)]
    per_class = per_class_table(runs, summary)
    tables.append(per_class)
    if (summary["poc"] == ABLATION_POC).any():
        tables.append(ablation_table(summary))
        tables.append(comparison_table(
            "ablation_paired", f"{poc_label(ABLATION_POC)} loss ablation: each variant (A) vs the main "
            "configuration (B), paired over folds", runs, summary, ablation_pairs(summary),
            ("variant", "loss", "class_weights")))
    if (summary["poc"] == ABLATION_POC).any():
        tables.append(seeds_protocol_table(summary, banner.profile))
    tables += [
        comparison_table("rq1_family", "RQ1 - CNN vs ViT vs hybrid: encoders of different families "
                         "in the same POC, paired over folds", runs, summary, rq1_pairs(summary), ("family",)),
        comparison_table("rq2_multitask", "RQ2 - multi-task (hierarchical UPerNet, A) vs single-task "
                         "(UNet, B) on the same encoder, paired over folds", runs, summary, rq2_pairs(summary),
                         ("architecture", "loss")),
        comparison_table("rq3_resolution", "RQ3 - resolution: the same encoder at a larger (A) and a "
                         "smaller (B) image size, paired over folds", runs, summary, rq3_pairs(summary),
                         ("image_size",)),
        rq4_table(runs, summary),
    ]
    rq4_per_class = rq4_per_class_table(runs, summary)
    tables.append(rq4_per_class)
    figures = {
        "per_class_iou_heatmap": (per_class_heatmap(per_class), per_class.runs, per_class.caption),
        "miou_vs_throughput": (miou_throughput_plot(summary), _sources(summary),
                               "Test mIoU (mean ± std over folds) against training throughput per setting"),
        "per_image_miou": (per_image_plot(runs, summary), _sources(summary[summary["n_runs"] > 0]), PER_IMAGE_CAPTION),
        "rq4_per_class_differences": (rq4_per_class_plot(rq4_per_class), rq4_per_class.runs,
                                      "RQ4 per class: patch − letterbox test IoU at the same training budget, mean "
                                      "over paired folds with its 95% t interval (thin classes in red)"),
    }
    for table in tables:
        table.banner = banner.text
    for fig, _, _ in figures.values():
        add_footer(fig, banner.text)
    return Comparison(runs=runs, ignored=ignored, summary=summary, tables=tables, figures=figures, banner=banner)


# The research questions, in the order a reader meets them, by the name of their paired table.
QUESTIONS = {
    "rq1_family": "RQ1: does the encoder family (CNN, ViT, hybrid) change the test mIoU?",
    "rq2_multitask": "RQ2: does the multi-task hierarchical model change the test mIoU?",
    "rq3_resolution": "RQ3: does the image size change the test mIoU?",
    "rq4_sampling": ("RQ4: at the same training budget, does training on patches of the working resolution "
                     "instead of letterboxes change the test mIoU?"),
    "ablation_paired": f"Loss ablation ({poc_label(ABLATION_POC)}): does a loss variant change the test mIoU?",
}


def findings(tables: Sequence[Table]) -> list[dict[str, Any]]:
    """Each research question's verdict from its paired table (:func:`decide`'s verdicts, nothing else).

    ``verdict`` is "supported" (at least one pair meets the rules), "not supported" or "no pair";
    ``reason`` is one sentence: the supported statements, or why nothing is claimed (each reason with
    the number of pairs it holds for).
    """
    from collections import Counter

    by_name = {table.name: table for table in tables}
    result = []
    for name, question in QUESTIONS.items():
        if name not in by_name:
            continue
        data = by_name[name].data
        supported = data[data["verdict"] != NOT_SUPPORTED]
        if data.empty:
            verdict, reason = "no pair", "No pair of settings with runs answers it; nothing is claimed."
        elif len(supported):
            verdict = "supported"
            reason = (f"{len(supported)} of {len(data)} pairs meet the verdict rules: "
                      + "; ".join(supported["statement"]) + ".")
        else:
            counts = Counter(r for reasons in data["reason"] for r in reasons.split("; ") if r)
            verdict = NOT_SUPPORTED
            reason = (f"None of the {len(data)} pair{'' if len(data) == 1 else 's'} meets the verdict rules, "
                      "so no difference is claimed. Reasons: "
                      + "; ".join(f"{r} (in {n} of {len(data)})" for r, n in counts.most_common()) + ".")
        result.append({"table": name, "question": question, "verdict": verdict, "reason": reason,
                       "n_pairs": len(data), "n_supported": len(supported),
                       "statements": list(supported["statement"])})
    return result


def write_comparison(comparison: Comparison, paper_dir: str | Path, runs_root: str | Path) -> dict[str, Any]:
    """Write ``tables/*.{md,tex,csv,html}``, ``figures/*.{png,pdf}`` and ``provenance.json`` under ``paper_dir``.

    Returns the provenance record: the banner, each written file (relative to ``paper_dir``) ->
    caption and the run folders (relative to ``runs_root``) with their config hashes, and the
    research questions' :func:`findings`. Every table
    and figure carries the comparison's banner (tables in their caption, figures as a footer).
    """
    paper_dir = Path(paper_dir)
    banner = comparison.banner.text
    artefacts: dict[str, Any] = {}
    for table in comparison.tables:
        table.banner = banner
        stem = paper_dir / "tables" / table.name
        fileio.write_text(stem.with_suffix(".md"), table.to_markdown())
        fileio.write_text(stem.with_suffix(".tex"), table.to_latex())
        fileio.write_text(stem.with_suffix(".csv"), table.to_csv())
        fileio.write_text(stem.with_suffix(".html"), table.to_html())
        for suffix in (".md", ".tex", ".csv", ".html"):
            artefacts[f"tables/{table.name}{suffix}"] = {"caption": table.caption, "runs": table.runs}
    for name, (fig, runs, caption) in comparison.figures.items():
        for path in save_figure(fig, paper_dir / "figures" / name, footer=banner):
            artefacts[path.relative_to(paper_dir).as_posix()] = {"caption": caption, "runs": runs}
    provenance = {
        "banner": comparison.banner.to_json(),
        "runs_root": str(Path(runs_root).resolve()),
        "artefacts": artefacts,
        "findings": findings(comparison.tables),
        "ignored_runs": [{"run_dir": r.run_dir, "config_hash": r.config_hash, "reason": r.reason}
                         for r in comparison.ignored.itertuples()],
    }
    fileio.write_json(paper_dir / "provenance.json", provenance)
    return provenance


# -- one run (the POC notebooks) --------------------------------------------------------------------


def config_table(config: RunConfig) -> pd.DataFrame:
    """The resolved configuration as a two-column table, with its hash and run folder first."""
    from heritage import config as config_module

    rows = [("run folder", str(config_module.run_dir(config))), ("config hash", config.config_hash())]
    rows += [(name, repr(value) if isinstance(value, (dict, type(None))) else str(value))
             for name, value in config.to_dict().items()]
    return pd.DataFrame(rows, columns=["setting", "value"])


def config_details_html(config: RunConfig) -> str:
    """:func:`config_table` folded into an HTML ``<details>`` element (the end of a run report)."""
    import html

    return (f"<details><summary>Configuration: run folder, config hash {html.escape(config.config_hash())} and "
            f"every setting ({len(config.to_dict())})</summary>"
            + config_table(config).to_html(index=False, escape=True, border=0) + "</details>")


def run_headline(metrics: dict[str, Any]) -> str:
    """One Markdown line: the (dataset-level) test mIoU beside the all-Clean baseline, which side of it the run
    is, and the per-image mIoU after it when the run recorded one; each labelled."""
    test = metrics["test"]
    miou, clean = _number(test["miou"]), _number(test.get("all_clean_miou"))
    per_image = _number(test.get("per_image_miou"))
    line = f"**Test mIoU {100 * miou:.2f}%** (dataset-level)"
    if math.isnan(clean):
        line += " (this run recorded no all-Clean baseline)."
    else:
        side = "above" if miou > clean else "not above"
        line += (f" against **{100 * clean:.2f}%** for predicting Clean everywhere on the same test pixels: "
                 f"{side} that trivial baseline.")
    if not math.isnan(per_image):
        line += f" Per-image mIoU {100 * per_image:.2f}% (the mean over the test images of each image's mIoU)."
    seeds = test.get("seeds_convention")
    if seeds:
        line += (f" Under the seeds' metric (Background scored as Lightleak, absent classes 0 over 16): "
                 f"{100 * seeds['miou']:.2f}% (all-Clean {100 * seeds['all_clean_miou']:.2f}%).")
    from heritage import splits

    if metrics.get("protocol") == splits.LEAKY:
        line += (" **Leaky split (the seeds' protocol): augmented copies of the test images were trained on and "
                 "the test part also picked the epoch, so this number is inflated by design.**")
    return line


def per_class_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """Test IoU, precision, recall and F1 (%) and support (pixels) per class; ABSENT where the class is
    in neither ground truth nor prediction."""
    per_class = metrics["test"]["per_class"]
    rows = []
    for name in taxonomy.CLASS_NAMES:
        entry = per_class.get(name) or {}
        present = entry.get("iou") is not None
        rows.append({"class": name, **{f"{k} (%)": _fixed(_number(entry.get(k)), 2, 100) if present else ABSENT
                                       for k in ("iou", "precision", "recall", "f1")},
                     "support (px)": entry.get("support", 0)})
    return pd.DataFrame(rows)


def read_history(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: file not found (the run has not finished an epoch)")
    history = pd.read_csv(path)
    missing = [c for c in ("epoch", "train_loss", "lr") if c not in history.columns]
    if missing:
        raise errors.InputError(f"{path}: lacks column(s) {', '.join(missing)}")
    return history


def plot_history(history: pd.DataFrame) -> Figure:
    """Training loss, validation mIoU (every level of a hierarchical model), learning rate, images/s."""
    fig = Figure(figsize=(12.0, 3.2), layout="constrained")
    loss_ax, miou_ax, lr_ax, speed_ax = fig.subplots(1, 4)
    loss_ax.plot(history["epoch"], history["train_loss"], marker=".")
    loss_ax.set_title("training loss")
    levels = [c for c in history.columns if c.startswith("val_") and c.endswith("miou")]
    for column in levels:
        rows = history[history[column].notna()]
        # val_miou is the fine level; the hierarchical model adds val_binary_miou and val_coarse_miou
        label = column.removeprefix("val_").removesuffix("_miou") if column != "val_miou" else "fine"
        miou_ax.plot(rows["epoch"], 100 * rows[column], marker=".", label=label)
    miou_ax.set_title("validation mIoU (%)")
    if len(levels) > 1:
        miou_ax.legend(fontsize="small")
    lr_ax.plot(history["epoch"], history["lr"], marker=".")
    lr_ax.set_title("learning rate (end of epoch)")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if "images_per_s" in history.columns:
        speed_ax.plot(history["epoch"], history["images_per_s"], marker=".")
    speed_ax.set_title("training images/s")
    for ax in (loss_ax, miou_ax, lr_ax, speed_ax):
        ax.set_xlabel("epoch")
    return fig


def results_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Headline numbers of one run: test mIoU (and hierarchy levels), accuracy, speed, memory, time."""
    test = metrics["test"]
    throughput = metrics.get("throughput") or {}
    rows = [("test mIoU (%)", _fixed(_number(test["miou"]), 2, 100)),
            ("test mIoU of predicting Clean everywhere (%)", _fixed(_number(test.get("all_clean_miou")), 2, 100)),
            ("test pixel accuracy (%)", _fixed(_number(test.get("pixel_accuracy")), 2, 100))]
    rows += [(f"test {level} mIoU (%)", _fixed(_number(value), 2, 100))
             for level, value in ((k.removesuffix("_miou"), v) for k, v in (metrics.get("hierarchical") or {}).items())]
    rows += [
        ("validation mIoU at the best epoch (%)", _fixed(_number((metrics.get("val") or {}).get("miou")), 2, 100)),
        ("best epoch", f"{metrics.get('best_epoch')} of {metrics.get('epochs')}"),
        ("test images", str(test.get("n_images"))),
        ("training throughput (images/s)", _fixed(_number(throughput.get("train_images_per_s")))),
        ("evaluation throughput (images/s)", _fixed(_number(throughput.get("eval_images_per_s")))),
        ("peak accelerator memory (MB)", _fixed(_number(metrics.get("peak_memory_mb")), 0)),
        ("training wall time (min)", _fixed(_number(metrics.get("wall_time_s")), 2, 1 / 60)),
        ("parameters (M)", _fixed(_number(metrics.get("params_m")), 2)),
        ("device", str(metrics.get("device"))),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value"])


def plot_per_class_iou(metrics: dict[str, Any]) -> Figure:
    """Test IoU per class as bars in the class colours; absent classes are marked, not drawn as 0."""
    per_class = metrics["test"]["per_class"]
    names = list(taxonomy.CLASS_NAMES)
    values = [per_class.get(name, {}).get("iou") for name in names]
    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    colours = taxonomy.palette_array()[: taxonomy.NUM_CLASSES] / 255
    positions = np.arange(len(names))
    ax.barh(positions, [100 * v if v is not None else 0 for v in values], color=colours, edgecolor="grey")
    for y, value in zip(positions, values):
        ax.text(100 * value + 1 if value is not None else 1, y, f"{100 * value:.1f}" if value is not None else ABSENT,
                va="center", fontsize="small", color="black" if value is not None else "grey")
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("test IoU (%)")
    ax.set_title(f"Per-class test IoU (mIoU {100 * metrics['test']['miou']:.2f}%)")
    return fig


def confusion_matrix(metrics: dict[str, Any]) -> np.ndarray | None:
    """The test confusion matrix (rows: truth, columns: prediction, pixel counts), if the run stored one."""
    matrix = metrics["test"].get("confusion_matrix")
    if matrix is None:
        return None
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES):
        raise ValueError(f"test.confusion_matrix has shape {matrix.shape}, expected "
                         f"({taxonomy.NUM_CLASSES}, {taxonomy.NUM_CLASSES})")
    return matrix


def plot_confusion(matrix: np.ndarray) -> Figure:
    """Row-normalised confusion matrix (each true class sums to 100%: the diagonal is the recall).

    Rows are labelled with their pixel count; a cell holding pixels that round to 0% says "<1", an
    empty cell nothing; rows without pixels are blank.
    """
    import seaborn as sns

    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(100 * matrix, totals, out=np.full_like(matrix, np.nan), where=totals > 0)
    labels = np.where(matrix == 0, "", np.where(normalised < 0.5, "<1", np.char.mod("%.0f", np.nan_to_num(normalised))))
    rows = [f"{name} ({_pixels(n)})" for name, n in zip(taxonomy.CLASS_NAMES, totals[:, 0])]
    fig = Figure(figsize=(12.0, 10.0), layout="constrained")
    ax = fig.add_subplot()
    sns.heatmap(pd.DataFrame(normalised, index=rows, columns=taxonomy.CLASS_NAMES), ax=ax, vmin=0, vmax=100,
                cmap="magma_r", annot=labels, fmt="", annot_kws={"fontsize": 9}, linewidths=0.5, linecolor="#dddddd",
                cbar_kws={"label": "% of the true class's pixels", "shrink": 0.8})
    ax.tick_params(axis="both", labelsize=10)
    ax.set_xticks(ax.get_xticks(), ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")
    ax.set_xlabel("predicted class", fontsize=11)
    ax.set_ylabel("true class (its test pixels)", fontsize=11)
    ax.set_title(f"Test confusion matrix, normalised per true class ({_pixels(matrix.sum(), '')} labelled pixels; "
                 "outlined: the diagonal, i.e. each class's recall)", fontsize=12)
    from matplotlib.patches import Rectangle

    for i in range(len(matrix)):
        ax.add_patch(Rectangle((i, i), 1, 1, fill=False, edgecolor="black", linewidth=1.2))
    return fig


def _pixels(count: float, unit: str = " px") -> str:
    count = int(count)
    return (f"{count / 1e6:.1f}M{unit}" if count >= 1e6 else f"{count / 1e3:.1f}k{unit}" if count >= 1e4
            else f"{count}{unit}")


def prediction_panels(run_dir: str | Path) -> list[Path]:
    """The run's prediction panels (image | ground truth | prediction), sorted by sample id."""
    return sorted((Path(run_dir) / "predictions").glob("*.png"))


# -- the data at a glance (00_dataset) -----------------------------------------------------------------


def class_share_table(dataset_stats: dict[str, Any]) -> pd.DataFrame:
    """Pixel share of each class among labelled pixels, this data folder vs the real ARTeFACT."""
    from heritage import synth

    reference = {name: synth.REFERENCE_CLASS_PIXEL_COUNTS[name] for name in taxonomy.CLASS_NAMES}
    total = sum(reference.values())
    return pd.DataFrame({
        "class": list(taxonomy.CLASS_NAMES),
        "share_here": [dataset_stats["class_pixel_shares"][name] for name in taxonomy.CLASS_NAMES],
        "share_artefact": [reference[name] / total for name in taxonomy.CLASS_NAMES],
        "images_here": [dataset_stats["images_per_class"][name] for name in taxonomy.CLASS_NAMES],
    })


def plot_class_shares(table: pd.DataFrame) -> Figure:
    """Class pixel shares (log scale) of this data folder next to ARTeFACT's."""
    fig = Figure(figsize=(9.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    positions = np.arange(len(table))
    ax.bar(positions - 0.2, 100 * table["share_here"], width=0.4, label="this data folder")
    ax.bar(positions + 0.2, 100 * table["share_artefact"], width=0.4, label="ARTeFACT (published counts)")
    ax.set_yscale("log")
    ax.set_xticks(positions, table["class"], rotation=45, ha="right")
    ax.set_ylabel("% of labelled pixels (log)")
    ax.set_title("Class pixel shares (Background excluded)")
    ax.legend()
    return fig


def plot_material_content(dataset_stats: dict[str, Any]) -> Figure:
    """Number of original images per material (rows) and content type (columns)."""
    import seaborn as sns

    counts = pd.DataFrame(dataset_stats["material_content"]).T.fillna(0).astype(int)
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    sns.heatmap(counts, ax=ax, annot=True, fmt="d", cmap="Blues", cbar=False)
    ax.set_title(f"Materials x content ({dataset_stats['total_samples']} original images)")
    ax.set_xlabel("")
    ax.set_ylabel("")
    return fig


overlay = overlays.overlay  # one home for overlays and legends: heritage.overlays


def example_ids(data_dir: str | Path, n: int) -> list[str]:
    """``n`` original samples showing the most damage classes (ties: by id), for example panels."""
    from heritage import ingest, stats

    metadata = ingest.read_metadata(data_dir)
    ids = sorted(metadata.loc[metadata["transform"] == ingest.IDENTITY, "id"])
    histograms = stats.mask_histograms(data_dir, ids, progress=False)  # a notebook's view
    n_damages = (histograms[:, 1: taxonomy.NUM_CLASSES] > 0).sum(axis=1)
    order = sorted(range(len(ids)), key=lambda i: (-n_damages[i], ids[i]))
    return [ids[i] for i in order[:n]]


def plot_examples(data_dir: str | Path, ids: Sequence[str]) -> Figure:
    """One row per sample: the image, its damage overlay and its mask in the palette, with a legend."""
    from heritage import ingest

    fig = Figure(figsize=(10.0, 3.2 * len(ids)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(ids), 3))
    shown: set[int] = set()
    for row, sample_id in zip(axes, ids):
        image = fileio.read_rgb(ingest.image_path(data_dir, sample_id))
        mask = fileio.read_mask(ingest.annotation_path(data_dir, sample_id))
        taxonomy.check_mask_values(mask, str(ingest.annotation_path(data_dir, sample_id)))
        shown |= set(np.unique(mask).tolist())
        for ax, picture, title in zip(row, (image, overlay(image, mask), taxonomy.mask_to_rgb(mask)),
                                      (sample_id, "damage overlay", "mask (Clean black)")):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize="small")
            ax.set_axis_off()
    handles = overlays.legend_handles(shown)  # the overlay's legend; in the mask, Clean is black
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize="small")
    return fig


def split_balance(data_dir: str | Path, protocol: str) -> pd.DataFrame:
    """Images per (fold, part) and material in a split manifest; originals only in val/test."""
    from heritage import ingest, splits

    manifest = splits.load_manifest(data_dir, protocol)
    material = ingest.read_metadata(data_dir).set_index("id")["material"]
    rows = pd.DataFrame([{"fold": fold["name"], "part": part, "material": material[sample_id]}
                         for fold in manifest["folds"] for part in splits.PARTS for sample_id in fold[part]])
    order = pd.MultiIndex.from_tuples([(fold["name"], part) for fold in manifest["folds"] for part in splits.PARTS],
                                      names=["fold", "part"])
    counts = pd.crosstab([rows["fold"], rows["part"]], rows["material"]).reindex(order, fill_value=0)
    counts.columns.name = None
    return counts.assign(total=counts.sum(axis=1))


def plot_split_balance(balance: pd.DataFrame, protocol: str) -> Figure:
    """Material shares of every (fold, part): a balanced split has bars that look alike."""
    shares = balance.drop(columns="total").div(balance["total"], axis=0) * 100
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    bottom = np.zeros(len(shares))
    labels = [f"{fold}\n{part} ({n})" for (fold, part), n in zip(shares.index, balance["total"])]
    for i, column in enumerate(shares.columns):
        ax.bar(labels, shares[column], bottom=bottom, label=column, color=f"C{i % 10}")
        bottom += shares[column].to_numpy()
    ax.set_ylabel("% of the part's images")
    ax.set_title(f"{protocol}: material mix of each fold and part (images in brackets)")
    ax.tick_params(axis="x", labelsize="x-small")
    fig.legend(fontsize="x-small", loc="outside right upper")
    return fig
