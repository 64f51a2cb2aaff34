"""The thin factor: one odds map per image counts the argmax at every factor, chosen on validation, applied by the tiler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from heritage.data import taxonomy
from heritage.modeling import residual, thin_prior, tiling

CPU = torch.device("cpu")
THIN = list(residual.THIN_IDS)


def random_probabilities(seed: int, shape: tuple[int, int] = (40, 50)) -> torch.Tensor:
    """(classes, H, W) probabilities whose thin classes are often, but not always, the likeliest."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((taxonomy.NUM_CLASSES, *shape), generator=generator) * 2
    logits[THIN] += 1.5
    return torch.softmax(logits, dim=0)


def random_mask(seed: int, shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = rng.choice([taxonomy.CLASS_IDS["Clean"], *THIN, taxonomy.CLASS_IDS["Peel"]], size=shape).astype(np.uint8)
    mask[:3] = taxonomy.IGNORE_INDEX  # Background is never scored
    return mask


def divided_argmax_counts(probabilities: torch.Tensor, mask: np.ndarray, factor: float) -> tuple[int, int]:
    """[hits, detected] of the argmax with the thin classes' probabilities divided by ``factor``, written out."""
    scaled = probabilities.clone()
    scaled[THIN] /= factor
    predicted = np.isin(scaled.argmax(0).numpy(), THIN)
    labelled, thin = residual.thin_truth(mask)
    return int((predicted & thin).sum()), int((predicted & labelled).sum())


def test_the_odds_map_counts_the_divided_argmax_at_every_factor():
    sweep = thin_prior.FactorSweep()
    expected = np.zeros((len(thin_prior.FACTORS), 2), dtype=np.int64)
    for seed in range(3):
        probabilities, mask = random_probabilities(seed), random_mask(seed)
        sweep.add_scores(thin_prior.thin_odds(probabilities), mask)
        expected += [divided_argmax_counts(probabilities, mask, factor) for factor in thin_prior.FACTORS]
    assert list(sweep.counts["hits"]) == list(expected[:, 0]) and list(sweep.counts["detected"]) == list(expected[:, 1])
    assert expected[0, 1] > expected[-1, 1] > 0  # the grid spans real changes: fewer thin pixels at larger factors


def test_the_choice_is_the_factor_with_the_best_validation_iou_and_one_without_thin_damage():
    sweep = thin_prior.FactorSweep()
    probabilities, mask = random_probabilities(0), random_mask(0)
    sweep.add_scores(thin_prior.thin_odds(probabilities), mask)
    choice = sweep.choice()
    ious = np.nan_to_num(sweep.ious(), nan=-1)
    assert choice.factor == thin_prior.FACTORS[int(np.flatnonzero(ious == ious.max())[-1])]
    assert choice.to_json()["chosen_on"] == "val" and choice.val_iou == pytest.approx(list(sweep.ious()))
    blank = thin_prior.FactorSweep()
    blank.add_scores(thin_prior.thin_odds(probabilities), np.full_like(mask, taxonomy.CLASS_IDS["Clean"]))
    assert blank.choice().factor == 1.0 and "no thin-damage pixel" in blank.choice().rule
    with pytest.raises(ValueError, match="no image"):
        thin_prior.FactorSweep().choice()


def test_class_scale_divides_the_thin_classes_only_and_is_none_at_one():
    assert thin_prior.class_scale(1.0) is None
    scale = thin_prior.class_scale(8.0)
    assert [index for index, value in enumerate(scale) if value == 1 / 8] == THIN
    assert all(scale[index] == 1.0 for index in range(taxonomy.NUM_CLASSES) if index not in THIN)
    assert thin_prior.recorded_factor({}) == 1.0 and thin_prior.recorded_factor({"thin_factor": {"factor": 8.0}}) == 8
    with pytest.raises(ValueError, match="positive"):
        thin_prior.class_scale(0.0)


class FixedProbabilities(nn.Module):
    """Log-probabilities of a fixed (classes, H, W) map, for a whole-image tile: the tiler's softmax gives them back."""

    def __init__(self, probabilities: torch.Tensor) -> None:
        super().__init__()
        self.log_probabilities = torch.log(probabilities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_probabilities[None].expand(x.shape[0], -1, -1, -1)


def test_the_sliding_window_applies_the_class_scale_as_a_renormalised_prior_shift():
    probabilities = random_probabilities(1, (32, 32))
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    model = FixedProbabilities(probabilities)
    plain = tiling.predict_labels(model, image, tiling.SlidingWindow(tile=32), CPU, progress=False)
    window = tiling.SlidingWindow(tile=32, class_scale=thin_prior.class_scale(6.0))
    shifted = next(tiling.iter_probability_bands(model, image, window, CPU, progress=False))[1]
    expected = probabilities.clone()
    expected[THIN] /= 6.0
    torch.testing.assert_close(shifted, expected / expected.sum(0, keepdim=True), atol=1e-5, rtol=1e-5)
    labels = tiling.predict_labels(model, image, window, CPU, progress=False)
    assert np.isin(labels, THIN).sum() < np.isin(plain, THIN).sum()  # fewer thin pixels, none new
    assert not (np.isin(labels, THIN) & ~np.isin(plain, THIN)).any()
    with pytest.raises(ValueError, match="positive"):
        tiling.SlidingWindow(class_scale=(1.0, 0.0))
    with pytest.raises(ValueError, match="class scale of 2 classes"):
        next(tiling.iter_probability_bands(model, image, tiling.SlidingWindow(tile=32, class_scale=(1.0, 1.0)), CPU,
                                           progress=False))
