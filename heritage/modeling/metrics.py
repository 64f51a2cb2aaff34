"""Dataset-level segmentation metrics from one confusion matrix accumulated on the device.

The matrix sums every labelled pixel of the evaluation set; IoU, precision, recall and F1 are
computed once from it at the end. Averaging per-batch scores instead would weight small batches
like large ones and drop classes a batch happens not to contain. The seeds' own convention (Background
scored as Lightleak, absent classes as 0 in a mean over all 16) is :class:`SeedsMeanIoU`, kept apart
and named so that it is only ever reported as theirs.

Conventions, written into every result as ``convention``:

- Background (255) pixels are ignored.
- A class absent from both ground truth and prediction is *absent*: ``iou`` (and precision,
  recall, F1) are null, ``present`` is false, and it does not enter the mean. A class that is only
  predicted has IoU 0 and counts.
- For a present class, a ratio with a zero denominator is 0 (e.g. precision of a never-predicted class).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from heritage.data import taxonomy

CONVENTION = (
    "IoU per class over the whole evaluation set; classes absent from both ground truth and "
    "prediction are 'absent' (null) and excluded from the mean"
)

# Beside the dataset-level ``miou`` of evaluations over whole images (evaluation.evaluate_images).
PER_IMAGE_CONVENTION = (
    "miou is dataset-level (one confusion matrix over every pixel of the set); per_image_miou is the mean over "
    "images of each image's mIoU over the classes present in its ground truth or prediction"
)


class ConfusionMatrix:
    """Pixel confusion matrix (rows: ground truth, columns: prediction) kept on ``device``.

    ``update`` takes logits ``(B, C, H, W)`` or predicted ids ``(B, H, W)`` and the target
    ``(B, H, W)``; it launches device work only (no host synchronisation). Target values other than
    ``0..C-1`` and ``ignore_index``, or predictions outside ``0..C-1``, raise an index error.
    """

    def __init__(self, num_classes: int = taxonomy.NUM_CLASSES, ignore_index: int = taxonomy.IGNORE_INDEX,
                 device: str | torch.device = "cpu", class_names: Sequence[str] | None = None) -> None:
        if class_names is None:
            if num_classes != taxonomy.NUM_CLASSES:
                raise ValueError(f"class_names are needed for {num_classes} classes "
                                 f"(the default names are the {taxonomy.NUM_CLASSES} fine classes)")
            class_names = taxonomy.CLASS_NAMES
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names given for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        # Normal tensors even when built under inference mode, so that they can be reset outside
        # it. One extra row collects ignored pixels, so that updates need no
        # boolean indexing (a host sync).
        with torch.inference_mode(False):
            self._counts = torch.zeros(num_classes + 1, num_classes, dtype=torch.int64, device=device)
            self._n_images = torch.zeros((), dtype=torch.int64, device=device)

    @property
    def device(self) -> torch.device:
        return self._counts.device

    @property
    def matrix(self) -> torch.Tensor:
        """The ``(C, C)`` counts accumulated so far (ground truth x prediction), on the device."""
        return self._counts[: self.num_classes]

    def reset(self) -> None:
        self._counts.zero_()
        self._n_images.zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the accumulated counts: summed over disjoint images (the ranks of a distributed
        evaluation), they are the counts of all of them."""
        return {"counts": self._counts.clone(), "n_images": self._n_images.clone()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._counts.copy_(state["counts"])
        self._n_images.copy_(state["n_images"])

    @torch.no_grad()
    def update(self, logits_or_preds: torch.Tensor, target: torch.Tensor, n_images: int | None = None) -> None:
        """``n_images``: images the update completes (default the batch size; 0 for a band of rows of an
        image whose other bands come in other updates)."""
        preds = self._predictions(logits_or_preds, target)
        target = target.to(self.device, non_blocking=True)
        rows = torch.where(target == self.ignore_index, self.num_classes, target).reshape(-1).long()
        cols = preds.to(self.device, non_blocking=True).reshape(-1).long()
        self._counts.index_put_((rows, cols), torch.ones_like(rows), accumulate=True)
        self._n_images += target.shape[0] if n_images is None else n_images

    def compute(self) -> dict:
        """mIoU, pixel accuracy and per-class scores in the ``test`` shape of ``metrics.json``."""
        counts = self.matrix.double().cpu()
        labelled = counts.sum()
        if labelled == 0:
            raise ValueError("no labelled pixel was accumulated: every target pixel was ignore_index "
                             f"({self.ignore_index}) or update() was never called")
        true_positive = counts.diag()
        support = counts.sum(dim=1)
        predicted = counts.sum(dim=0)
        union = support + predicted - true_positive
        per_class = {}
        ious = []
        for index, name in enumerate(self.class_names):
            if union[index] == 0:
                per_class[name] = {"iou": None, "precision": None, "recall": None, "f1": None,
                                   "support": 0, "present": False}
                continue
            iou = _ratio(true_positive[index], union[index])
            precision = _ratio(true_positive[index], predicted[index])
            recall = _ratio(true_positive[index], support[index])
            per_class[name] = {"iou": iou, "precision": precision, "recall": recall,
                               "f1": _ratio(2 * precision * recall, precision + recall),
                               "support": int(support[index]), "present": True}
            ious.append(iou)
        return {
            "miou": sum(ious) / len(ious),
            "pixel_accuracy": _ratio(true_positive.sum(), labelled),
            "n_images": int(self._n_images),
            "convention": CONVENTION,
            "per_class": per_class,
        }

    def _predictions(self, logits_or_preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits_or_preds.ndim == target.ndim + 1:
            if logits_or_preds.shape[1] != self.num_classes:
                raise ValueError(f"logits have {logits_or_preds.shape[1]} channels, expected {self.num_classes} "
                                 f"(logits {tuple(logits_or_preds.shape)})")
            preds = logits_or_preds.argmax(dim=1)
        elif logits_or_preds.is_floating_point():
            raise ValueError(f"predictions must be integer class ids, got {logits_or_preds.dtype}")
        else:
            preds = logits_or_preds
        if preds.shape != target.shape:
            raise ValueError(f"predictions {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape "
                             "(pass logits (B, C, H, W) or ids (B, H, W) at the target's resolution)")
        return preds


class HierarchicalMetrics:
    """Binary, coarse and fine confusion matrices of the hierarchical model, from the fine target.

    The coarse matrix only counts damage pixels (Clean maps to 255 in ``FINE_TO_COARSE``); fine
    predictions come from the fine head. ``fine`` is a full :class:`ConfusionMatrix` whose
    ``compute()`` gives the per-class ``test`` results.
    """

    def __init__(self, num_classes: int = taxonomy.NUM_CLASSES, ignore_index: int = taxonomy.IGNORE_INDEX,
                 device: str | torch.device = "cpu") -> None:
        self.binary = ConfusionMatrix(len(taxonomy.BINARY_NAMES), ignore_index, device, taxonomy.BINARY_NAMES)
        self.coarse = ConfusionMatrix(len(taxonomy.COARSE_NAMES), ignore_index, device, taxonomy.COARSE_NAMES)
        self.fine = ConfusionMatrix(num_classes, ignore_index, device)
        self._fine_to_binary = torch.as_tensor(taxonomy.FINE_TO_BINARY, dtype=torch.long, device=device)
        self._fine_to_coarse = torch.as_tensor(taxonomy.FINE_TO_COARSE, dtype=torch.long, device=device)

    def levels(self) -> dict[str, ConfusionMatrix]:
        return {"binary": self.binary, "coarse": self.coarse, "fine": self.fine}

    def update(self, outputs: dict[str, torch.Tensor], target: torch.Tensor, n_images: int | None = None) -> None:
        target = target.to(self.fine.device, non_blocking=True).long()
        self.binary.update(outputs["binary"], self._fine_to_binary[target], n_images)
        self.coarse.update(outputs["coarse"], self._fine_to_coarse[target], n_images)
        self.fine.update(outputs["fine"], target, n_images)

    def reset(self) -> None:
        for matrix in self.levels().values():
            matrix.reset()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Each level's :meth:`ConfusionMatrix.state_dict`, its names prefixed with the level."""
        return {f"{level}.{name}": value for level, matrix in self.levels().items()
                for name, value in matrix.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for level, matrix in self.levels().items():
            matrix.load_state_dict({name.removeprefix(f"{level}."): value for name, value in state.items()
                                    if name.startswith(f"{level}.")})

    def compute(self) -> dict[str, float]:
        """``{"binary_miou", "coarse_miou", "fine_miou"}``, the ``hierarchical`` block of metrics.json."""
        return {f"{level}_miou": matrix.compute()["miou"] for level, matrix in self.levels().items()}


def constant_prediction_miou(matrix: torch.Tensor, class_index: int = taxonomy.CLASS_IDS["Clean"]) -> float:
    """mIoU of predicting ``class_index`` on every labelled pixel of the evaluation behind ``matrix``.

    The trivial baseline a model has to beat (all-Clean for the fine classes), under the same
    convention as :meth:`ConfusionMatrix.compute`: the predicted class scores its share of the
    labelled pixels, every other class present in the ground truth scores 0, absent classes are left out.
    """
    support = matrix.double().sum(dim=1).cpu().numpy()
    if support.sum() == 0:
        raise ValueError("no labelled pixel in the confusion matrix: the baseline is undefined")
    return float(constant_prediction_mious(support, class_index))


def _ratio(numerator: torch.Tensor | float, denominator: torch.Tensor | float) -> float:
    return float(numerator / denominator) if denominator > 0 else 0.0


# -- per-image scores (numpy: one row per image, or per bootstrap draw) ------------------------------


class ClassCounts(NamedTuple):
    """Per-class pixel counts (last axis) of :func:`class_counts`, in :func:`iou_per_class`'s order."""

    true_positive: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray


def class_counts(confusion: np.ndarray) -> ClassCounts:
    """True positives, ground-truth pixels and predicted pixels per class of ``(..., C, C)`` confusions.

    They are all IoU needs, and they add up: the counts of a set of images are the sums of theirs.
    """
    confusion = np.asarray(confusion)
    return ClassCounts(np.diagonal(confusion, axis1=-2, axis2=-1), confusion.sum(axis=-1), confusion.sum(axis=-2))


def iou_per_class(true_positive: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """IoU per class (last axis) under :data:`CONVENTION`: NaN for a class absent from both truth and
    prediction (left out of the mean), 0 for a class only predicted."""
    true_positive, truth, predicted = (np.asarray(a, dtype=np.float64) for a in (true_positive, truth, predicted))
    union = truth + predicted - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(ious: np.ndarray) -> np.ndarray:
    """Mean over the present classes (last axis; NaN = absent); NaN where no class is present."""
    ious = np.asarray(ious, dtype=np.float64)
    present = ~np.isnan(ious)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present.any(axis=-1), np.nansum(ious, axis=-1) / present.sum(axis=-1), np.nan)


def constant_prediction_mious(truth: np.ndarray, class_index: int = taxonomy.CLASS_IDS["Clean"]) -> np.ndarray:
    """:func:`constant_prediction_miou` per row of ``(..., C)`` ground-truth pixel counts (NaN: no labelled pixel)."""
    truth = np.asarray(truth, dtype=np.float64)
    labelled = truth.sum(axis=-1)
    present = truth > 0
    present[..., class_index] = True  # it is predicted everywhere
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(labelled > 0, truth[..., class_index] / labelled / present.sum(axis=-1), np.nan)


# -- the seeds' convention (their protocol reproduced beside ours) ---------------------------------

# Where the seeds' evaluation is defined (their flagship POC-5.9-v2): validate_epoch / compute_iou in
# train.py, the mask clipping and the 80/20 split in preload_dataset.py.
SEEDS_SOURCE = ("d4v7d/HeritageArt-CNN-ViT-Hybrid@6f7cb0c, experiments/artefact-poc59-v2/src/train.py "
                "(validate_epoch, compute_iou) and src/preload_dataset.py (np.clip(mask, 0, 15))")
SEEDS_CONVENTION = (
    "the seeds' convention: Background (255) clipped to 15 (Lightleak) and scored; predictions and targets of "
    "the whole set concatenated; IoU per class, 0 for a class absent from both; mean over all 16 classes"
)


def seeds_target(mask: np.ndarray) -> np.ndarray:
    """A fine mask as the seeds' loader read it: ``np.clip(mask, 0, 15)``, so Background 255 becomes 15
    (Lightleak's id) and is scored. Apply it before letterboxing so the letterbox padding stays 255 (ignored):
    the seeds stretched images to a square and had no padding."""
    return np.clip(mask, 0, taxonomy.NUM_CLASSES - 1).astype(mask.dtype)


class SeedsMeanIoU:
    """The seeds' mIoU, accumulated batch by batch: :data:`SEEDS_CONVENTION`.

    The seeds concatenated every validation batch and scored the whole set once (not a mean of
    per-batch scores), so the accumulator is a confusion matrix; what differs from
    :class:`ConfusionMatrix.compute` is the mean: over all 16 classes, an absent class (no pixel in
    truth or prediction) counting 0 instead of being left out, and Background counted as Lightleak when
    targets come through :func:`seeds_target`. Target pixels equal to ``ignore_index`` (only the
    letterbox padding, after :func:`seeds_target`) are not scored.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.matrix = ConfusionMatrix(device=device)

    def update(self, logits_or_preds: torch.Tensor, target: torch.Tensor) -> None:
        self.matrix.update(logits_or_preds, target)

    def compute(self) -> dict:
        """``{"miou", "all_clean_miou", "n_images", "convention", "source"}`` (the seeds' all-Clean baseline:
        Clean's pixel share over 16)."""
        true_positive, truth, predicted = class_counts(self.matrix.matrix.cpu().numpy())
        if truth.sum() == 0:
            raise ValueError("no scored pixel was accumulated: update() was never called or every target "
                             "pixel was ignore_index")
        union = (truth + predicted - true_positive).astype(np.float64)
        ious = np.divide(true_positive, union, out=np.zeros_like(union), where=union > 0)
        clean = taxonomy.CLASS_IDS["Clean"]
        return {"miou": float(ious.mean()), "all_clean_miou": float(truth[clean] / truth.sum() / len(ious)),
                "n_images": int(self.matrix._n_images), "convention": SEEDS_CONVENTION, "source": SEEDS_SOURCE}
