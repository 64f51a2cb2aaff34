"""Losses on tiny hand-made tensors with answers worked out by hand (see each test's comments)."""

from __future__ import annotations

import inspect
import math
from fractions import Fraction

import pytest
import torch

from heritage.modeling import losses, registry
from heritage.data import taxonomy

IGNORE = taxonomy.IGNORE_INDEX
LN2, LN3 = math.log(2), math.log(3)


def two_pixel_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes, two pixels: A has p = (3/4, 1/4) and is class 0, B has p = (1/2, 1/2) and is class 1."""
    logits = torch.tensor([[[[LN3, 0.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    return logits, target


def with_ignored_pixel(logits: torch.Tensor, target: torch.Tensor, ignored_logits: list[float]) -> tuple:
    """The same case plus a third pixel labelled Background whose logits are ``ignored_logits``."""
    extra = torch.tensor(ignored_logits).view(1, -1, 1, 1)
    return torch.cat([logits, extra], dim=3), torch.cat([target, torch.tensor([[[IGNORE]]])], dim=2)


def test_dice_known_answer():
    # Class 0: I = 3/4, P = 3/4 + 1/2 = 5/4, T = 1 -> dice = I / ((P + T) / 2) = (3/4) / (9/8) = 2/3.
    # Class 1: I = 1/2, P = 1/4 + 1/2 = 3/4, T = 1 -> dice = (1/2) / (7/8) = 4/7.
    # Loss = mean(1 - 2/3, 1 - 4/7) = 8/21.
    logits, target = two_pixel_case()
    assert losses.build_loss("dice", smooth=0.0)(logits, target).item() == pytest.approx(8 / 21, rel=1e-6)
    # smooth = 1: (I + 1) / ((P + T) / 2 + 1) -> 14/17 and 4/5; loss = (3/17 + 1/5) / 2.
    assert losses.build_loss("dice", smooth=1.0)(logits, target).item() == pytest.approx((3 / 17 + 1 / 5) / 2, rel=1e-6)


def sixteen_class_case() -> tuple[torch.Tensor, torch.Tensor]:
    """16 classes, two pixels. A (class 0): logit ln 45 on class 0, so p0 = 45/60 and 1/60 elsewhere.
    B (class 1): logit ln 15 on class 1, so p1 = 15/30 and 1/30 elsewhere."""
    logits = torch.zeros(1, taxonomy.NUM_CLASSES, 1, 2)
    logits[0, 0, 0, 0] = math.log(45)
    logits[0, 1, 0, 1] = math.log(15)
    return logits, torch.tensor([[[0, 1]]])


def test_weighted_dice_known_answer():
    # Class 0: I = 45/60, P = 45/60 + 1/30 = 47/60, T = 1 -> dice = (45/60) / (107/120) = 90/107.
    # Class 1: I = 1/2, P = 1/60 + 1/2 = 31/60, T = 1 -> dice = (1/2) / (91/120) = 60/91.
    # Classes 2..15 are absent from the target: loss 0, but their weights stay in the denominator.
    weights = [1.0, 3.0] + [0.5] * 14
    expected = (1 * (1 - Fraction(90, 107)) + 3 * (1 - Fraction(60, 91))) / (1 + 3 + 7)
    logits, target = sixteen_class_case()
    loss = losses.build_loss("dice", class_weights=weights, smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(float(expected), rel=1e-6)
    unweighted = (1 - Fraction(90, 107) + 1 - Fraction(60, 91)) / 16
    assert losses.build_loss("dice", smooth=0.0)(logits, target).item() == pytest.approx(float(unweighted), rel=1e-6)


def test_focal_known_answer():
    # Softmax focal, gamma 2: a pixel's term is (1 - p_y)^2 * -ln(p_y) for its true class y.
    # A: p_0 = 3/4 -> (1/16) ln(4/3); B: p_1 = 1/2 -> (1/4) ln 2; the loss is their mean.
    logits, target = two_pixel_case()
    expected = (math.log(4 / 3) / 16 + LN2 / 4) / 2
    assert losses.build_loss("focal")(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_focal_weighs_each_pixel_by_its_true_class():
    # sixteen_class_case: A (class 0) has p_0 = 3/4, B (class 1) p_1 = 1/2, so the terms are those of
    # test_focal_known_answer; the weighted mean is (w_0 * A + w_1 * B) / (w_0 + w_1). The weights of the
    # classes no pixel belongs to do not enter: a rare class's heavy weight applies to its own pixels only.
    weights = [1.0, 3.0] + [50.0] * 14
    expected = (1 * math.log(4 / 3) / 16 + 3 * LN2 / 4) / 4
    logits, target = sixteen_class_case()
    assert losses.build_loss("focal", class_weights=weights)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_focal_with_gamma_zero_is_weighted_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, taxonomy.NUM_CLASSES, 5, 7, generator=generator)
    target = torch.randint(0, taxonomy.NUM_CLASSES, (2, 5, 7), generator=generator)
    target[0, :2] = IGNORE
    weights = torch.rand(taxonomy.NUM_CLASSES, generator=generator) + 0.1
    focal = losses.FocalLoss(class_weights=weights, gamma=0.0)(logits, target)
    expected = torch.nn.functional.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE)
    assert focal.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dice_focal_is_the_even_mix():
    logits, target = two_pixel_case()
    dice = 8 / 21
    focal = (math.log(4 / 3) / 16 + LN2 / 4) / 2
    loss = losses.build_loss("dice_focal", smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(0.5 * dice + 0.5 * focal, rel=1e-6)


def test_hierarchical_known_answer():
    # Fine target: Clean, Material loss, Cracks, Background; all logits 0 (uniform probabilities).
    # Binary target (Clean, Damage, Damage, ignored), p = 1/2 on 3 pixels:
    #   Clean: I = 1/2, P = 3/2, T = 1 -> 2/5; Damage: I = 1, P = 3/2, T = 2 -> 4/7; loss 18/35.
    # Coarse target (ignored, Substrate loss, Mechanical, ignored), p = 1/4 on 2 pixels:
    #   classes 0 and 1: I = 1/4, P = 1/2, T = 1 -> 1/3; classes 2, 3 absent; loss (2/3 + 2/3) / 4 = 1/3.
    # Fine, p = 1/16 on 3 pixels: classes 0, 1, 9: I = 1/16, P = 3/16, T = 1 -> 2/19; loss 3 * (17/19) / 16.
    target = torch.tensor([[[0, 1], [taxonomy.CLASS_IDS["Cracks"], IGNORE]]])
    assert taxonomy.CLASS_IDS["Material loss"] == 1
    outputs = {"binary": torch.zeros(1, 2, 2, 2), "coarse": torch.zeros(1, 4, 2, 2),
               "fine": torch.zeros(1, taxonomy.NUM_CLASSES, 2, 2)}
    expected = 0.2 * 18 / 35 + 0.3 * 1 / 3 + 0.5 * 51 / 304
    loss = losses.build_loss("hierarchical", smooth=0.0)(outputs, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["dice", "focal", "dice_focal"])
def test_ignored_pixels_change_neither_loss_nor_gradient(name):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, taxonomy.NUM_CLASSES, 4, 4, generator=generator)
    target = torch.randint(0, taxonomy.NUM_CLASSES, (2, 4, 4), generator=generator)
    target[0, :2] = IGNORE
    target[1, :, 0] = IGNORE
    ignored = target == IGNORE
    weights = torch.rand(taxonomy.NUM_CLASSES, generator=generator) + 0.5
    loss_fn = losses.build_loss(name, class_weights=weights)

    def loss_and_grad(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = values.clone().requires_grad_(True)
        loss = loss_fn(values, target)
        loss.backward()
        return loss.detach(), values.grad

    loss, grad = loss_and_grad(logits)
    other = logits.clone()
    other.permute(0, 2, 3, 1)[ignored] = 50 * torch.randn(int(ignored.sum()), taxonomy.NUM_CLASSES, generator=generator)
    other_loss, other_grad = loss_and_grad(other)
    assert torch.equal(loss, other_loss)
    assert torch.equal(grad, other_grad)
    assert torch.all(grad.permute(0, 2, 3, 1)[ignored] == 0)
    # The loss of the labelled pixels alone, laid out as one row, is the same number.
    labelled_logits = logits.permute(1, 0, 2, 3)[:, ~ignored].view(1, taxonomy.NUM_CLASSES, 1, -1)
    labelled_target = target[~ignored].view(1, 1, -1)
    assert loss_fn(labelled_logits, labelled_target).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("name", registry.LOSSES)
def test_all_ignored_batch_gives_zero_not_nan(name):
    target = torch.full((1, 4, 4), IGNORE)
    if name == "hierarchical":
        logits = {level: torch.randn(1, n, 4, 4, requires_grad=True)
                  for level, n in (("binary", 2), ("coarse", 4), ("fine", taxonomy.NUM_CLASSES))}
        leaves = list(logits.values())
    else:
        logits = torch.randn(1, taxonomy.NUM_CLASSES, 4, 4, requires_grad=True)
        leaves = [logits]
    loss = losses.build_loss(name)(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.all(leaf.grad == 0) for leaf in leaves)


def test_coarse_term_sees_damage_pixels_only():
    # On an all-Clean image the coarse target is entirely ignored: changing coarse logits changes nothing.
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    fine = torch.randn(1, taxonomy.NUM_CLASSES, 4, 4)
    binary = torch.randn(1, 2, 4, 4)
    loss_fn = losses.build_loss("hierarchical")
    first = loss_fn({"binary": binary, "coarse": torch.randn(1, 4, 4, 4), "fine": fine}, target)
    second = loss_fn({"binary": binary, "coarse": 10 * torch.randn(1, 4, 4, 4), "fine": fine}, target)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", ["dice", "dice_focal"])
def test_loss_runs_in_float32_under_autocast(name):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, taxonomy.NUM_CLASSES, 1)
    image = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, taxonomy.NUM_CLASSES, (2, 8, 8))
    loss_fn = losses.build_loss(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(image)
        loss = loss_fn(logits, target)
    assert logits.dtype == torch.bfloat16
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(loss_fn(logits.float(), target).item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


def test_tubed_skeleton_keeps_a_thin_line_and_the_centre_of_a_wide_one():
    masks = torch.zeros(1, 1, 20, 20)
    masks[0, 0, 2, 1:19] = 1  # a 1 px line: its own skeleton
    masks[0, 0, 8:15, 2:18] = 1  # a 7 px band: a centre line and its 2-step tube
    skeleton = losses.tubed_skeleton(masks)[0, 0]
    assert torch.equal(skeleton[2, 1:19], torch.ones(18))
    assert ((skeleton > 0) <= (masks[0, 0] > 0)).all()  # inside the mask
    band = skeleton[8:15, 6:14]  # away from the band's ends
    assert band[3].eq(1).all() and band[0].eq(0).all() and band[6].eq(0).all()


def test_skeleton_recall_is_the_soft_recall_of_each_thin_class_present():
    recall = losses.SkeletonRecall([taxonomy.CLASS_IDS["Hair"], taxonomy.CLASS_IDS["Dust"]])
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 3, 1:7] = taxonomy.CLASS_IDS["Hair"]
    target[0, 0, 0] = taxonomy.IGNORE_INDEX
    found = torch.full((1, 16, 8, 8), -20.0)
    found[:, 0] = 20.0
    found[0, taxonomy.CLASS_IDS["Hair"], 3, 1:7] = 40.0
    assert recall(found, target).item() == pytest.approx(0.0, abs=1e-6)  # Dust is absent: not counted
    missed = found.clone()
    missed[0, taxonomy.CLASS_IDS["Hair"], 3, 1:4] = -20.0  # half the hair predicted as Clean
    assert recall(missed, target).item() == pytest.approx(0.5, abs=1e-6)
    assert recall(found, torch.zeros_like(target)).item() == 0.0  # no thin class in the batch
    logits = missed.clone().requires_grad_()
    recall(logits, target).backward()
    assert logits.grad[0, taxonomy.CLASS_IDS["Hair"], 3, 1:4].abs().sum() > 0


def test_skeleton_recall_is_added_to_the_fine_loss_with_its_weight():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 16, 12, 12), torch.randint(0, 16, (2, 12, 12))
    target[0, 5, :] = taxonomy.CLASS_IDS["Scratch"]
    thin_ids = [taxonomy.CLASS_IDS[c] for c in taxonomy.THIN_CLASSES]
    base = losses.build_loss("dice_focal", gamma=0.0)(logits, target)
    with_term = losses.build_loss("dice_focal", gamma=0.0, skeleton_recall=2.0)(logits, target)
    assert with_term.item() == pytest.approx(base.item() + 2.0 * losses.SkeletonRecall(thin_ids)(logits, target).item(),
                                             rel=1e-5)


def test_build_loss_takes_the_registry_parameters_and_refuses_what_the_registry_refuses():
    # heritage.modeling.registry is the one home of the loss names and parameters (config validation uses it
    # without torch); build_loss must take exactly those keywords, with the same defaults.
    keywords = {name: parameter.default for name, parameter in inspect.signature(losses.build_loss).parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keywords == registry.LOSS_PARAMETERS
    for name in registry.LOSSES:
        registry.check_loss_params(name, {"smooth": 0.0, "gamma": 0, "level_loss": "focal"})
        losses.build_loss(name, smooth=0.0, gamma=0, level_loss="focal")
    for params, message in [({"alpha": 1}, "unknown loss parameter 'alpha'"), ({"gamma": -1}, "gamma must be"),
                            ({"smooth": "1"}, "smooth must be"), ({"level_loss": "ce"}, "unknown level_loss 'ce'")]:
        with pytest.raises(ValueError, match=message):
            registry.check_loss_params("hierarchical", params)
        with pytest.raises((TypeError, ValueError)):  # TypeError: build_loss has no keyword 'alpha'
            losses.build_loss("hierarchical", **params)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown loss 'lovasz'.*dice, focal, dice_focal, hierarchical"):
        losses.build_loss("lovasz")
    with pytest.raises(ValueError, match="expected 16 values.*got 3"):
        losses.build_loss("dice", class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="positive and finite"):
        losses.build_loss("focal", class_weights=[1.0] * 15 + [0.0])
    with pytest.raises(ValueError, match="unknown level_loss 'ce'"):
        losses.build_loss("hierarchical", level_loss="ce")
    with pytest.raises(ValueError, match=r"logits \(1, 16, 4, 4\) and target \(1, 3, 4\)"):
        losses.build_loss("dice")(torch.zeros(1, 16, 4, 4), torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"lack \['coarse'\]"):
        losses.build_loss("hierarchical")({"binary": torch.zeros(1, 2, 2, 2), "fine": torch.zeros(1, 16, 2, 2)},
                                           torch.zeros(1, 2, 2, dtype=torch.long))


def test_hierarchical_level_loss_and_weights_apply_to_the_right_terms():
    target = torch.tensor([[[0, 1], [9, 3]]])
    torch.manual_seed(1)
    outputs = {"binary": torch.randn(1, 2, 2, 2), "coarse": torch.randn(1, 4, 2, 2),
               "fine": torch.randn(1, taxonomy.NUM_CLASSES, 2, 2)}
    weights = [1.0 + i for i in range(taxonomy.NUM_CLASSES)]
    focal = losses.build_loss("focal")
    weighted_focal = losses.build_loss("focal", class_weights=weights)
    binary = torch.tensor([[[0, 1], [1, 1]]])
    coarse = torch.tensor([[[IGNORE, 0], [1, 2]]])
    expected = (0.2 * focal(outputs["binary"], binary) + 0.3 * focal(outputs["coarse"], coarse)
                + 0.5 * weighted_focal(outputs["fine"], target))
    loss = losses.build_loss("hierarchical", class_weights=weights, level_loss="focal")(outputs, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
