"""The paper's figures and how they are saved: PNG and PDF, each with the provenance banner as its footer.

Reader: the comparison (``99_comparison``, ``paper/figures/``); :func:`save_figure` and
:func:`add_footer` also serve the gallery. Figures are matplotlib ``Figure`` objects (no pyplot:
no global figure state, no GUI backend).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from heritage import fileio
from heritage.report.frames import FAMILY_ORDER, SETTING, _matches, encoder_label, poc_label, setting_label
from heritage.report.tables import ABSENT, NO_RUN, Table
from heritage.report.verdicts import CONFIDENCE, NOT_COMPARED


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
    return per_class_plot(table, ("patch", "letterbox"), "RQ4",
                          "no pair: no patch arm with runs beside its letterbox configuration")


def rq6_per_class_plot(table: Table) -> Figure:
    """The paired differences thin recipe − main configuration of an :func:`rq6_per_class_table`, as
    :func:`rq4_per_class_plot` draws RQ4's."""
    return per_class_plot(table, ("thin", "main"), "RQ6",
                          "no pair: no thin-recipe arm with runs beside its main configuration")


def per_class_plot(table: Table, arms: tuple[str, str], label: str, empty: str) -> Figure:
    """A per-class table's (:func:`heritage.report.paired.paired_per_class_table`) paired differences A − B per class
    with their 95% intervals, one panel per encoder; thin classes in red; classes without a difference labelled
    why. ``arms`` names A and B as the table does (its column ``iou_<A>``)."""
    data = table.data
    groups = list(data.groupby(["encoder", "protocol"], sort=False)) if len(data) else []
    fig = Figure(figsize=(7.0 * max(1, len(groups)), 6.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(groups)), squeeze=False)[0])
    if not groups:
        axes[0].text(0.5, 0.5, empty, transform=axes[0].transAxes, ha="center", va="center")
        axes[0].set_axis_off()
    for ax, ((encoder, protocol), rows) in zip(axes, groups):
        positions = np.arange(len(rows))
        for y, (_, row) in zip(positions, rows.iterrows()):
            colour = "tab:red" if row["thin"] else "tab:blue"
            if row[f"iou_{arms[0]}"] == NOT_COMPARED or row["n_pairs"] == 0:
                why = NOT_COMPARED if row[f"iou_{arms[0]}"] == NOT_COMPARED else ABSENT
                ax.text(0, y, f" {why}", va="center", fontsize="x-small", color="dimgrey")
                continue
            low, high = row["ci_low"], row["ci_high"]
            error = None if math.isnan(low) else [[100 * (row["mean_diff"] - low)], [100 * (high - row["mean_diff"])]]
            ax.errorbar(100 * row["mean_diff"], y, xerr=error, marker="o", color=colour, capsize=3, linestyle="none")
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_yticks(positions, list(rows["class"]))
        for tick, thin in zip(ax.get_yticklabels(), rows["thin"]):
            tick.set_color("tab:red" if thin else "black")
        ax.invert_yaxis()
        ax.set_xlabel(f"{arms[0]} − {arms[1]} test IoU (points; {CONFIDENCE:.0%} CI over paired folds)")
        ax.set_title(f"{label}: {encoder_label(encoder)}, {protocol} (red: thin classes)")
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


@contextlib.contextmanager
def _seeded_numpy_global(seed: int) -> Iterator[None]:
    """numpy's global generator seeded for the block and given back its state after: the same runs draw the
    same figure, and nothing else sees the seed."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


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
    with _seeded_numpy_global(0):  # seaborn draws the jitter from numpy's global generator
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


# A PDF records when it was written unless told not to; undated, the same figure gives the same bytes.
_NO_DATE = {".pdf": {"CreationDate": None}}


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
            fig.savefig(tmp, format=suffix[1:], dpi=150, metadata=_NO_DATE.get(suffix),
                        **({"bbox_inches": "tight"} if footer else {}))
        written.append(path)
    return written
