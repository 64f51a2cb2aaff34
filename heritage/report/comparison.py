"""The comparison: every table and figure of the paper built from the runs, their findings, and the files
written under ``paper/``.

Reader: ``99_comparison`` (and ``heritage.pipeline.paper``, which runs it). :func:`build_comparison` reads
the runs of the plan and builds the descriptive tables, each research question's tables and
figures as :data:`heritage.report.design.QUESTIONS` declares them, and the banner;
:func:`findings` states each question's verdict; :func:`write_comparison` writes
``tables/``, ``figures/`` and ``provenance.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from heritage import errors, fileio
from heritage.training.provenance import Banner, make_banner
from heritage.report import design
from heritage.report.descriptive import (ablation_table, encoder_table, per_class_table, poc_table, seeds_protocol_table,
                                         thin_damage_table, thin_per_class_table, time_table)
from heritage.report.figures import (PER_IMAGE_CAPTION, add_footer, miou_throughput_plot, per_class_heatmap, per_image_plot,
                                     rq4_per_class_plot, rq6_per_class_plot, save_figure)
from heritage.report.frames import load_runs, select_runs, summarise
from heritage.report.paired import question_table, rq4_per_class_table, rq6_per_class_table
from heritage.report.tables import Table, _sources
from heritage.report.verdicts import CONFIDENCE, NOT_SUPPORTED


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

    def has_table(self, name: str) -> bool:
        return any(table.name == name for table in self.tables)

    def figure(self, name: str) -> Figure:
        return self.figures[name][0]


# The tables a research question shows besides its paired table (design.QUESTIONS names them), by name.
QUESTION_TABLES: dict[str, Callable[[pd.DataFrame, pd.DataFrame], Table]] = {
    "rq4_per_class": rq4_per_class_table,
    "rq6_per_class": rq6_per_class_table,
    f"loss_ablation_{design.ABLATION_POC}": lambda runs, summary: ablation_table(summary),
}
# A research question's figures, by name: (the table of the question it draws, how, its caption).
QUESTION_FIGURES: dict[str, tuple[str, Callable[[Table], Figure], str]] = {
    "rq4_per_class_differences": (
        "rq4_per_class", rq4_per_class_plot,
        "RQ4 per class: patch − letterbox test IoU at the same training budget, mean over paired folds with its "
        f"{CONFIDENCE:.0%} t interval (thin classes in red)"),
    "rq6_per_class_differences": (
        "rq6_per_class", rq6_per_class_plot,
        "RQ6 per class: thin-damage recipe − main configuration test IoU at the same training budget, mean over "
        f"paired folds with its {CONFIDENCE:.0%} t interval (thin classes in red)"),
}


def asked(question: design.ResearchQuestion, summary: pd.DataFrame) -> bool:
    """Whether the plan (or the runs) can ask ``question``: a question about one POC needs that POC."""
    return question.poc is None or bool((summary["poc"] == question.poc).any())


def question_tables(question: design.ResearchQuestion, runs: pd.DataFrame, summary: pd.DataFrame) -> list[Table]:
    """The tables ``question`` declares, in its order: its paired table (:func:`heritage.report.paired.question_table`)
    and the others (QUESTION_TABLES)."""
    return [question_table(question, runs, summary) if name == question.table else QUESTION_TABLES[name](runs, summary)
            for name in question.tables]


def build_comparison(runs_root: str | Path, planned: pd.DataFrame | None = None,
                     data_dir: str | Path | None = None, profile: str | None = None) -> Comparison:
    """Read every run under ``runs_root``, keep those of the plan, and build all tables and figures.

    The descriptive tables first, then each research question's tables and figures (design.QUESTIONS).
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
    tables += [per_class, thin_damage_table(summary), thin_per_class_table(runs, summary)]
    if (summary["poc"] == design.ABLATION_POC).any():
        tables.append(seeds_protocol_table(summary, banner.profile))
    figures = {
        "per_class_iou_heatmap": (per_class_heatmap(per_class), per_class.runs, per_class.caption),
        "miou_vs_throughput": (miou_throughput_plot(summary), _sources(summary),
                               "Test mIoU (mean ± std over folds) against training throughput per setting"),
        "per_image_miou": (per_image_plot(runs, summary), _sources(summary[summary["n_runs"] > 0]), PER_IMAGE_CAPTION),
    }
    for question in design.QUESTIONS:
        if not asked(question, summary):
            continue
        mine = {table.name: table for table in question_tables(question, runs, summary)}
        tables += mine.values()
        for name in question.figures:
            drawn, make, caption = QUESTION_FIGURES[name]
            figures[name] = (make(mine[drawn]), mine[drawn].runs, caption)
    for table in tables:
        table.banner = banner.text
    for fig, _, _ in figures.values():
        add_footer(fig, banner.text)
    return Comparison(runs=runs, ignored=ignored, summary=summary, tables=tables, figures=figures, banner=banner)


def findings(tables: Sequence[Table]) -> list[dict[str, Any]]:
    """Each research question's verdict from its paired table (:func:`decide`'s verdicts, nothing else).

    ``verdict`` is "supported" (at least one pair meets the rules), "not supported" or "no pair";
    ``reason`` is one sentence: the supported statements, or why nothing is claimed (each reason with
    the number of pairs it holds for). Questions in design.QUESTIONS's order; one without its table is left out.
    """
    from collections import Counter

    by_name = {table.name: table for table in tables}
    result = []
    for question in design.QUESTIONS:
        name = question.table
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
        result.append({"table": name, "question": question.text, "verdict": verdict, "reason": reason,
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
            artefacts[f"tables/{table.name}{suffix}"] = {"caption": table.caption, "runs": table.runs,
                                                         "columns": [str(c) for c in table.display.columns]}
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
