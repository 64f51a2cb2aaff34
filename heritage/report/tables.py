"""A paper table and its cells: raw numbers for CSV, formatted cells for Markdown, LaTeX and HTML.

Reader: every module that makes a paper table (:mod:`~heritage.report.descriptive`,
:mod:`~heritage.report.paired`) and :mod:`heritage.report.publish` (LaTeX spelling). No number is typed
in here: a planned cell without a run says "no run", a class in no fold "absent", and every
:class:`Table` lists the run folders (and config hashes) behind it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from heritage.report.verdicts import NOT_COMPARED

NO_RUN = "no run"
ABSENT = "absent"  # a class in neither ground truth nor prediction, in every fold of a setting
NOT_RECORDED = "not recorded"  # a score the setting's runs were made before recording (e.g. test.thin)


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
        caption = latex_text(self.caption) + (f". {latex_text(self.banner)}" if self.banner else "")
        lines = [
            f"% {self.name}: needs \\usepackage{{booktabs}} and \\usepackage{{graphicx}} in the preamble;",
            f"% use it with \\input{{tables/{self.name}.tex}}. Made by heritage.report from run folders (provenance.json).",
            # local to the float: small type and narrow gaps keep wide tables from shrinking much
            r"\begin{table}[htbp]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
            f"\\caption{{{caption}}}",
            f"\\label{{tab:{self.name}}}",
        ]
        if columns:  # a tabular needs a column
            tabular = (self.display.style.hide(axis="index").format(latex_text).format_index(latex_text, axis=1)
                       .to_latex(column_format=spec, hrules=True))  # hrules: booktabs' rules
            # \width is the tabular's natural width: scale down only when it exceeds the line
            lines += [r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%", tabular.rstrip("\n") + "}"]
        if self.notes:
            lines += [r"\par\smallskip\raggedright", *(latex_text(note.removeprefix("- ")) + r"\par" for note in self.notes)]
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
    **{name: (f"{name} (%)", 100.0) for name in (
        "thin_iou_mean", "thin_iou_std", "filter_thin_iou_mean", "thin_cliou_mean", "filter_thin_cliou_mean")},
    "seeds_reported_v100_images_per_s": ("seeds_reported_v100 (img/s)", 1.0),
}


def _scaled(value: Any, scale: float) -> Any:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return value  # markers ("no run", "absent") stay as they are
    return float(value) * scale


_NUMERIC_CELL = re.compile(r"[\[(]?[+\-−]?\d[\d.,]*(?:\s*(?:±|–|/|,)\s*[+\-−]?\d[\d.,]*)?[\])]?(?: px)?")
_NON_NUMBERS = {NO_RUN, ABSENT, NOT_RECORDED, NOT_COMPARED, "n/a", "—", "not planned", ""}


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


def latex_text(text: Any) -> str:
    """A cell's text as LaTeX for pdflatex: special characters escaped, a sign before a number as a math minus."""
    escaped = "".join(_LATEX_CHARS.get(ch, ch) for ch in str(text))
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
_KEY_COLUMNS = {"Setting", "setting", "POC", "poc", "Encoder", "encoder", "Family", "family", "Protocol", "protocol",
                "Size", "image_size", "Variant", "variant", "Loss", "loss", "Class weights",
                "class_weights", "Folds", "n_runs", "n_planned"}
