"""Class weights from the pixel counts of a training split.

Methods (frequencies are over labelled pixels; Background 255 is never counted):

- ``inverse``: 1 / frequency. The seeds' "extreme" weights (~734x max/min on ARTeFACT) that made
  training collapse to 7.76% mIoU.
- ``inverse_sqrt``: 1 / sqrt(frequency).
- ``inverse_sqrt_log_scaled``: the seeds' balanced weights (36.4x). Inverse-sqrt weights are
  rescaled in log space so that max/min equals ``max_ratio`` (default 36) when it would exceed it:
  ``w = w_min * (w / w_min) ** (ln max_ratio / ln(w_max / w_min))``. Unlike clipping, this keeps
  the order and relative spacing of the rare classes instead of giving them all the same weight.

With ``max_ratio`` set, ``inverse`` and ``inverse_sqrt`` are clipped at ``max_ratio`` times the
smallest weight. Weights are normalised so their pixel-weighted mean over the training pixels is 1
(the loss keeps its scale). A class with no training pixel gets the largest weight and is reported.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from heritage import errors, fileio
from heritage.data import datafolder, splits, stats, taxonomy

METHODS = ("inverse", "inverse_sqrt", "inverse_sqrt_log_scaled")
DEFAULT_METHOD = "inverse_sqrt_log_scaled"
DEFAULT_MAX_RATIO = 36.0


def count_pixels(data_dir: str | os.PathLike, ids: Iterable[str], progress: bool = True) -> np.ndarray:
    """Pixels of each of the NUM_CLASSES classes over the masks of ``ids`` (int64; Background excluded);
    a progress bar for 100 masks or more unless ``progress`` is False. A mask holding a value that is
    no class is refused, naming its file."""
    ids = list(ids)
    histograms = stats.mask_histograms(data_dir, ids, progress=progress, desc="count pixels")
    for row in np.flatnonzero(histograms[:, taxonomy.NUM_CLASSES:taxonomy.IGNORE_INDEX].any(axis=1))[:1]:
        path = datafolder.annotation_path(data_dir, ids[row])
        taxonomy.check_mask_values(fileio.read_mask(path), str(path))  # raises, naming the values
    return histograms.sum(axis=0)[: taxonomy.NUM_CLASSES]


def class_weights_for_ids(data_dir: str | os.PathLike, ids: Iterable[str], method: str,
                          max_ratio: float | None = None, progress: bool = True) -> np.ndarray:
    """The class weights of a run trained on ``ids``: :func:`compute_class_weights` of their
    :func:`count_pixels` (what ``train`` uses, and saves as the run folder's ``class_weights.json``)."""
    return compute_class_weights(count_pixels(data_dir, ids, progress=progress), method, max_ratio)


def compute_class_weights(pixel_counts: Iterable[int], method: str, max_ratio: float | None = None) -> np.ndarray:
    """Per-class weights (float64) for ``pixel_counts``; see the module docstring for the methods.

    ``max_ratio`` caps max/min; for ``inverse_sqrt_log_scaled`` it defaults to DEFAULT_MAX_RATIO,
    for the other methods None means no cap.
    """
    counts = np.asarray(list(pixel_counts), dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise errors.InputError(f"pixel_counts must be a 1-D array of non-negative counts, got {counts}")
    if max_ratio is not None and max_ratio < 1:
        raise errors.InputError(f"max_ratio must be >= 1, got {max_ratio}")
    present = counts > 0
    if not present.any():
        raise errors.InputError("no labelled pixels: cannot compute class weights")
    frequency = counts[present] / counts.sum()
    if method == "inverse":
        raw = 1.0 / frequency
    elif method == "inverse_sqrt":
        raw = 1.0 / np.sqrt(frequency)
    elif method == "inverse_sqrt_log_scaled":
        raw = 1.0 / np.sqrt(frequency)
        cap = DEFAULT_MAX_RATIO if max_ratio is None else max_ratio
        natural = raw.max() / raw.min()
        if natural > cap:
            raw = raw.min() * (raw / raw.min()) ** (np.log(cap) / np.log(natural))
    else:
        raise errors.InputError(f"unknown class-weight method {method!r} (expected one of {METHODS})")
    if max_ratio is not None:
        raw = np.minimum(raw, raw.min() * max_ratio)
    raw = raw / (np.sum(raw * counts[present]) / counts[present].sum())
    weights = np.full(len(counts), raw.max())
    weights[present] = raw
    return weights


def class_weights_for_fold(data_dir: str | os.PathLike, protocol: str, fold: str,
                           method: str = DEFAULT_METHOD, max_ratio: float | None = None) -> dict:
    """The weights a run of the fold would train with, counted on its training ids, as a record (what
    ``data weights`` prints; a run saves its own in its folder, ``class_weights.json``)."""
    train_ids, _, _ = splits.fold_ids(splits.load_manifest(data_dir, protocol), fold)
    counts = count_pixels(data_dir, train_ids)
    weights = compute_class_weights(counts, method, max_ratio)
    if max_ratio is None and method == "inverse_sqrt_log_scaled":
        max_ratio = DEFAULT_MAX_RATIO
    return {
        "method": method,
        "max_ratio": max_ratio,
        "ratio": float(weights.max() / weights.min()),
        "class_names": list(taxonomy.CLASS_NAMES),
        "pixel_counts": counts.tolist(),
        "weights": weights.tolist(),
        "absent_classes": [name for name, n in zip(taxonomy.CLASS_NAMES, counts) if n == 0],
        "protocol": protocol,
        "fold": fold,
        "n_train_images": len(train_ids),
        "normalisation": "pixel-weighted mean over the training pixels = 1",
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="data folder with split manifests")
    parser.add_argument("--protocol", required=True, choices=splits.PROTOCOLS)
    parser.add_argument("--fold", required=True, help="fold name in the manifest (e.g. fold0, holdout)")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="default: %(default)s")
    parser.add_argument("--max-ratio", type=float, default=None,
                        help=f"cap on max/min weight (default: {DEFAULT_MAX_RATIO:g} for "
                             "inverse_sqrt_log_scaled, none otherwise)")
    parser.add_argument("--json", type=Path, default=None, help="also write the record to this JSON file")


def main(args: argparse.Namespace) -> int:
    record = class_weights_for_fold(args.data, args.protocol, args.fold, args.method, args.max_ratio)
    for name, count, weight in zip(record["class_names"], record["pixel_counts"], record["weights"]):
        print(f"{name:>14s} {count:>12d} px  weight {weight:8.3f}")
    print(f"max/min ratio {record['ratio']:.1f}")
    if args.json is not None:
        fileio.write_json(args.json, record)
        print(f"wrote {args.json}")
    if record["absent_classes"]:
        print(f"warning: no training pixels for {record['absent_classes']}; they get the largest weight")
    return 0
