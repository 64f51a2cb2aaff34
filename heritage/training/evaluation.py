"""Scoring a model: the fine-class confusion over a loader or over whole images with the sliding window.

Validation during training, the final test evaluation, the seeds' convention and the benchmarks all
score here, so a metric means the same wherever it is reported.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from heritage.data import datasets as data, taxonomy, working
from heritage.modeling import metrics, models, tiling
from heritage.training.devices import Distributed, gather_from_processes, sum_over_processes, synchronize


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, dtype: torch.dtype | None,
             channels_last: bool, hierarchical: bool, desc: str = "eval", progress: bool = True
             ) -> tuple[dict[str, Any], float]:
    """Fine-class metrics over the whole loader (one confusion matrix, not per-batch means), images/s.

    The result is :meth:`heritage.modeling.metrics.ConfusionMatrix.compute`'s dict plus ``confusion_matrix``
    (16 x 16 pixel counts, ground truth x prediction) and ``all_clean_miou`` (the mIoU of predicting
    Clean everywhere on the same pixels: the trivial baseline); for the hierarchical model it also holds
    ``hierarchical``: ``{"binary_miou", "coarse_miou", "fine_miou"}``.
    """
    model.eval()
    matrices = metrics.HierarchicalMetrics(device=device) if hierarchical else metrics.ConfusionMatrix(device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    synchronize(device)
    start = time.perf_counter()
    for images, masks in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        images, masks = data.batch_to_device(images, masks, device, memory_format)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = model(images)
        matrices.update(outputs, masks)
    synchronize(device)
    seconds = time.perf_counter() - start
    result = _evaluation_result(matrices, hierarchical)
    return result, result["n_images"] / max(seconds, 1e-9)


@torch.inference_mode()
def evaluate_seeds_convention(model: nn.Module, data_dir: str | os.PathLike, ids: list[str], image_size: int,
                              batch_size: int, device: torch.device, dtype: torch.dtype | None,
                              channels_last: bool) -> dict[str, Any]:
    """The seeds' mIoU (:class:`heritage.modeling.metrics.SeedsMeanIoU`) of ``ids``: batches of ``batch_size``
    letterboxed images at ``image_size`` (the model's training input), masks read as the seeds' loader read
    them (:func:`heritage.modeling.metrics.seeds_target`, before the letterbox, so only its padding is left out)."""
    from heritage import fileio
    from heritage.data import datafolder

    model.eval()
    accumulator = metrics.SeedsMeanIoU(device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    letterbox = data.letterbox(image_size)
    for start in range(0, len(ids), batch_size):
        images, masks = [], []
        for sample_id in ids[start:start + batch_size]:
            mask = metrics.seeds_target(fileio.read_mask(datafolder.annotation_path(data_dir, sample_id)))
            boxed = letterbox(image=fileio.read_rgb(datafolder.image_path(data_dir, sample_id)), mask=mask)
            images.append(data.normalize(boxed["image"]))
            masks.append(torch.from_numpy(boxed["mask"].astype(np.int64)))
        batch = torch.stack(images).to(device, memory_format=memory_format)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = models.fine_logits(model(batch))
        accumulator.update(logits.float(), torch.stack(masks).to(device))
    return {**accumulator.compute(), "evaluated_at": f"letterboxed batches of {batch_size} at {image_size} px "
                                                      "(the model's training input), as the seeds evaluated"}


def _evaluation_result(matrices: Any, hierarchical: bool) -> dict[str, Any]:
    """metrics.json's evaluation record: fine-class scores, the all-Clean baseline on the same pixels,
    the confusion matrix, and per-level scores for a hierarchical model."""
    fine = matrices.fine if hierarchical else matrices
    result = {**fine.compute(), "all_clean_miou": metrics.constant_prediction_miou(fine.matrix),
              "confusion_matrix": fine.matrix.cpu().tolist()}
    if hierarchical:
        result["hierarchical"] = matrices.compute()
    return result


class ImageScore(Protocol):
    """A score accumulated over whole images: ``update`` takes the image (its ``picture`` and ``mask`` at the
    scored resolution) and the model's fine prediction on those pixels. Its state is summable counts
    (``state_dict``/``load_state_dict``, as :class:`heritage.modeling.counts.SummedCounts`), so the shards of a
    multi-process evaluation combine."""

    def update(self, image: working.EvaluationImage, prediction: np.ndarray) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


# The hierarchical model's heads as channel ranges of one tensor, so one tiler blends all three.
HEADS = {"fine": (0, 16), "binary": (16, 18), "coarse": (18, 22)}
PANEL_SIDE = 512  # longest side of the prediction panels drawn from working-resolution evaluations


class _HeadsAsChannels(nn.Module):
    """The heads' log-probabilities side by side: the tiler's softmax over all of them gives each head's
    probabilities / 3, so blending and the per-head argmax are those of each head on its own."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.model(images)
        return torch.cat([torch.log_softmax(outputs[name].float(), dim=1) for name in HEADS], dim=1)


@torch.inference_mode()
def evaluate_images(model: nn.Module, images: working.EvaluationSet, device: torch.device, hierarchical: bool,
                    tile: int, batch_size: int, desc: str = "eval", progress: bool = True, keep: int = 0,
                    per_image: bool = False, dtype: torch.dtype | None = None, tta: bool = False,
                    scores: Sequence[ImageScore] = (), dist: Distributed | None = None
                    ) -> tuple[dict[str, Any], float, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]:
    """:func:`evaluate`'s result over whole images at the working resolution, images/s, and panels.

    Each image is predicted with :mod:`heritage.modeling.tiling`'s sliding window (tiles of ``tile`` px, Hann
    blending, ``tta``: with flips, the same code as ``python -m heritage predict``; autocast to ``dtype``, the run's
    :func:`heritage.training.devices.autocast_dtype`, None = float32); a letterbox model input is predicted
    whole (one tile) and its label map resized to the evaluation resolution with nearest neighbour.
    The confusion matrix is accumulated on those pixels, in row chunks (no full-size int64 copies).
    ``keep``: the first images' (id, picture, truth, prediction), shrunk to PANEL_SIDE, for panels.
    Each image's own (fine) confusion is counted too (a bincount of the same pixels): the result's
    ``per_image_miou`` is the mean over images of their mIoU (:func:`heritage.modeling.metrics.mean_iou`), and with
    ``per_image`` the result also holds ``per_image`` = ``{"ids": [...], "confusion": (n, 16, 16) int64
    tensor}`` (a tensor, so a result kept in a resume checkpoint still loads with ``weights_only``).
    ``scores``: accumulators each fed every image and its fine prediction on the scored pixels
    (:class:`ImageScore`, e.g. :class:`heritage.modeling.thin.ThinDamageScores`); the caller reads their results.

    With ``dist`` (several processes) every process must call it: each scores a shard of the images (every
    ``world_size``-th from its rank), the summable counts (the confusion matrices and every accumulator in
    ``scores``) are summed over the processes (:func:`heritage.training.devices.sum_over_processes`) and the
    per-image rows and panels gathered in the images' order, so every process returns the result, and holds
    the scores, one process would (images/s: its own shard's).
    """
    from PIL import Image

    model.eval()
    distributed = dist is not None and dist.enabled
    shard = range(dist.rank, len(images), dist.world_size) if distributed else range(len(images))
    options = tiling.SlidingWindow(tile=tile, batch_size=batch_size, dtype=dtype, tta=tta)
    matrices = metrics.HierarchicalMetrics(device=device) if hierarchical else metrics.ConfusionMatrix(device=device)
    heads = HEADS if hierarchical else {"fine": HEADS["fine"]}
    net = _HeadsAsChannels(model) if hierarchical else model
    channels = max(hi for _, hi in heads.values())
    panels = []
    confusions = np.zeros((len(shard), taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES), dtype=np.int64)
    ids = []
    synchronize(device)
    start = time.perf_counter()
    bar = tqdm(shard, desc=desc, leave=False, disable=not progress, unit="image")
    for slot, index in enumerate(bar):
        item = images[index]
        ids.append(item.sample_id)
        maps = {name: np.empty(item.model_input.shape[:2], dtype=np.uint8) for name in heads}
        for y0, probabilities in tiling.iter_probability_bands(net, item.model_input, options, device,
                                                              num_classes=channels, progress=False):
            rows = slice(y0, y0 + probabilities.shape[1])
            for name, (lo, hi) in heads.items():
                maps[name][rows] = probabilities[lo:hi].argmax(0).to(torch.uint8).cpu().numpy()
        height, width = item.mask.shape
        if (height, width) != item.model_input.shape[:2]:  # letterbox: back to the scored pixels
            maps = {name: np.array(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))
                    for name, labels in maps.items()}
        for score in scores:
            score.update(item, maps["fine"])
        rows = max(1, (1 << 22) // width)
        for y0 in range(0, height, rows):
            target = torch.from_numpy(np.ascontiguousarray(item.mask[y0:y0 + rows]))[None]
            predicted = {name: torch.from_numpy(labels[y0:y0 + rows])[None] for name, labels in maps.items()}
            first = int(y0 == 0)  # one image per image, however many chunks
            confusions[slot] += _confusion(target[0].numpy(), predicted["fine"][0].numpy())
            if hierarchical:
                matrices.update(predicted, target, n_images=first)
            else:
                matrices.update(predicted["fine"], target, n_images=first)
        if len(panels) < keep:
            panels.append((item.sample_id, *_shrunk(np.asarray(item.picture), np.asarray(item.mask), maps["fine"])))
    synchronize(device)
    seconds = time.perf_counter() - start
    if distributed:
        ids, confusions, panels = _reduced([matrices, *scores], (list(shard), ids, confusions, panels), keep, dist)
    result = _evaluation_result(matrices, hierarchical)
    image_mious = metrics.mean_iou(metrics.iou_per_class(*metrics.class_counts(confusions)))
    scored = image_mious[~np.isnan(image_mious)]  # an image without a labelled pixel has no mIoU
    result = {"miou": result["miou"], "per_image_miou": float(scored.mean()) if len(scored) else None,
              "per_image_convention": metrics.PER_IMAGE_CONVENTION, **result}  # beside the dataset-level miou
    if per_image:
        result["per_image"] = {"ids": ids, "confusion": torch.from_numpy(confusions)}
    return result, len(shard) / max(seconds, 1e-9), panels  # this process's images


def _reduced(accumulators: Sequence[Any], shard_rows: tuple[list[int], list[str], np.ndarray, list[Any]], keep: int,
             dist: Distributed) -> tuple[list[str], np.ndarray, list[Any]]:
    """Sum the processes' ``accumulators`` (anything whose ``state_dict()`` is summable counts and which
    ``load_state_dict()`` takes back: confusion matrices, :class:`heritage.modeling.counts.SummedCounts`) on
    every process, and gather the per-image rows (ids, confusions) and panels in the images' order:
    (ids, confusions, the first ``keep`` panels)."""
    for accumulator in accumulators:
        accumulator.load_state_dict(sum_over_processes(accumulator.state_dict(), dist))
    indices, rows, panels = [], [], []
    for shard, ids, confusions, shard_panels in gather_from_processes(shard_rows, dist):
        indices += shard
        rows += zip(ids, confusions)
        panels += zip(shard, shard_panels)  # a shard's panels are its first images
    order = np.argsort(indices, kind="stable")
    ids = [rows[i][0] for i in order]
    confusions = np.stack([rows[i][1] for i in order]) if rows else np.zeros((0,) + (taxonomy.NUM_CLASSES,) * 2,
                                                                             dtype=np.int64)
    return ids, confusions, [panel for _, panel in sorted(panels, key=lambda pair: pair[0])][:keep]


def _confusion(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """16 x 16 counts (truth x prediction) of one chunk; Background (255) rows fall past the first 256 codes."""
    codes = truth.astype(np.intp) * taxonomy.NUM_CLASSES + prediction
    counts = np.bincount(codes.ravel(), minlength=256 * taxonomy.NUM_CLASSES)
    return counts[: taxonomy.NUM_CLASSES ** 2].reshape(taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES)


def _shrunk(picture: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, ...]:
    """Picture (area), truth and prediction (nearest) with the longest side at most PANEL_SIDE."""
    import cv2

    height, width = truth.shape
    factor = PANEL_SIDE / max(height, width)
    if factor >= 1:
        return picture, truth, prediction
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return (cv2.resize(picture, size, interpolation=cv2.INTER_AREA),
            cv2.resize(truth, size, interpolation=cv2.INTER_NEAREST),
            cv2.resize(prediction, size, interpolation=cv2.INTER_NEAREST))
