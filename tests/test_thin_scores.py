"""Thin-damage scores: the union IoU of model and filter, per-class filter recall/IoU, the tolerant clIoU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from heritage.data import taxonomy
from heritage.data.working import EvaluationImage
from heritage.modeling import metrics, residual, thin

IDS = taxonomy.CLASS_IDS
IGNORE = taxonomy.IGNORE_INDEX


def line(size: int, column: int, width: int = 1) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[4:-4, column:column + width] = True
    return mask


def omnicrack_counts(truth_lines: np.ndarray, predicted_lines: np.ndarray, tolerance: int) -> tuple[int, int, int]:
    """OmniCrack30k's apply_tolerance on centrelines, written out with a distance transform: TP, FP, FN."""
    from scipy.ndimage import distance_transform_edt

    near_predicted = distance_transform_edt(~predicted_lines) <= tolerance
    near_truth = distance_transform_edt(~truth_lines) <= tolerance
    true_positive = int((truth_lines & near_predicted).sum())
    return true_positive, int((predicted_lines & ~near_truth).sum()), int(truth_lines.sum()) - true_positive


def test_cliou_forgives_an_offset_within_the_tolerance_and_no_more():
    truth = line(64, 20, width=3)  # a 3 px wide scratch: its centreline is one column
    lines = thin.centerline(truth)
    assert lines.sum() > 0 and lines[:, 21].sum() == lines.sum()
    assert list(thin.centerline_counts(truth, line(64, 23, width=3), tolerance=4)) == [lines.sum(), 0, 0]
    shifted = thin.centerline_counts(truth, line(64, 28, width=3), tolerance=4)  # 8 px off
    assert shifted[0] == 0 and shifted[1] > 0 and shifted[2] == lines.sum()
    assert list(thin.centerline_counts(truth, np.zeros_like(truth))) == [0, 0, lines.sum()]
    assert list(thin.centerline_counts(np.zeros_like(truth), truth)) == [0, lines.sum(), 0]


def test_cliou_counts_agree_with_omnicracks_definition_on_irregular_masks():
    rng = np.random.default_rng(3)
    truth = np.zeros((80, 80), dtype=bool)
    predicted = np.zeros_like(truth)
    for _ in range(12):  # short random strokes and specks
        y, x = rng.integers(2, 70, 2)
        truth[y:y + rng.integers(1, 9), x:x + rng.integers(1, 3)] = True
        y, x = np.clip([y + rng.integers(-3, 4), x + rng.integers(-3, 4)], 0, 78)
        predicted[y:y + rng.integers(1, 9), x:x + rng.integers(1, 4)] = True
    expected = omnicrack_counts(thin.centerline(truth), thin.centerline(predicted), 4)
    assert tuple(thin.centerline_counts(truth, predicted, 4)) == expected


def scored_case(marked_image, k: float = 5.0) -> tuple[thin.ThinDamageScores, EvaluationImage, np.ndarray]:
    picture, mask = marked_image()
    mask[:, :6] = IGNORE
    mask[50:60, 10:20] = IDS["Staining"]
    prediction = mask.copy()
    prediction[prediction == IGNORE] = IDS["Hair"]  # predictions on Background are never scored
    prediction[:, 31] = IDS["Scratch"]  # one column beside the scratch: a miss, strictly
    prediction[:, 30] = IDS["Clean"]
    prediction[10:12, 60:62] = IDS["Clean"]  # one speck missed
    image = EvaluationImage("x", picture, picture, mask)
    scores = thin.ThinDamageScores(k)
    scores.update(image, prediction)
    return scores, image, prediction


def test_model_scores_are_the_confusion_matrix_ones_and_the_filter_is_scored_on_the_same_pixels(marked_image):
    scores, image, prediction = scored_case(marked_image)
    result = scores.result()
    json.dumps(result)
    matrix = metrics.ConfusionMatrix()
    matrix.update(torch.from_numpy(prediction.astype(np.int64))[None], torch.from_numpy(image.mask.astype(np.int64))[None])
    per_class = matrix.compute()["per_class"]
    for name in taxonomy.THIN_CLASSES:
        assert result["per_class"][name]["model_iou"] == per_class[name]["iou"]
        assert result["per_class"][name]["support"] == per_class[name]["support"]
    labelled, thin_truth = image.mask != IGNORE, np.isin(image.mask, residual.THIN_IDS)
    predicted = np.isin(prediction, residual.THIN_IDS) & labelled
    assert result["model_iou"] == pytest.approx((thin_truth & predicted).sum() / (thin_truth | predicted).sum())
    found = residual.detect(image.picture, 5.0) & labelled
    assert result["filter_iou"] == pytest.approx((thin_truth & found).sum() / (thin_truth | found).sum())
    assert result["filter"]["k"] == 5.0 and result["support"] == thin_truth.sum()
    dust = image.mask == IDS["Dust"]
    false_alarms = (found & labelled & ~thin_truth).sum()
    assert result["per_class"]["Dust"]["filter_recall"] == pytest.approx((dust & found).sum() / dust.sum())
    assert result["per_class"]["Dust"]["filter_iou"] == pytest.approx(
        (dust & found).sum() / (dust.sum() + false_alarms))
    # The model missed the scratch by one column and one speck: strict IoU low, clIoU forgives the offset.
    assert result["per_class"]["Scratch"]["model_iou"] == 0.0
    assert result["per_class"]["Scratch"]["model_cliou"] == 1.0
    assert result["model_beats_filter"] == (result["model_iou"] > result["filter_iou"])
    assert result["per_class"]["Hair"] == {"support": 0, "model_iou": None, "model_cliou": None,
                                           "filter_recall": None, "filter_iou": None}  # absent: Background ignored
    assert result["tolerant_score"]["label"] == "clIoU (4 px)"


def test_scores_merge_as_sums_and_repeat_exactly(marked_image):
    first, image, prediction = scored_case(marked_image)
    second, _, _ = scored_case(marked_image)
    whole = thin.ThinDamageScores(5.0)
    whole.update(image, prediction)
    whole.update(image, prediction)
    first.merge(second)
    assert first.result() == whole.result()
    assert int(whole.counts["n_images"]) == 2
    with pytest.raises(ValueError, match="differ in shape"):
        whole.update(image, prediction[:-1])


def test_the_readme_worked_example():
    truth = np.zeros((96, 96), dtype=bool)
    truth[:, 30] = True  # a scratch annotated as a 1 px line, 96 px long
    predicted = np.roll(truth, 1, axis=1)  # predicted one column to its right
    assert (truth & predicted).sum() == 0 and (truth | predicted).sum() == 192  # strict IoU 0 / 192
    assert list(thin.centerline_counts(truth, predicted)) == [96, 0, 0]  # clIoU (4 px) 96 / 96 = 1
    assert list(thin.centerline_counts(truth, np.roll(truth, 8, axis=1))) == [0, 96, 96]  # 8 px away: 0
