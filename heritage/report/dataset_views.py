"""The data at a glance: the views ``00_dataset`` shows of a data folder.

Reader: the dataset notebook (``notebooks/00_dataset.ipynb``, ``paper/00_dataset.html``): class
pixel shares beside ARTeFACT's published counts, materials x content, example images with their
damage overlay (:mod:`heritage.inference.overlays`, the one overlay and legend), and each split's balance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from heritage import fileio
from heritage.inference import overlays
from heritage.data import taxonomy
from heritage.data.reference import REFERENCE_CLASS_PIXEL_COUNTS


def class_share_table(dataset_stats: dict[str, Any]) -> pd.DataFrame:
    """Pixel share of each class among labelled pixels, this data folder vs the real ARTeFACT."""
    reference = {name: REFERENCE_CLASS_PIXEL_COUNTS[name] for name in taxonomy.CLASS_NAMES}
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


overlay = overlays.overlay  # one home for overlays and legends: heritage.inference.overlays


def example_ids(data_dir: str | Path, n: int) -> list[str]:
    """``n`` original samples showing the most damage classes (ties: by id), for example panels."""
    from heritage.data import datafolder, stats

    metadata = datafolder.read_metadata(data_dir)
    ids = sorted(metadata.loc[metadata["transform"] == datafolder.IDENTITY, "id"])
    histograms = stats.mask_histograms(data_dir, ids, progress=False)  # a notebook's view
    n_damages = (histograms[:, 1: taxonomy.NUM_CLASSES] > 0).sum(axis=1)
    order = sorted(range(len(ids)), key=lambda i: (-n_damages[i], ids[i]))
    return [ids[i] for i in order[:n]]


def plot_examples(data_dir: str | Path, ids: Sequence[str]) -> Figure:
    """One row per sample: the image, its damage overlay and its mask in the palette, with a legend."""
    from heritage.data import datafolder

    fig = Figure(figsize=(10.0, 3.2 * len(ids)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(ids), 3))
    shown: set[int] = set()
    for row, sample_id in zip(axes, ids):
        image = fileio.read_rgb(datafolder.image_path(data_dir, sample_id))
        mask = fileio.read_mask(datafolder.annotation_path(data_dir, sample_id))
        taxonomy.check_mask_values(mask, str(datafolder.annotation_path(data_dir, sample_id)))
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
    from heritage.data import datafolder, splits

    manifest = splits.load_manifest(data_dir, protocol)
    material = datafolder.read_metadata(data_dir).set_index("id")["material"]
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
