"""Segmentation losses: Dice, Focal, Dice+Focal and POC-5.5's hierarchical loss, and a Skeleton Recall term.

SMP 0.6's ``DiceLoss`` in multiclass mode takes ``ignore_index`` and per-class ``class_weights`` (a
weighted mean of the per-class terms). What is ours:

- Dice is SMP's soft Dice over the whole batch per class, ``(I + s) / ((P + T) / 2 + s)`` with
  ``I = sum p*t``, ``P = sum p``, ``T = sum t`` over labelled pixels; classes absent from the batch's
  ground truth contribute 0 (but keep their weight in the weighted mean).
- Focal: the softmax focal loss ``-w_y (1 - p_y)^gamma log p_y`` over the same softmax as
  Dice, weighted by the true class's weight and averaged with those weights over labelled pixels
  (0 when no pixel is labelled). SMP's ``FocalLoss`` is one-vs-rest sigmoid and multiplies a
  class's weight into its negatives as well, which turns balancing weights into a penalty on
  predicting rare classes: Dice+Focal with inverse-sqrt weights collapsed to all-Clean with it.
- Every loss runs in float32 with autocast disabled, whatever precision the model ran in.
- Skeleton Recall (Kirchhoff et al., ECCV 2024, as in their nnU-Net trainer): ``1 - sum(p_c * S_c) / sum(S_c)``
  per thin class ``c`` present in the batch (``taxonomy.THIN_CLASSES``), averaged, where ``S_c`` is the tubed
  skeleton of the class's ground truth (its morphological skeleton dilated by a 2-step cross, kept inside
  the class). It rewards covering a line's centre whatever its width, and lets no batch's Clean pixels
  outweigh a few hundred pixels of hair: added with a weight (``skeleton_recall``) to the fine-level loss.
- The hierarchical loss derives the binary and coarse targets from the fine target on the device
  with ``taxonomy.FINE_TO_BINARY`` / ``FINE_TO_COARSE`` lookup tables.

Background (255) is ignored everywhere: an ignored pixel changes neither a loss nor its gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

from heritage.modeling import registry
from heritage.data import taxonomy

DICE_FOCAL_WEIGHTS = (0.5, 0.5)
HIERARCHY_WEIGHTS: dict[str, float] = {"binary": 0.2, "coarse": 0.3, "fine": 0.5}
SKELETON_ITERATIONS = 3  # erosions of the skeleton: centre lines of structures up to 7 px wide


class FocalLoss(nn.Module):
    """Softmax focal loss ``-w_y (1 - p_y)^gamma log p_y``, the ``w_y``-weighted mean over labelled pixels.

    ``w_y`` is the weight of the pixel's true class (the alpha-balanced form of Lin et al.); with
    ``gamma = 0`` this is ``F.cross_entropy(weight=w, ignore_index=255)``. Not SMP's ``FocalLoss``:
    that one is one-vs-rest sigmoid and applies a class's weight to its negatives too, so the heavy
    weights of rare classes mostly punish predicting them (on the stand-in it collapses to all-Clean).
    """

    def __init__(self, class_weights: Sequence[float] | None = None, gamma: float = registry.DEFAULT_GAMMA) -> None:
        super().__init__()
        self.gamma = gamma
        # a buffer, so that moving the loss to the GPU moves the weights once (not per step)
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        labelled = target != taxonomy.IGNORE_INDEX
        safe_target = torch.where(labelled, target, 0)  # any class index; the weight below is 0 there
        log_p = torch.log_softmax(logits, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
        terms = -(1 - log_p.exp()).pow(self.gamma) * log_p
        pixel_weights = (labelled.to(terms.dtype) if self.class_weights is None
                         else self.class_weights.to(logits.device)[safe_target] * labelled)
        # a batch with no labelled pixel gives 0, not NaN
        return (terms * pixel_weights).sum() / pixel_weights.sum().clamp_min(torch.finfo(torch.float32).tiny)


def _erode(image: torch.Tensor) -> torch.Tensor:
    """Binary erosion with a 3x3 cross (min over the 4-neighbourhood), as max-pooling of the negative."""
    vertical = -torch.nn.functional.max_pool2d(-image, (3, 1), 1, (1, 0))
    horizontal = -torch.nn.functional.max_pool2d(-image, (1, 3), 1, (0, 1))
    return torch.minimum(vertical, horizontal)


def _dilate_cross(image: torch.Tensor) -> torch.Tensor:
    """Binary dilation with a 3x3 cross."""
    vertical = torch.nn.functional.max_pool2d(image, (3, 1), 1, (1, 0))
    horizontal = torch.nn.functional.max_pool2d(image, (1, 3), 1, (0, 1))
    return torch.maximum(vertical, horizontal)


def tubed_skeleton(masks: torch.Tensor, iterations: int = SKELETON_ITERATIONS) -> torch.Tensor:
    """The tubed skeleton of binary ``masks`` (N, 1, H, W) in {0, 1}: Lantuejoul's morphological skeleton (the
    union over erosions of what an opening removes, as clDice computes it on a binary image) dilated twice by a
    cross, then kept inside the mask. Structures up to ``2 * iterations + 1`` px wide get their centre line."""
    image = masks
    opened = torch.nn.functional.max_pool2d(_erode(image), 3, 1, 1)
    skeleton = torch.relu(image - opened)
    for _ in range(iterations):
        image = _erode(image)
        opened = torch.nn.functional.max_pool2d(_erode(image), 3, 1, 1)
        skeleton = torch.maximum(skeleton, torch.relu(image - opened))
    return _dilate_cross(_dilate_cross(skeleton)) * masks


class SkeletonRecall(nn.Module):
    """``1 - sum(p_c * S_c) / sum(S_c)`` over the batch, per class of ``class_ids`` present in it, averaged
    (0 when none is): the soft recall of each class's tubed skeleton (:func:`tubed_skeleton`)."""

    def __init__(self, class_ids: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("class_ids", torch.as_tensor(list(class_ids), dtype=torch.long), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        ids = self.class_ids.to(target.device)
        masks = (target[:, None] == ids[None, :, None, None]).to(logits.dtype)  # (B, K, H, W); 255 is no class
        batch, classes, height, width = masks.shape
        skeletons = tubed_skeleton(masks.reshape(batch * classes, 1, height, width)).reshape(masks.shape)
        probabilities = torch.softmax(logits, dim=1).index_select(1, ids)
        found = (probabilities * skeletons).sum(dim=(0, 2, 3))
        total = skeletons.sum(dim=(0, 2, 3))
        present = total > 0
        recall = found / total.clamp_min(1.0)
        return torch.where(present, 1.0 - recall, 0.0).sum() / present.sum().clamp_min(1)


class WeightedSum(nn.Module):
    """``sum_i w_i * loss_i(logits, target)`` computed in float32 with autocast disabled."""

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = [float(weight) for weight, _ in terms]
        self.terms = nn.ModuleList([loss for _, loss in terms])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, target)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            return sum(weight * loss(logits, target) for weight, loss in zip(self.weights, self.terms))


class HierarchicalLoss(nn.Module):
    """``0.2 * binary + 0.3 * coarse + 0.5 * fine`` over the outputs of the hierarchical model.

    ``outputs`` is ``{"binary", "coarse", "fine"}`` logits, ``target`` the fine mask; the coarse term
    only sees damage pixels (Clean maps to 255 in ``FINE_TO_COARSE``).
    """

    def __init__(self, levels: dict[str, nn.Module]) -> None:
        super().__init__()
        self.levels = nn.ModuleDict(levels)
        # Non-persistent: the tables come from the taxonomy, not from checkpoints.
        self.register_buffer("fine_to_binary", torch.as_tensor(taxonomy.FINE_TO_BINARY, dtype=torch.long),
                             persistent=False)
        self.register_buffer("fine_to_coarse", torch.as_tensor(taxonomy.FINE_TO_COARSE, dtype=torch.long),
                             persistent=False)

    def forward(self, outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        missing = [level for level in HIERARCHY_WEIGHTS if level not in outputs]
        if missing:
            raise ValueError(f"hierarchical loss: model outputs lack {missing} (got {sorted(outputs)})")
        target = target.long()  # a uint8 index would be read as a boolean mask
        targets = {
            "binary": self.fine_to_binary.to(target.device)[target],
            "coarse": self.fine_to_coarse.to(target.device)[target],
            "fine": target,
        }
        return sum(weight * self.levels[level](outputs[level], targets[level])
                   for level, weight in HIERARCHY_WEIGHTS.items())


def build_loss(name: str, class_weights: Sequence[float] | np.ndarray | torch.Tensor | None = None, *,
               smooth: float = registry.DEFAULT_SMOOTH, gamma: float = registry.DEFAULT_GAMMA, level_loss: str = "dice",
               skeleton_recall: float = 0.0) -> nn.Module:
    """The loss called ``name`` (one of ``registry.LOSSES``): ``loss(logits, target) -> scalar tensor``.

    ``class_weights`` (one positive weight per fine class) weight the per-class terms; for
    ``hierarchical`` they weight the fine term, whose per-level loss is ``level_loss``. ``skeleton_recall``
    > 0 adds that weight times :class:`SkeletonRecall` over ``taxonomy.THIN_CLASSES`` to the fine-level loss.
    The keyword parameters are ``registry.LOSS_PARAMETERS``, checked by ``registry.check_loss_params``.
    """
    registry.check_loss_params(name, {"smooth": smooth, "gamma": gamma, "level_loss": level_loss,
                                      "skeleton_recall": skeleton_recall})
    weights = _checked_weights(class_weights)
    if name == "hierarchical":
        return HierarchicalLoss({
            level: _level_loss(level_loss, weights if level == "fine" else None, smooth, gamma,
                               skeleton_recall if level == "fine" else 0.0)
            for level in HIERARCHY_WEIGHTS
        })
    return _level_loss(name, weights, smooth, gamma, skeleton_recall)


def _level_loss(name: str, weights: list[float] | None, smooth: float, gamma: float,
                skeleton_recall: float = 0.0) -> WeightedSum:
    dice = smp.losses.DiceLoss("multiclass", smooth=smooth, ignore_index=taxonomy.IGNORE_INDEX,
                               class_weights=weights)
    focal = FocalLoss(weights, gamma)
    dice_weight, focal_weight = DICE_FOCAL_WEIGHTS
    terms = {"dice": [(1.0, dice)], "focal": [(1.0, focal)], "dice_focal": [(dice_weight, dice), (focal_weight, focal)]}
    extra = [(skeleton_recall, SkeletonRecall(taxonomy.CLASS_IDS[c] for c in taxonomy.THIN_CLASSES))] \
        if skeleton_recall > 0 else []
    return WeightedSum(terms[name] + extra)


def _checked_weights(class_weights: Sequence[float] | np.ndarray | torch.Tensor | None) -> list[float] | None:
    if class_weights is None:
        return None
    values = np.asarray(torch.as_tensor(class_weights, dtype=torch.float64).cpu(), dtype=np.float64).ravel()
    if values.size != taxonomy.NUM_CLASSES:
        raise ValueError(f"class_weights: expected {taxonomy.NUM_CLASSES} values (one per fine class), "
                         f"got {values.size}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"class_weights: every weight must be positive and finite, got {values.tolist()}")
    return values.tolist()


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"loss: logits must be (B, C, H, W) and target (B, H, W) with the same B, H, W; "
                         f"got logits {tuple(logits.shape)} and target {tuple(target.shape)}")
