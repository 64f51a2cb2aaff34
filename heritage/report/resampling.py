"""Paired resampling over source artworks: a bootstrap of the difference between two settings.

Two settings scored on the same test images (their runs' ``per_image.csv`` over every paired fold) are
compared by resampling *source artworks* with replacement, each source's images together (Metrics
Reloaded; Reinke et al.): augmented copies share their original's ``source_id``, so an artwork never
counts twice however many of its images a table holds, and images of one artwork, which are not
independent, move as one unit. Two differences A - B are bootstrapped on the same draws:

- ``per_image_miou``: the mean over the drawn images of (mIoU of A - mIoU of B) on each image;
- ``dataset_miou``: the dataset-level mIoU of A minus that of B, each recomputed from the drawn images'
  summed class counts (``tp_``/``true_``/``pred_<class>``, which add up to the dataset confusion).

``mean`` is the difference on the images as they are (not resampled); the interval is the percentile
interval of the resampled differences. The draws are a function of the seed only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from heritage import errors
from heritage.modeling import metrics
from heritage.report.verdicts import CONFIDENCE  # one confidence level for every interval the paper states
from heritage.training import runs

RESAMPLES = 2000
SEED = 0
STATISTICS = {"per_image_miou": "per-image mIoU", "dataset_miou": "dataset-level mIoU"}


@dataclass(frozen=True)
class BootstrapDifference:
    """A - B of one statistic with its percentile interval over ``n_resamples`` draws of sources."""

    statistic: str  # a key of STATISTICS
    mean: float
    ci_low: float
    ci_high: float
    n_sources: int
    n_images: int
    n_resamples: int
    seed: int
    confidence: float = CONFIDENCE


def setting_images(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One per-image table of a setting from its runs' (run folder -> its ``per_image.csv`` rows), with
    ``run_dir``; an image in two of them (two folds of one protocol never test the same image) is refused
    naming both runs."""
    if not tables:
        raise errors.InputError("no run given: a setting's per-image table needs at least one run's per_image.csv")
    table = pd.concat([t.assign(run_dir=str(folder)) for folder, t in tables.items()], ignore_index=True)
    twice = table[table["id"].duplicated(keep=False)]
    if len(twice):
        first = twice.iloc[0]["id"]
        folders = ", ".join(twice[twice["id"] == first]["run_dir"])
        raise errors.InputError(f"image {first!r} is in the per_image.csv of more than one run ({folders}): "
                                "a setting's runs must test disjoint images")
    return table


def paired_images(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``a`` and ``b`` on the same images in the same order (sorted by id); mismatched sets are refused."""
    for name, table in (("A", a), ("B", b)):
        duplicated = table["id"][table["id"].duplicated()]
        if len(duplicated):
            raise errors.InputError(f"setting {name}: image {duplicated.iloc[0]!r} appears twice in its per-image table")
    only_a = sorted(set(a["id"]) - set(b["id"]))
    only_b = sorted(set(b["id"]) - set(a["id"]))
    if only_a or only_b:
        raise errors.InputError(
            f"settings A and B are not scored on the same test images: {len(only_a)} only in A"
            + (f" (e.g. {only_a[0]!r})" if only_a else "") + f", {len(only_b)} only in B"
            + (f" (e.g. {only_b[0]!r})" if only_b else "") + "; compare them over the folds both have run")
    a = a.sort_values("id", kind="stable").reset_index(drop=True)
    b = b.sort_values("id", kind="stable").reset_index(drop=True)
    differs = a["source_id"].to_numpy() != b["source_id"].to_numpy()
    if differs.any():
        row = int(np.flatnonzero(differs)[0])
        raise errors.InputError(f"image {a.at[row, 'id']!r} has source_id {a.at[row, 'source_id']!r} in A but "
                                f"{b.at[row, 'source_id']!r} in B: the settings were tested on different data")
    return a, b


def bootstrap_difference(a: pd.DataFrame, b: pd.DataFrame, n_resamples: int = RESAMPLES, seed: int = SEED,
                         confidence: float = CONFIDENCE) -> dict[str, BootstrapDifference]:
    """A - B of per-image mIoU and of dataset-level mIoU, resampling source artworks (module docstring).

    ``a`` and ``b`` are per-image tables (``runs.per_image_table`` columns) over the same images.
    Returns ``{"per_image_miou": ..., "dataset_miou": ...}`` (STATISTICS), drawn from one generator
    seeded with ``seed``: the same inputs and seed give the same intervals.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    a, b = paired_images(a, b)
    if a.empty:
        raise errors.InputError("no test image to resample: both per-image tables are empty")
    sources, source_index = np.unique(a["source_id"].to_numpy(dtype=str), return_inverse=True)
    n_sources = len(sources)

    def per_source(values: np.ndarray) -> np.ndarray:  # (images, ...) -> (sources, ...) sums
        out = np.zeros((n_sources, *values.shape[1:]), dtype=values.dtype)
        np.add.at(out, source_index, values)
        return out

    # per-image mIoU: images without a labelled pixel have none in either setting and are left out
    scored = ~(a["miou"].isna() | b["miou"].isna()).to_numpy()
    difference = np.where(scored, a["miou"].to_numpy() - b["miou"].to_numpy(), 0.0)
    difference_sum, n_scored = per_source(difference), per_source(scored.astype(np.int64))
    columns = runs.per_image_columns()
    counts = {name: np.stack([per_source(t[columns[kind]].to_numpy(dtype=np.int64)) for kind in ("tp", "true", "pred")])
              for name, t in (("a", a), ("b", b))}  # (3, sources, classes)

    # Not scipy.stats.bootstrap: it draws the same indices from this generator, but its interval is NaN as soon as
    # one draw's statistic is (a draw of artworks without a labelled pixel), where this one leaves such draws out.
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_sources, size=(n_resamples, n_sources))
    weights = np.zeros((n_resamples, n_sources), dtype=np.int64)  # how often each source is drawn
    np.add.at(weights, (np.arange(n_resamples)[:, None], draws), 1)

    def dataset_miou(weight: np.ndarray) -> np.ndarray:  # (draws, sources) -> (draws,) for A - B
        mious = [metrics.mean_iou(metrics.iou_per_class(*np.einsum("rs,ksc->krc", weight, counts[name])))
                 for name in ("a", "b")]
        return mious[0] - mious[1]

    # einsum (not BLAS) keeps the float sums in one order: the same draws give the same bits
    with np.errstate(invalid="ignore", divide="ignore"):
        resampled = {
            "per_image_miou": np.einsum("rs,s->r", weights, difference_sum) / np.einsum("rs,s->r", weights, n_scored),
            "dataset_miou": dataset_miou(weights),
        }
    observed = {"per_image_miou": difference_sum.sum() / n_scored.sum() if n_scored.sum() else math.nan,
                "dataset_miou": float(dataset_miou(np.ones((1, n_sources), dtype=np.int64))[0])}
    tail = (1 - confidence) / 2
    result = {}
    for name, values in resampled.items():
        values = values[~np.isnan(values)]
        low, high = np.quantile(values, [tail, 1 - tail]) if len(values) else (math.nan, math.nan)
        result[name] = BootstrapDifference(name, float(observed[name]), float(low), float(high), n_sources,
                                           len(a), n_resamples, seed, confidence)
    return result
