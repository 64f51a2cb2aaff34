"""The classical floor for thin damage: a residual-threshold detector, and its threshold chosen on validation.

Dust, scratches, hairs and hairline cracks are 1-4 px marks brighter or darker than what surrounds them.
A 5x5 median of the luminance keeps the picture and drops such marks, so the residual (luminance minus its
median) is large where they are; a pixel is detected when ``|r| > k * sigma``, sigma the image's robust
noise level (1.4826 x the median absolute deviation of ``r``, the normal distribution's standard deviation
for Gaussian noise). The detector has one parameter, ``k``, and no notion of class: it says "a thin mark
here", which is scored against the thin classes together (:mod:`heritage.modeling.thin`). Any model that
is to be trusted with thin damage has to do better than this.

``k`` is chosen on the validation part only, never on test (:class:`ThresholdSweep`, :func:`choose_k`):
the value of :data:`K_GRID` with the highest thin-damage IoU on the validation images' labelled pixels.

The median runs in OpenCV (``cv2.medianBlur``: about 100x scipy.ndimage's ``median_filter`` on a 1 Mpx
float image, the same values, borders replicated as ``median_filter(mode="nearest")`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from heritage.data import taxonomy
from heritage.modeling.counts import SummedCounts

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma from R, G, B
MEDIAN_WINDOW = 5  # px: wider than the marks (1-4 px), narrow enough to follow the picture
MAD_TO_SIGMA = 1.4826  # sigma of a normal distribution = 1.4826 x its median absolute deviation
SIGMA_FLOOR = 0.5  # grey levels: a flat image (MAD 0) still needs a mark of at least k/2 levels
# The thresholds tried on validation, in units of sigma: from "noise detected everywhere" to "only stark marks".
K_GRID: tuple[float, ...] = tuple(float(k) for k in np.arange(2.0, 16.01, 0.5))
THIN_IDS: tuple[int, ...] = tuple(taxonomy.CLASS_IDS[name] for name in taxonomy.THIN_CLASSES)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 luma of an (H, W, 3) RGB image (uint8 or float, 0-255)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    # channel by channel: 8 bytes per pixel at most, not a float copy of all three (12) on a large scan
    luma = rgb[..., 0].astype(np.float32) * np.float32(LUMA_WEIGHTS[0])
    for channel in (1, 2):
        luma += rgb[..., channel] * np.float32(LUMA_WEIGHTS[channel])
    return luma


def residual(rgb: np.ndarray) -> np.ndarray:
    """Luminance minus its MEDIAN_WINDOW x MEDIAN_WINDOW median (float32, grey levels; borders replicated)."""
    import cv2

    luma = luminance(rgb)
    luma -= cv2.medianBlur(luma, MEDIAN_WINDOW)
    return luma


def robust_sigma(values: np.ndarray) -> float:
    """MAD_TO_SIGMA x the median absolute deviation of ``values``, at least SIGMA_FLOOR."""
    values = np.asarray(values, dtype=np.float32).ravel()
    mad = float(np.median(np.abs(values - np.median(values))))
    return max(MAD_TO_SIGMA * mad, SIGMA_FLOOR)


def scores(rgb: np.ndarray) -> np.ndarray:
    """``|r| / sigma`` per pixel (float32): the detector says "thin mark" where it exceeds ``k``."""
    r = residual(rgb)
    sigma = np.float32(robust_sigma(r))
    np.abs(r, out=r)
    r /= sigma
    return r


def detect(rgb: np.ndarray, k: float) -> np.ndarray:
    """(H, W) bool mask of the pixels whose residual exceeds ``k`` robust sigmas: ``|r| > k sigma``."""
    return scores(rgb) > k


def thin_truth(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, thin) bool masks of a fine mask: labelled pixels (not Background), and those of a thin class."""
    mask = np.asarray(mask)
    return mask != taxonomy.IGNORE_INDEX, np.isin(mask, THIN_IDS)


# -- choosing k on the validation part -----------------------------------------------------------------


class ThresholdSweep(SummedCounts):
    """Thin-damage counts of the detector at every k of ``grid`` at once, fed image by image.

    For each k: ``hits`` (labelled thin pixels detected) and ``detected`` (labelled pixels detected), and
    ``thin`` (labelled thin pixels): IoU(k) = hits / (thin + detected - hits). One ``|r| / sigma`` map per
    image serves every k.
    """

    def __init__(self, grid: Iterable[float] = K_GRID) -> None:
        self.grid = np.asarray(sorted(grid), dtype=np.float32)
        if self.grid.size == 0:
            raise ValueError("ThresholdSweep needs at least one k")
        super().__init__(hits=self.grid.shape, detected=self.grid.shape, thin=(), n_images=())

    def update(self, picture: np.ndarray, mask: np.ndarray) -> None:
        """Add one image (RGB picture and its fine mask, the same size: the scored pixels)."""
        self.add_scores(scores(picture), mask)

    def add_scores(self, values: np.ndarray, mask: np.ndarray) -> None:
        """Add one image's (H, W) detection scores (a pixel is detected at threshold t where its score > t) and
        its fine mask: the filter's ``|r| / sigma``, or any other score swept the same way."""
        labelled, thin = thin_truth(mask)
        values = np.asarray(values)
        if labelled.shape != values.shape[:2]:
            raise ValueError(f"scores {values.shape[:2]} and mask {labelled.shape} differ in size")
        self.counts["detected"] += self._above(values[labelled])
        self.counts["hits"] += self._above(values[thin])
        self.counts["thin"] += int(thin.sum())
        self.counts["n_images"] += 1

    def _above(self, values: np.ndarray) -> np.ndarray:
        """How many of ``values`` exceed each k of the grid."""
        below = np.searchsorted(self.grid, values, side="left")  # how many grid values are < each value
        per_slot = np.bincount(below, minlength=len(self.grid) + 1)
        return np.cumsum(per_slot[::-1])[::-1][1:]  # values above grid[j]: slots j+1 and up

    def ious(self) -> np.ndarray:
        """Thin-damage IoU at each k (NaN where neither thin pixels nor detections: undefined)."""
        hits, detected = self.counts["hits"].astype(np.float64), self.counts["detected"].astype(np.float64)
        union = float(self.counts["thin"]) + detected - hits
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, hits / union, np.nan)

    def best_index(self) -> int | None:
        """The grid index with the highest thin-damage IoU (the largest threshold on a tie: fewer detections for
        the same score); None when the images hold no thin pixel (the IoU cannot choose)."""
        if int(self.counts["n_images"]) == 0:
            raise ValueError(f"{type(self).__name__}: no image was added; nothing can be chosen")
        if int(self.counts["thin"]) == 0:
            return None
        scored = np.nan_to_num(self.ious(), nan=-1.0)
        return int(np.flatnonzero(scored == scored.max())[-1])

    def choice(self) -> "KChoice":
        """The k with the highest thin-damage IoU (:meth:`best_index`); when the images hold no thin pixel, the
        grid's largest k, and ``rule`` says so."""
        index = self.best_index()
        if index is None:
            index = len(self.grid) - 1
            rule = ("the validation images hold no thin-damage pixel, so the IoU cannot choose: the grid's largest k "
                    "(the fewest detections)")
        else:
            rule = ("the grid's k with the highest thin-damage IoU on the validation images' labelled pixels "
                    "(ties: the largest k)")
        return KChoice(k=float(self.grid[index]), rule=rule, grid=[float(k) for k in self.grid],
                       val_iou=[None if np.isnan(v) else float(v) for v in self.ious()],
                       n_images=int(self.counts["n_images"]), thin_pixels=int(self.counts["thin"]))


@dataclass(frozen=True)
class KChoice:
    """The detector's threshold and how it was chosen (``metrics.json``'s ``test.thin.filter.k_choice``)."""

    k: float
    rule: str
    grid: list[float]
    val_iou: list[float | None]  # thin-damage IoU on validation at each k of the grid
    n_images: int  # validation images swept
    thin_pixels: int  # labelled thin-damage pixels among them

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "chosen_on": "val", "rule": self.rule, "n_images": self.n_images,
                "thin_pixels": self.thin_pixels, "grid": self.grid, "val_iou": self.val_iou}


def choose_k(images: Iterable[tuple[np.ndarray, np.ndarray]], grid: Iterable[float] = K_GRID) -> KChoice:
    """:class:`ThresholdSweep`'s choice over ``images``, (RGB picture, fine mask) pairs of the validation part."""
    sweep = ThresholdSweep(grid)
    for picture, mask in images:
        sweep.update(picture, mask)
    return sweep.choice()
