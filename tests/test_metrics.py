"""Confusion-matrix metrics: hand-computed cases, torchmetrics cross-checks, batch accumulation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassJaccardIndex,
    MulticlassPrecision,
    MulticlassRecall,
)

from heritage.modeling import metrics
from heritage.data import taxonomy

IGNORE = taxonomy.IGNORE_INDEX
C = taxonomy.NUM_CLASSES


def test_hand_computed_scores():
    # Pixels (ground truth -> prediction): A->A, A->B, B->B, B->B, C->A, and one ignored; D never occurs.
    # A: TP 1, support 2, predicted 2 -> IoU 1/3, precision 1/2, recall 1/2, F1 1/2.
    # B: TP 2, support 2, predicted 3 -> IoU 2/3, precision 2/3, recall 1, F1 4/5.
    # C: TP 0, support 1, predicted 0 -> IoU 0, precision 0 (never predicted), recall 0, F1 0.
    # D: absent from both -> null, excluded from the mean. mIoU = (1/3 + 2/3 + 0) / 3; accuracy 3/5.
    matrix = metrics.ConfusionMatrix(4, class_names=["A", "B", "C", "D"])
    matrix.update(torch.tensor([[0, 1, 1, 1, 0, 2]]), torch.tensor([[0, 0, 1, 1, 2, IGNORE]]))
    result = matrix.compute()
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    assert result["n_images"] == 1
    assert result["convention"] == metrics.CONVENTION
    per_class = result["per_class"]
    assert list(per_class) == ["A", "B", "C", "D"]
    assert per_class["A"] == pytest.approx({"iou": 1 / 3, "precision": 0.5, "recall": 0.5, "f1": 0.5,
                                            "support": 2, "present": True})
    assert per_class["B"] == pytest.approx({"iou": 2 / 3, "precision": 2 / 3, "recall": 1.0, "f1": 0.8,
                                            "support": 2, "present": True})
    assert per_class["C"] == {"iou": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "present": True}
    assert per_class["D"] == {"iou": None, "precision": None, "recall": None, "f1": None, "support": 0,
                              "present": False}
    assert matrix.matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    json.dumps(result)  # metrics.json-ready: plain Python numbers, None for absent classes


def test_all_clean_baseline_equals_scoring_an_all_clean_prediction():
    # Hand computed: 6 labelled pixels, 4 Clean, one Peel, one Dust, one ignored; Clean everywhere
    # scores IoU 4/6 for Clean and 0 for Peel and Dust; the other classes are absent: mIoU = (4/6) / 3.
    clean, peel, dust = (taxonomy.CLASS_IDS[name] for name in ("Clean", "Peel", "Dust"))
    target = torch.tensor([[clean, clean, peel, clean, dust, clean, IGNORE]])
    model_says = metrics.ConfusionMatrix()
    model_says.update(torch.tensor([[peel, clean, peel, clean, clean, clean, dust]]), target)
    assert metrics.constant_prediction_miou(model_says.matrix) == pytest.approx((4 / 6) / 3)
    scored = metrics.ConfusionMatrix()
    scored.update(torch.zeros_like(target), target)
    assert metrics.constant_prediction_miou(model_says.matrix) == pytest.approx(scored.compute()["miou"])
    # A test set without Clean pixels: Clean is still predicted, so it counts (IoU 0).
    no_clean = metrics.ConfusionMatrix()
    no_clean.update(torch.tensor([[peel, peel]]), torch.tensor([[peel, dust]]))
    assert metrics.constant_prediction_miou(no_clean.matrix) == 0.0
    with pytest.raises(ValueError, match="no labelled pixel"):
        metrics.constant_prediction_miou(metrics.ConfusionMatrix().matrix)


def test_default_names_are_the_fine_classes_and_logits_are_argmaxed():
    logits = torch.zeros(1, C, 1, 2)
    logits[0, taxonomy.CLASS_IDS["Cracks"], 0, 0] = 1.0
    logits[0, taxonomy.CLASS_IDS["Clean"], 0, 1] = 1.0
    matrix = metrics.ConfusionMatrix()
    matrix.update(logits, torch.tensor([[[taxonomy.CLASS_IDS["Cracks"], taxonomy.CLASS_IDS["Dust"]]]]))
    per_class = matrix.compute()["per_class"]
    assert list(per_class) == list(taxonomy.CLASS_NAMES)
    assert per_class["Cracks"]["iou"] == 1.0
    assert per_class["Dust"]["iou"] == 0.0 and per_class["Clean"]["iou"] == 0.0
    assert not per_class["Stamp"]["present"]


def random_batches(n_batches: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of different sizes; some classes never occur; targets hold Background."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(n_batches):
        batch = 1 + i % 3
        logits = torch.randn(batch, C, 12, 10, generator=generator)
        logits[:, 13:] -= 20  # classes 13..15 are never predicted
        target = torch.randint(0, 12, (batch, 12, 10), generator=generator)  # 12..15 never in ground truth
        target[torch.rand(target.shape, generator=generator) < 0.2] = IGNORE
        batches.append((logits, target))
    return batches


def test_matches_torchmetrics():
    batches = random_batches(5)
    ours = metrics.ConfusionMatrix()
    references = {
        "matrix": MulticlassConfusionMatrix(C, ignore_index=IGNORE),
        "iou": MulticlassJaccardIndex(C, average=None, ignore_index=IGNORE),
        "precision": MulticlassPrecision(C, average=None, ignore_index=IGNORE),
        "recall": MulticlassRecall(C, average=None, ignore_index=IGNORE),
    }
    for logits, target in batches:
        ours.update(logits, target)
        for reference in references.values():
            reference.update(logits, target)
    assert torch.equal(ours.matrix, references["matrix"].compute())
    result = ours.compute()
    present = [i for i, name in enumerate(taxonomy.CLASS_NAMES) if result["per_class"][name]["present"]]
    assert present == list(range(13))  # 12 is predicted but never true: present with IoU 0
    for key in ("iou", "precision", "recall"):
        expected = references[key].compute()
        for i in present:
            assert result["per_class"][taxonomy.CLASS_NAMES[i]][key] == pytest.approx(float(expected[i]), abs=1e-6)
    assert result["per_class"]["Sticker"]["iou"] == 0.0  # class 12: predicted, never true
    assert result["miou"] == pytest.approx(float(references["iou"].compute()[present].mean()), abs=1e-6)


def test_accumulating_batches_equals_the_concatenated_set():
    batches = random_batches(6)
    accumulated = metrics.ConfusionMatrix()
    for logits, target in batches:
        accumulated.update(logits, target)
    whole = metrics.ConfusionMatrix()
    whole.update(torch.cat([logits for logits, _ in batches]), torch.cat([target for _, target in batches]))
    assert accumulated.compute() == whole.compute()
    assert accumulated.compute()["n_images"] == sum(len(target) for _, target in batches)
    # Per-batch averaging gives a different number on the same data.
    per_batch = []
    for logits, target in batches:
        single = metrics.ConfusionMatrix()
        single.update(logits, target)
        per_batch.append(single.compute()["miou"])
    assert sum(per_batch) / len(per_batch) != pytest.approx(whole.compute()["miou"], abs=1e-4)


def test_reset_and_no_labelled_pixels():
    matrix = metrics.ConfusionMatrix()
    with pytest.raises(ValueError, match="no labelled pixel"):
        matrix.compute()
    matrix.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), IGNORE))
    with pytest.raises(ValueError, match="no labelled pixel"):
        matrix.compute()
    matrix.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    assert matrix.compute()["pixel_accuracy"] == 1.0
    matrix.reset()
    assert int(matrix.matrix.sum()) == 0


def test_works_in_and_out_of_inference_mode():
    (logits, target), = random_batches(1)
    with torch.inference_mode():  # as in an evaluation loop decorated with inference_mode
        matrix = metrics.ConfusionMatrix()
        matrix.update(logits, target)
        inside = matrix.compute()
    matrix.reset()  # in-place outside inference mode: the counts must not be inference tensors
    matrix.update(logits, target)
    assert matrix.compute() == inside


def test_bad_inputs_are_refused():
    matrix = metrics.ConfusionMatrix()
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="logits have 4 channels, expected 16"):
        matrix.update(torch.zeros(1, 4, 4, 4), target)
    with pytest.raises(ValueError, match=r"predictions \(1, 4, 2\) and target \(1, 4, 4\)"):
        matrix.update(torch.zeros(1, 4, 2, dtype=torch.long), target)
    with pytest.raises(ValueError, match="integer class ids"):
        matrix.update(torch.zeros(1, 4, 4), target)
    with pytest.raises(IndexError):
        matrix.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 20))  # not a class id
    with pytest.raises(IndexError):
        matrix.update(torch.full((1, 4, 4), 16), target)  # prediction out of range
    with pytest.raises(ValueError, match="class_names are needed for 4 classes"):
        metrics.ConfusionMatrix(4)
    with pytest.raises(ValueError, match="2 class_names given for 3 classes"):
        metrics.ConfusionMatrix(3, class_names=["a", "b"])


def one_hot_logits(ids: list[list[int]], channels: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor([ids]), channels).permute(0, 3, 1, 2).float()


def test_hierarchical_metrics_hand_computed():
    # Fine target: Clean, Material loss, Cracks, Background.
    # Binary: truth (Clean, Damage, Damage), predicted (Clean, Damage, Clean): IoU 1/2 and 1/2 -> 1/2.
    # Coarse, damage pixels only: truth (Substrate loss, Mechanical), predicted (Substrate loss,
    #   Deposits): IoU 1, 0, 0 (Deposits only predicted), Chromatic absent -> 1/3. The coarse
    #   prediction on the Clean pixel is not counted.
    # Fine: truth (0, 1, 9), predicted (0, 1, 3): IoU 1, 1, 0 (Cracks), 0 (Dust predicted) -> 1/2.
    cracks, dust = taxonomy.CLASS_IDS["Cracks"], taxonomy.CLASS_IDS["Dust"]
    target = torch.tensor([[[0, 1], [cracks, IGNORE]]])
    outputs = {"binary": one_hot_logits([[0, 1], [0, 1]], 2),
               "coarse": one_hot_logits([[3, 0], [2, 3]], 4),
               "fine": one_hot_logits([[0, 1], [dust, 5]], C)}
    hierarchical = metrics.HierarchicalMetrics()
    hierarchical.update(outputs, target)
    assert hierarchical.compute() == pytest.approx({"binary_miou": 0.5, "coarse_miou": 1 / 3, "fine_miou": 0.5})
    coarse = hierarchical.coarse.compute()["per_class"]
    assert list(coarse) == list(taxonomy.COARSE_NAMES)
    assert not coarse["Chromatic alteration"]["present"]
    assert list(hierarchical.fine.compute()["per_class"]) == list(taxonomy.CLASS_NAMES)


# -- the seeds' convention (issue 12) ---------------------------------------------------------------


def seeds_and_ours(batches):
    seeds, ours = metrics.SeedsMeanIoU(), metrics.ConfusionMatrix()
    for preds, target in batches:
        seeds.update(preds, torch.from_numpy(metrics.seeds_target(target.numpy())))
        ours.update(preds, target)
    return seeds.compute(), ours.compute()


def test_seeds_convention_hand_computed_on_two_batches():
    # Batch 1: Clean Clean | Cracks Background; predicted Clean Clean | Cracks Lightleak.
    # Batch 2: Clean Background | Background Background; predicted Clean Clean | Lightleak Lightleak.
    crack, lightleak = taxonomy.CLASS_IDS["Cracks"], taxonomy.CLASS_IDS["Lightleak"]
    target1 = torch.tensor([[[0, 0], [crack, IGNORE]]])
    preds1 = torch.tensor([[[0, 0], [crack, lightleak]]])
    target2 = torch.tensor([[[0, IGNORE], [IGNORE, IGNORE]]])
    preds2 = torch.tensor([[[0, 0], [lightleak, lightleak]]])
    seeds, ours = seeds_and_ours([(preds1, target1), (preds2, target2)])
    # Ours: Background pixels ignored, with what was predicted on them. Clean TP 3 / union 3 -> 1; Cracks 1/1 -> 1;
    # Lightleak absent from the scored pixels, left out. Mean over the 2 present classes: 1.
    assert ours["miou"] == pytest.approx(1.0)
    # Seeds: Background scored as Lightleak. Clean TP 3, union 3 + 1 (a Background pixel predicted Clean) -> 3/4;
    # Cracks 1; Lightleak TP 3 (of 4 Background pixels), union 4 -> 3/4. Mean over all 16 (13 absent count 0).
    assert seeds["miou"] == pytest.approx((3 / 4 + 1 + 3 / 4) / 16)
    # The seeds concatenated the batches: splitting them differently does not change their number...
    whole, _ = seeds_and_ours([(torch.cat([preds1, preds2]), torch.cat([target1, target2]))])
    assert whole["miou"] == pytest.approx(seeds["miou"]) and whole["n_images"] == seeds["n_images"] == 2
    # ...whereas a mean of per-batch scores would: batch 1 alone scores Clean 1, Cracks 1, Lightleak 1; batch 2
    # alone Clean 1/2 (TP 1, union 2) and Lightleak 2/3 (TP 2 of 3 Background pixels, union 3).
    per_batch = [seeds_and_ours([batch])[0]["miou"] for batch in ((preds1, target1), (preds2, target2))]
    assert per_batch == pytest.approx([3 / 16, (1 / 2 + 2 / 3) / 16])
    assert sum(per_batch) / 2 != pytest.approx(seeds["miou"])
    # The all-Clean baseline under their convention: Clean's share of the scored pixels, over 16 classes.
    assert seeds["all_clean_miou"] == pytest.approx(3 / 8 / 16)
    assert seeds["convention"] == metrics.SEEDS_CONVENTION and "artefact-poc59-v2" in seeds["source"]


def test_seeds_target_clips_background_and_keeps_padding_out():
    mask = np.array([[0, 7, 15, 255]], dtype=np.uint8)
    assert metrics.seeds_target(mask).tolist() == [[0, 7, 15, 15]]
    # padding added after the clipping (the letterbox's 255) is the only thing the accumulator ignores
    seeds = metrics.SeedsMeanIoU()
    seeds.update(torch.tensor([[0, 3]]), torch.tensor([[0, IGNORE]]))
    assert seeds.compute()["miou"] == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match="no scored pixel"):
        metrics.SeedsMeanIoU().compute()


class AllClean(torch.nn.Module):
    """Logits that put Clean first at every pixel."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(images.shape[0], C, *images.shape[2:])
        logits[:, taxonomy.CLASS_IDS["Clean"]] = 1.0
        return logits


def test_seeds_convention_evaluation_of_an_all_clean_model_is_their_all_clean_baseline(data_dir):
    from heritage.data import datafolder, datasets as data
    from heritage.training import evaluation
    from heritage import fileio

    ids = sorted(datafolder.read_metadata(data_dir)["id"])[:5]
    result = evaluation.evaluate_seeds_convention(AllClean(), data_dir, ids, evaluation.Letterboxed(32, 2),
                                                  torch.device("cpu"), None, False)
    assert result["n_images"] == 5 and result["miou"] == pytest.approx(result["all_clean_miou"])
    # by hand: Clean's share of the letterboxed pixels that are not padding, Background counted as Lightleak
    clean = scored = 0
    for sample_id in ids:
        mask = metrics.seeds_target(fileio.read_mask(datafolder.annotation_path(data_dir, sample_id)))
        boxed = data.letterbox(32)(image=fileio.read_rgb(datafolder.image_path(data_dir, sample_id)), mask=mask)["mask"]
        clean, scored = clean + int((boxed == 0).sum()), scored + int((boxed != IGNORE).sum())
    assert result["miou"] == pytest.approx(clean / scored / C)
