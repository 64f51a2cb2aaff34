"""The thin recipe's operating point: the thin classes' probabilities divided by a factor chosen on validation.

The recipe's class weights, crops centred on rare classes and recall term push a model towards predicting thin
damage too often (high recall, low precision; bench/results/thin-calibration-*.json). The residual filter's
threshold is chosen on the validation part for the highest thin-damage IoU; ``calibrate_thin`` chooses the
model's operating point the same way: the thin classes' probabilities divided by a factor ``f`` of
:data:`FACTORS` and renormalised, a shift of their prior (the post-hoc logit adjustment of long-tail
learning: ``log f`` subtracted from their log-probabilities). Which thin class a pixel gets does not change,
only whether it gets one.

At ``f`` the argmax names a thin class exactly where the largest thin-class probability exceeds ``f`` times the
largest other one, so one odds map per image (:func:`thin_odds`) serves every factor: :class:`FactorSweep` counts
them as the filter's :class:`~heritage.modeling.residual.ThresholdSweep` counts ``|r| / sigma``. The chosen
factor is recorded in ``metrics.json`` (``thin_factor``) and applied wherever the run predicts (its test
evaluation, ``predict``, the galleries) through :attr:`heritage.modeling.tiling.SlidingWindow.class_scale`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from heritage.data import taxonomy
from heritage.modeling import residual

if TYPE_CHECKING:
    import torch

# From "the argmax as trained" to "a thin class only where it is 64 times the likeliest other class".
FACTORS: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
METRICS_KEY = "thin_factor"  # metrics.json's record of the choice


def thin_odds(probabilities: torch.Tensor) -> np.ndarray:
    """(H, W) float32: the largest thin-class probability over the largest other one, of (classes, H, W)
    probabilities (the fine classes). A pixel's argmax is a thin class at factor ``f`` where this exceeds ``f``."""
    import torch

    thin = torch.zeros(probabilities.shape[0], dtype=torch.bool, device=probabilities.device)
    thin[list(residual.THIN_IDS)] = True
    odds = probabilities[thin].amax(0) / probabilities[~thin].amax(0).clamp_min(1e-30)
    return odds.float().cpu().numpy()


def class_scale(factor: float) -> tuple[float, ...] | None:
    """The per-class multipliers of the probabilities at ``factor`` (:attr:`SlidingWindow.class_scale`), None
    at 1 (the model's own probabilities)."""
    if not factor > 0:
        raise ValueError(f"thin factor {factor!r}: must be positive")
    if factor == 1.0:
        return None
    return tuple(1.0 / factor if class_id in residual.THIN_IDS else 1.0 for class_id in range(taxonomy.NUM_CLASSES))


def recorded_factor(metrics: Mapping[str, Any]) -> float:
    """The thin factor a run's ``metrics.json`` records (1: a run that chose none)."""
    return float(metrics.get(METRICS_KEY, {}).get("factor", 1.0))


class FactorSweep(residual.ThresholdSweep):
    """Thin-damage counts of a model's argmax at every factor of ``grid``, fed its :func:`thin_odds` maps."""

    def __init__(self, grid: tuple[float, ...] | None = None) -> None:
        super().__init__(FACTORS if grid is None else grid)

    def choice(self) -> FactorChoice:
        """The factor with the highest thin-damage IoU (ties: the largest, fewer thin pixels for the same score);
        1 when the images hold no thin pixel (the argmax as trained), and ``rule`` says so."""
        index = self.best_index()
        if index is None:
            factor = 1.0
            rule = ("the validation images hold no thin-damage pixel, so the IoU cannot choose: factor 1 (the "
                    "model's own probabilities)")
        else:
            factor = float(self.grid[index])
            rule = ("the grid's factor with the highest thin-damage IoU on the validation images' labelled pixels "
                    "(ties: the largest factor)")
        return FactorChoice(factor=factor, rule=rule, grid=[float(f) for f in self.grid],
                            val_iou=[None if np.isnan(v) else float(v) for v in self.ious()],
                            n_images=int(self.counts["n_images"]), thin_pixels=int(self.counts["thin"]))


@dataclass(frozen=True)
class FactorChoice:
    """The thin factor and how it was chosen (``metrics.json``'s ``thin_factor``)."""

    factor: float
    rule: str
    grid: list[float]
    val_iou: list[float | None]  # the model's thin-damage IoU on validation at each factor of the grid
    n_images: int  # validation images swept
    thin_pixels: int  # labelled thin-damage pixels among them

    def to_json(self) -> dict[str, Any]:
        return {"factor": self.factor, "chosen_on": "val", "rule": self.rule,
                "definition": ("the thin classes' probabilities divided by the factor (renormalised) before the "
                               "argmax, in the test evaluation and in predict"),
                "n_images": self.n_images, "thin_pixels": self.thin_pixels, "grid": self.grid,
                "val_iou": self.val_iou}
