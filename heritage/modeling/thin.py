"""Thin damage scored as one class, against the residual filter, and with a tolerance for 1 px offsets.

Dust, scratches, hairs and hairline cracks (``taxonomy.THIN_CLASSES``) are 1-4 px wide, so one pixel of
offset between annotation and prediction halves a strict IoU. :class:`ThinDamageScores`, fed image by image
on the pixels the model is scored on, records three things beside the per-class strict IoU:

- **thin-damage IoU**: the union of the thin classes as one class against every other labelled pixel
  (Background is never scored), for the model and for the residual filter (:mod:`heritage.modeling.residual`,
  its k chosen on validation). The filter is the floor a model must beat on thin damage, as all-Clean is
  for mIoU. Per thin class, the filter (which names no class) has a recall (the class's pixels it detects) and
  a class-agnostic IoU: detections on the class are hits, detections on labelled non-thin pixels false alarms,
  detections on the other thin classes neither.
- **clIoU at TOLERANCE_PX px** (:func:`centerline_counts`), the centreline IoU with a tolerance as
  OmniCrack30k reports it (Benz and Rodehorst, "OmniCrack30k: a benchmark for crack segmentation and the
  reasonable effectiveness of transfer learning", CVPR Workshops 2024, mean clIoU at 4 px; its evaluation code,
  ben-z-original/omnicrack30k ``src/omnicrack30k/evaluation.py``, ``apply_tolerance``): truth and prediction
  are thinned to 1 px centrelines; a truth centreline pixel within the tolerance (a disk of radius 4) of a
  predicted one is a true positive, one that is not a false negative; a predicted centreline pixel not within
  the tolerance of a truth centreline is a false positive; clIoU = TP / (TP + FP + FN), the counts pooled over
  the images (their ``jaccard_score`` over the concatenated pixels). Per thin class for the model, and for
  thin damage as one for the model and the filter. Centrelines here are skimage's ``skeletonize`` (Zhang's
  thinning); OmniCrack30k thins with ``skimage.morphology.thin``, also 1 px wide, about 10x slower on large masks.
  It is reported beside the strict IoU and labelled with its tolerance; verdicts use the strict IoU.

All state is summable counts (:class:`heritage.modeling.counts.SummedCounts`): shards of the images combine by
:meth:`~heritage.modeling.counts.SummedCounts.merge`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from heritage.data import taxonomy
from heritage.modeling import residual
from heritage.modeling.counts import SummedCounts

if TYPE_CHECKING:  # the data stage's torch datasets stay out of this torch-free module
    from heritage.data.working import EvaluationImage

TOLERANCE_PX = 4  # OmniCrack30k's clIoU tolerance
TOLERANT_SCORE = {
    "name": "clIoU", "tolerance_px": TOLERANCE_PX, "label": f"clIoU ({TOLERANCE_PX} px)",
    "definition": (f"centreline IoU with a {TOLERANCE_PX} px tolerance: truth and prediction thinned to 1 px "
                   "centrelines; TP = truth centreline pixels within the tolerance of a predicted one, FN = the other "
                   "truth centreline pixels, FP = predicted centreline pixels not within the tolerance of a truth one; "
                   "TP / (TP + FP + FN), counts pooled over the test images"),
    "source": ("Benz and Rodehorst, OmniCrack30k, CVPR Workshops 2024 (clIoU at 4 px); "
               "ben-z-original/omnicrack30k src/omnicrack30k/evaluation.py (apply_tolerance)"),
}
THIN_DEFINITION = (f"thin damage: {', '.join(taxonomy.THIN_CLASSES)} as one class against every other labelled "
                   "pixel (Background not scored)")
FILTER_DEFINITION = (f"residual filter: luminance minus its {residual.MEDIAN_WINDOW}x{residual.MEDIAN_WINDOW} "
                     f"median, |r| > k x {residual.MAD_TO_SIGMA} x MAD (k chosen on the validation part); "
                     "per class, recall = the class's pixels detected, IoU = those / (the class's pixels + "
                     "detections on labelled non-thin pixels)")


def centerline(mask: np.ndarray) -> np.ndarray:
    """The 1 px centrelines of a bool mask (Zhang's thinning), computed on its bounding box only."""
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, dtype=bool)
    lines = np.zeros_like(mask)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
        lines[box] = skeletonize(mask[box])
    return lines


def within(lines: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels within ``tolerance`` px (a disk, as OmniCrack30k's ``disk(tol)`` dilation) of a ``lines`` pixel."""
    import cv2
    from skimage.morphology import disk

    return cv2.dilate(lines.astype(np.uint8), disk(tolerance).astype(np.uint8)).astype(bool)


def centerline_counts(truth: np.ndarray, predicted: np.ndarray, tolerance: int = TOLERANCE_PX,
                      truth_lines: np.ndarray | None = None) -> np.ndarray:
    """``[TP, FP, FN]`` of the tolerant centreline match of two bool masks (the module's clIoU definition).

    ``truth_lines``: ``centerline(truth)`` when the caller already has it (one truth serves several predictions).
    """
    truth_lines = centerline(truth) if truth_lines is None else truth_lines
    predicted_lines = centerline(predicted)
    n_truth, n_predicted = int(truth_lines.sum()), int(predicted_lines.sum())
    if n_truth == 0 or n_predicted == 0:
        return np.array([0, n_predicted, n_truth], dtype=np.int64)
    true_positive = int((truth_lines & within(predicted_lines, tolerance)).sum())
    false_positive = n_predicted - int((predicted_lines & within(truth_lines, tolerance)).sum())
    return np.array([true_positive, false_positive, n_truth - true_positive], dtype=np.int64)


class ThinDamageScores(SummedCounts):
    """The thin-damage record of a test part (``metrics.json``'s ``test.thin``), fed one image at a time.

    ``update(image, prediction)``: ``image`` has ``picture`` (RGB) and ``mask`` (fine ids, 255 Background) at
    the scored resolution (a :class:`heritage.data.working.EvaluationImage`), ``prediction`` the model's fine
    ids on the same pixels. ``k`` is the filter's threshold, chosen on validation (:func:`residual.choose_k`).
    Counts: ``*_union`` = [TP, truth, predicted] pixels of thin damage as one; ``model_class`` the same per
    thin class; ``filter_hits`` per thin class, its pixels the filter detected; ``*_cl`` = clIoU's [TP, FP, FN]
    (model: per thin class, then the union; filter: the union).
    """

    def __init__(self, k: float, tolerance: int = TOLERANCE_PX) -> None:
        self.k = float(k)
        self.tolerance = tolerance
        n = len(residual.THIN_IDS)
        super().__init__(model_union=(3,), filter_union=(3,), model_class=(n, 3), filter_hits=(n,),
                         model_cl=(n + 1, 3), filter_cl=(3,), n_images=())

    def update(self, image: EvaluationImage, prediction: np.ndarray) -> None:
        mask, prediction = np.asarray(image.mask), np.asarray(prediction)
        if prediction.shape != mask.shape:
            raise ValueError(f"prediction {prediction.shape} and mask {mask.shape} differ in shape")
        labelled, thin = residual.thin_truth(mask)
        predicted_thin = np.isin(prediction, residual.THIN_IDS) & labelled
        found = residual.detect(image.picture, self.k) & labelled
        self.counts["model_union"] += _overlap(thin, predicted_thin)
        self.counts["filter_union"] += _overlap(thin, found)
        for index, class_id in enumerate(residual.THIN_IDS):
            truth = mask == class_id
            predicted = (prediction == class_id) & labelled
            self.counts["model_class"][index] += _overlap(truth, predicted)
            self.counts["filter_hits"][index] += int((truth & found).sum())
            self.counts["model_cl"][index] += centerline_counts(truth, predicted, self.tolerance)
        thin_lines = centerline(thin)
        self.counts["model_cl"][-1] += centerline_counts(thin, predicted_thin, self.tolerance, thin_lines)
        self.counts["filter_cl"] += centerline_counts(thin, found, self.tolerance, thin_lines)
        self.counts["n_images"] += 1

    def result(self) -> dict[str, Any]:
        """The ``test.thin`` block: thin-damage IoU of model and filter, clIoU, per thin class (ratios under
        ``metrics.CONVENTION``: null where the class is in neither truth nor prediction)."""
        model, found = self.counts["model_union"], self.counts["filter_union"]
        model_iou, filter_iou = _iou(*model), _iou(*found)
        false_alarms = int(found[2] - found[0])  # filter detections on labelled non-thin pixels
        per_class = {}
        for index, name in enumerate(taxonomy.THIN_CLASSES):
            true_positive, truth, predicted = (int(v) for v in self.counts["model_class"][index])
            hits = int(self.counts["filter_hits"][index])
            per_class[name] = {
                "support": truth, "model_iou": _iou(true_positive, truth, predicted),
                "model_cliou": _cl_iou(self.counts["model_cl"][index]),
                # null without a pixel of the class: the filter names no class, so it cannot be wrong about one absent
                "filter_recall": _ratio(hits, truth),
                "filter_iou": _iou(hits, truth, hits + false_alarms) if truth else None}
        return {
            "definition": THIN_DEFINITION, "classes": list(taxonomy.THIN_CLASSES), "n_images": int(self.counts["n_images"]),
            "support": int(model[1]), "model_iou": model_iou, "filter_iou": filter_iou,
            "model_beats_filter": None if model_iou is None or filter_iou is None else model_iou > filter_iou,
            "model": {**_scores(*model), "cliou": _cl_iou(self.counts["model_cl"][-1])},
            "filter": {**_scores(*found), "cliou": _cl_iou(self.counts["filter_cl"]), "k": self.k,
                       "definition": FILTER_DEFINITION},
            "tolerant_score": {**TOLERANT_SCORE, "tolerance_px": self.tolerance,
                               "label": f"{TOLERANT_SCORE['name']} ({self.tolerance} px)"},
            "per_class": per_class,
        }


def _overlap(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.array([(truth & predicted).sum(), truth.sum(), predicted.sum()], dtype=np.int64)


def _iou(true_positive: float, truth: float, predicted: float) -> float | None:
    union = float(truth) + float(predicted) - float(true_positive)
    return float(true_positive) / union if union > 0 else None


def _cl_iou(counts: np.ndarray) -> float | None:
    true_positive, false_positive, false_negative = (int(v) for v in counts)
    total = true_positive + false_positive + false_negative
    return true_positive / total if total > 0 else None


def _scores(true_positive: float, truth: float, predicted: float) -> dict[str, float | None]:
    """IoU, precision and recall under ``metrics.CONVENTION``: null when neither truth nor prediction holds a
    pixel, else a ratio with a zero denominator is 0."""
    if _iou(true_positive, truth, predicted) is None:
        return {"iou": None, "precision": None, "recall": None}
    return {"iou": _iou(true_positive, truth, predicted), "precision": _ratio(true_positive, predicted) or 0.0,
            "recall": _ratio(true_positive, truth) or 0.0}


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator > 0 else None
