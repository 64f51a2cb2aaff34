"""One run's report: the views the POC notebooks show of their run folder.

Reader: the POC notebooks (``notebooks/<poc>.ipynb``, rendered into each run's ``report.html``):
results first (:func:`run_headline`: test mIoU beside all-Clean; :func:`thin_headline` and :func:`thin_frame`:
thin damage beside the residual filter; :func:`per_class_frame`), the
confusion matrix, prediction panels, training curves, and the configuration folded at the end
(:func:`config_details_html`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from heritage import errors
from heritage.data import taxonomy
from heritage.modeling import thin_prior
from heritage.config import RunConfig
from heritage.training.provenance import _number
from heritage.training.runs import HISTORY_FILE
from heritage.report.tables import ABSENT, NOT_RECORDED, _fixed


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
    from heritage.data import splits

    if metrics.get("protocol") == splits.LEAKY:
        line += (" **Leaky split (the seeds' protocol): augmented copies of the test images were trained on and "
                 "the test part also picked the epoch, so this number is inflated by design.**")
    return line


def thin_headline(metrics: dict[str, Any]) -> str:
    """One Markdown line: the thin-damage IoU beside the residual filter's on the same test pixels, whether the model
    beats the filter (said in those words when it does not), and the tolerant clIoU of both, labelled with its
    tolerance; "not recorded" for a run made before thin damage was scored."""
    names = ", ".join(taxonomy.THIN_CLASSES)
    record = metrics["test"].get("thin")
    if not record:
        return (f"Thin damage ({names} as one class): {NOT_RECORDED} (this run was made before thin damage and the "
                "residual filter were scored; train it again to record them).")
    model, found = _number(record["model_iou"]), _number(record["filter_iou"])
    k = record["filter"]["k"]
    label = record["tolerant_score"]["label"]
    if math.isnan(model) or math.isnan(found):
        return (f"Thin damage ({names} as one class): neither the ground truth of this test part, nor the prediction, "
                "nor the residual filter's detections hold a thin-damage pixel: nothing to compare.")
    verdict = "beats the residual filter on thin damage" if model > found else "does not beat the residual filter on thin damage"
    cl_model, cl_filter = (_number(record[side]["cliou"]) for side in ("model", "filter"))
    tolerant = ", ".join(f"{who} {'n/a' if math.isnan(v) else f'{100 * v:.2f}%'}"
                         for who, v in (("model", cl_model), ("filter", cl_filter)))
    calibrated = ""
    if thin_prior.METRICS_KEY in metrics:
        calibrated = (f" The model's thin-class probabilities were divided by "
                      f"{thin_prior.recorded_factor(metrics):g}, the factor chosen on the validation part as the "
                      "filter's k is (calibrate_thin).")
    return (f"**Thin-damage IoU {100 * model:.2f}%** ({names} as one class) against **{100 * found:.2f}%** for the "
            f"residual filter on the same test pixels (its k = {k:g} chosen on the validation part): this model "
            f"**{verdict}**.{calibrated} Tolerant score, {label}: {tolerant} (verdicts use the strict IoU).")


def thin_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """Thin damage as one class, then each thin class: support, the model's strict IoU and clIoU, the residual
    filter's recall and IoU (%); empty for a run made before thin damage was scored."""
    record = metrics["test"].get("thin")
    columns = ["", "support (px)", "model IoU (%)", "model clIoU (%)", "filter recall (%)", "filter IoU (%)"]
    if not record:
        return pd.DataFrame(columns=columns)
    label = record["tolerant_score"]["label"]
    columns[3] = f"model {label} (%)"
    rows = [("thin damage (one class)", record["support"], record["model_iou"], record["model"]["cliou"],
             record["filter"]["recall"], record["filter_iou"])]
    rows += [(name, entry["support"], entry["model_iou"], entry["model_cliou"], entry["filter_recall"],
              entry["filter_iou"]) for name, entry in record["per_class"].items()]
    return pd.DataFrame([(name, support, *(ABSENT if v is None else _fixed(v, 2, 100) for v in values))
                         for name, support, *values in rows], columns=columns)


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
    path = Path(run_dir) / HISTORY_FILE
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
    thin = test.get("thin")
    rows += [("test thin-damage IoU (%)", _fixed(_number(thin["model_iou"]), 2, 100) if thin else NOT_RECORDED),
             ("test thin-damage IoU of the residual filter (%)",
              _fixed(_number(thin["filter_iou"]), 2, 100) if thin else NOT_RECORDED)]
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
