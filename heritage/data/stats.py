"""Descriptive statistics of a data folder: class pixel shares, material x content, image sizes, and
the size of damage components at a working resolution (:func:`component_stats`, ``--resolution``).

Counts are over original samples only (augmented copies would count each artwork four times). The
keys shared with the published ``statistics.json`` of ARTeFACT (``total_samples``, ``materials``,
``contents``, ``class_pixel_counts`` with Background, ``image_sizes`` as "WxH") use its format,
so the dataset notebook can put the two side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from heritage import errors, fileio
from heritage.data import datafolder, scale, taxonomy


# Pixels of a mask counted at once: bincount casts to int64 (8 bytes a pixel), so a full-resolution scan
# is counted in bands of rows rather than copied whole.
HISTOGRAM_PIXELS = 1 << 22


def mask_histogram(mask: np.ndarray) -> np.ndarray:
    """(256,) int64 count of every value of a uint8 id mask (classes, Background 255, and any stray
    value, which callers refuse with :func:`heritage.data.taxonomy.check_mask_values`). The one home of a
    mask's class histogram (weights, synth, the working cache, predict's area table count with it)."""
    mask = np.asarray(mask, dtype=np.uint8)
    if mask.ndim < 2:
        return np.bincount(mask.ravel(), minlength=256).astype(np.int64)
    rows = max(1, HISTOGRAM_PIXELS // max(1, mask[0].size))
    counts = np.zeros(256, dtype=np.int64)
    for y0 in range(0, mask.shape[0], rows):
        counts += np.bincount(mask[y0:y0 + rows].ravel(), minlength=256)
    return counts


def mask_histograms(data_dir: str | os.PathLike, ids: Sequence[str], progress: bool = True,
                    desc: str = "stats") -> np.ndarray:
    """(len(ids), 256) int64 :func:`mask_histogram` of each id's stored mask, one row per mask; a bar
    (``desc``) for 100 masks or more unless ``progress`` is False (notebooks: it would land in the report)."""
    histograms = np.zeros((len(ids), 256), dtype=np.int64)
    for row, sample_id in enumerate(tqdm(ids, desc=desc, unit="mask", disable=not progress or len(ids) < 100)):
        histograms[row] = mask_histogram(fileio.read_mask(datafolder.annotation_path(data_dir, sample_id)))
    return histograms


def read_component_areas(data_dir: str | os.PathLike, ids: Sequence[str],
                         progress: bool = True) -> list[scale.ComponentAreas]:
    """:func:`heritage.data.scale.component_areas` of each id's stored mask in a data folder (one mask read
    per id, no image decode)."""
    return [scale.component_areas(fileio.read_mask(datafolder.annotation_path(data_dir, sample_id)))
            for sample_id in tqdm(ids, desc="components", unit="mask", disable=not progress or len(ids) < 100)]


def component_summary(data_dir: str | os.PathLike, ids: Sequence[str], factors: float | Sequence[float] = 1.0,
                      progress: bool = True) -> dict[str, dict[str, float | int]]:
    """:func:`heritage.data.scale.summarise` of the stored masks of ``ids`` (factors from the data folder's
    stored size)."""
    return scale.summarise(read_component_areas(data_dir, ids, progress=progress), factors)


def dataset_stats(data_dir: str | os.PathLike, progress: bool = True) -> dict:
    metadata = datafolder.read_metadata(data_dir)
    originals = metadata[metadata["transform"] == datafolder.IDENTITY]
    histograms = mask_histograms(data_dir, originals["id"].tolist(), progress=progress)
    class_counts = histograms[:, : taxonomy.NUM_CLASSES]
    labelled = int(class_counts.sum())
    names = list(taxonomy.CLASS_NAMES)
    crosstab = pd.crosstab(originals["material"], originals["content"])
    return {
        "data_dir": str(data_dir),
        "total_samples": len(originals),
        "augmented_samples": len(metadata) - len(originals),
        "materials": originals["material"].value_counts().to_dict(),
        "contents": originals["content"].value_counts().to_dict(),
        "material_content": {m: {c: int(n) for c, n in row.items()} for m, row in crosstab.iterrows()},
        "class_pixel_counts": {
            **{name: int(n) for name, n in zip(names, class_counts.sum(axis=0))},
            taxonomy.BACKGROUND_NAME: int(histograms[:, taxonomy.IGNORE_INDEX].sum()),
        },
        "class_pixel_shares": {name: (int(n) / labelled if labelled else 0.0)
                               for name, n in zip(names, class_counts.sum(axis=0))},
        "images_per_class": {name: int(n) for name, n in zip(names, (class_counts > 0).sum(axis=0))},
        "image_sizes": [f"{w}x{h}" for w, h in zip(originals["width"], originals["height"])],
        "image_size_summary": {
            axis: {"min": int(originals[axis].min()), "median": float(originals[axis].median()),
                   "max": int(originals[axis].max())}
            for axis in ("width", "height")
        },
    }


def component_stats(data_dir: str | os.PathLike, resolution: str | int = "native", progress: bool = True) -> dict:
    """Per damage class, the 8-connected components of the original samples' masks at ``resolution``
    (``native``: the stored size; N: longest side at most N px, as ``working_resolution``):
    ``n_components``, ``median_area_px``, ``share_le_2px`` (:func:`heritage.data.scale.summarise`), with the
    resize factors from the stored size and, where the original scan size is recorded, from it."""
    metadata = datafolder.read_metadata(data_dir)
    originals = metadata[metadata["transform"] == datafolder.IDENTITY]
    stored = np.maximum(originals["width"], originals["height"]).to_numpy(dtype=np.float64)
    factors = scale.working_factor(stored, resolution)
    original = datafolder.original_size(originals).max(axis=1).to_numpy(dtype=np.float64)
    return {
        "resolution": resolution,
        "factor_from_stored": {"min": float(factors.min()), "median": float(np.median(factors)),
                               "max": float(factors.max())},
        "factor_from_original": (float(np.median(stored * factors / original))
                                 if datafolder.has_original_size(metadata) else None),
        "per_class": component_summary(data_dir, originals["id"].tolist(), factors, progress=progress),
    }


def resolution_arg(value: str) -> str | int:
    """``--resolution``: ``native`` or a positive int (longest side in px)."""
    if value == "native":
        return value
    if not value.isdigit() or int(value) < 1:
        raise errors.InputError(f"--resolution {value!r}: expected 'native' or a positive number of pixels")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="data folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the statistics to this JSON file")
    parser.add_argument("--resolution", default="native",
                        help="report damage components at this resolution: native (the stored size, the "
                             "default) or N (longest side at most N px, as working_resolution)")


def main(args: argparse.Namespace) -> int:
    resolution = resolution_arg(args.resolution)
    stats = dataset_stats(args.data)
    print(f"{args.data}: {stats['total_samples']} originals, {stats['augmented_samples']} augmented copies")
    print(pd.DataFrame(stats["material_content"]).T.fillna(0).astype(int).to_string())
    print()
    for name, share in stats["class_pixel_shares"].items():
        print(f"{name:>14s} {100 * share:7.3f}% of labelled pixels in {stats['images_per_class'][name]:4d} images")
    sizes = stats["image_size_summary"]
    print(", ".join(f"{axis} {sizes[axis]['min']}..{sizes[axis]['max']}" for axis in ("width", "height")))
    components = stats["components"] = component_stats(args.data, resolution)
    from_original = components["factor_from_original"]
    print(f"\ndamage components (8-connected) at {resolution}: median factor "
          f"{components['factor_from_stored']['median']:.3g} of the stored size"
          + (f", {from_original:.3g} of the original scans" if from_original is not None else
             " (original scan size not recorded)"))
    print(scale.table(components["per_class"]))
    for message in scale.vanishing_messages(components["per_class"], f"at {resolution}"):
        print(f"heritage data stats: warning: {message}", file=sys.stderr)
    if args.json:
        fileio.write_json(args.json, stats)
        print(f"wrote {args.json}")
    return 0
