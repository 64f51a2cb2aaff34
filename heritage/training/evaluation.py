"""Scoring a model: the fine-class confusion over whole images with the sliding window, and the seeds' mIoU.

Validation during training, the final test evaluation, the seeds' convention and the benchmarks all
score here, so a metric means the same wherever it is reported. :func:`evaluate_images` is the one to read
first: per image, :func:`_label_maps` (tiling and the model), then :func:`_accumulate` (the dataset-level
confusion), :func:`_image_confusion` (the image's own) and :func:`_panel`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any, Mapping, NamedTuple, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from heritage.data import datasets, taxonomy, working
from heritage.modeling import metrics, models, thin_prior, tiling
from heritage.training.devices import Distributed, gather_from_processes, sum_over_processes, synchronize


@dataclass(frozen=True)
class Letterboxed:
    """How the seeds fed their model: batches of ``batch_size`` images letterboxed to ``image_size`` px."""

    image_size: int
    batch_size: int


@torch.inference_mode()
def evaluate_seeds_convention(model: nn.Module, data_dir: str | os.PathLike, ids: list[str], letterboxed: Letterboxed,
                              device: torch.device, dtype: torch.dtype | None, channels_last: bool) -> dict[str, Any]:
    """The seeds' mIoU (:class:`heritage.modeling.metrics.SeedsMeanIoU`) of ``ids``: ``letterboxed`` batches (the
    model's training input), autocast to ``dtype``, masks read as the seeds' loader read them
    (:func:`heritage.modeling.metrics.seeds_target`, before the letterbox, so only its padding is left out)."""
    from heritage import fileio
    from heritage.data import datafolder

    model.eval()
    accumulator = metrics.SeedsMeanIoU(device=device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    image_size, batch_size = letterboxed.image_size, letterboxed.batch_size
    letterbox = datasets.letterbox(image_size)
    for start in range(0, len(ids), batch_size):
        images, masks = [], []
        for sample_id in ids[start:start + batch_size]:
            mask = metrics.seeds_target(fileio.read_mask(datafolder.annotation_path(data_dir, sample_id)))
            boxed = letterbox(image=fileio.read_rgb(datafolder.image_path(data_dir, sample_id)), mask=mask)
            images.append(datasets.normalize(boxed["image"]))
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


def _channel_ranges(sizes: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    ends = list(accumulate(sizes.values()))
    return {name: (end - size, end) for (name, size), end in zip(sizes.items(), ends)}


# The hierarchical model's heads as channel ranges of one tensor, so one tiler blends all three.
HEADS = _channel_ranges({"fine": taxonomy.NUM_CLASSES, "binary": len(taxonomy.BINARY_NAMES),
                         "coarse": len(taxonomy.COARSE_NAMES)})
PANEL_SIDE = 512  # longest side of the prediction panels drawn from working-resolution evaluations
CHUNK_PIXELS = 1 << 22  # rows scored at a time: no full-size int64 copy of a large scan


class _HeadsAsChannels(nn.Module):
    """The heads' log-probabilities side by side, so the tiler blends all heads in one pass.

    The tiler takes one softmax over all channels; each head's exp(log-softmax) sums to 1, so that softmax
    gives each head's own probabilities divided by the number of heads: a constant factor, which changes
    neither the blend (a weighted mean) nor any head's argmax."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.model(images)
        return torch.cat([torch.log_softmax(outputs[name].float(), dim=1) for name in HEADS], dim=1)


@dataclass(frozen=True)
class Outputs:
    """What :func:`evaluate_images` returns beside the dataset-level metrics.

    ``panels``: the first images' :class:`Panel`, this many. ``per_image``: the result's ``per_image`` =
    ``{"ids": [...], "confusion": (n, 16, 16) int64 tensor}`` (a tensor, so a result kept in a resume checkpoint
    still loads with ``weights_only``). ``scores``: accumulators each fed every image and its fine prediction on
    the scored pixels (:class:`ImageScore`, e.g. :class:`heritage.modeling.thin.ThinDamageScores`); the caller
    reads their results."""

    panels: int = 0
    per_image: bool = False
    scores: Sequence[ImageScore] = ()


class Panel(NamedTuple):
    """One image as scored, shrunk to PANEL_SIDE for a prediction panel."""

    sample_id: str
    picture: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray


class ImageEvaluation(NamedTuple):
    """:func:`evaluate_images`' result: metrics.json's record, this process's images/s, the kept panels."""

    metrics: dict[str, Any]
    images_per_s: float
    panels: list[Panel]


@torch.inference_mode()
def evaluate_images(model: nn.Module, images: working.EvaluationSet, dist: Distributed, window: tiling.SlidingWindow,
                    hierarchical: bool = False, outputs: Outputs = Outputs(), progress: str | None = None
                    ) -> ImageEvaluation:
    """Metrics over whole images at the working resolution, images/s, and panels.

    Each image is predicted with :mod:`heritage.modeling.tiling`'s sliding ``window`` (tiles, Hann blending,
    flip TTA: the same code as ``python -m heritage predict``; autocast to its ``dtype``, the run's
    :func:`heritage.training.devices.autocast_dtype`, None = float32) on ``dist.device``; a letterbox model
    input is predicted whole (one tile) and its label map resized to the evaluation resolution with nearest
    neighbour. The confusion matrix is accumulated on those pixels, in row chunks (no full-size int64 copies).

    The metrics are :meth:`heritage.modeling.metrics.ConfusionMatrix.compute`'s dict plus ``confusion_matrix``
    (16 x 16 pixel counts, ground truth x prediction), ``all_clean_miou`` (the mIoU of predicting Clean
    everywhere on the same pixels: the trivial baseline) and ``per_image_miou`` (the mean over images of their
    own mIoU, :func:`heritage.modeling.metrics.mean_iou`); for the hierarchical model also ``hierarchical``:
    ``{"binary_miou", "coarse_miou", "fine_miou"}``. ``outputs`` adds per-image rows, panels and scores
    (:class:`Outputs`); ``progress``: the progress bar's label, None for no bar.

    With several processes (``dist.enabled``) every process must call it: each scores a shard of the images
    (every ``world_size``-th from its rank), the summable counts (the confusion matrices and every accumulator
    in ``outputs.scores``) are summed over the processes (:func:`heritage.training.devices.sum_over_processes`)
    and the per-image rows and panels gathered in the images' order, so every process returns the result, and
    holds the scores, one process would (images/s: its own shard's).
    """
    model.eval()
    device = dist.device
    shard = range(dist.rank, len(images), dist.world_size) if dist.enabled else range(len(images))
    matrices = metrics.HierarchicalMetrics(device=device) if hierarchical else metrics.ConfusionMatrix(device=device)
    heads = HEADS if hierarchical else {"fine": HEADS["fine"]}
    net = _HeadsAsChannels(model) if hierarchical else model
    panels: list[Panel] = []
    confusions = np.zeros((len(shard), taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES), dtype=np.int64)
    ids = []
    synchronize(device)
    start = time.perf_counter()
    for slot, index in enumerate(tqdm(shard, desc=progress, leave=False, disable=progress is None, unit="image")):
        item = images[index]
        ids.append(item.sample_id)
        maps = _label_maps(net, item, heads, window, device)
        for score in outputs.scores:
            score.update(item, maps["fine"])
        _accumulate(matrices, item.mask, maps, hierarchical)
        confusions[slot] = _image_confusion(item.mask, maps["fine"])
        if len(panels) < outputs.panels:
            panels.append(_panel(item, maps["fine"]))
    synchronize(device)
    seconds = time.perf_counter() - start
    if dist.enabled:
        ids, confusions, panels = _reduced([matrices, *outputs.scores], (list(shard), ids, confusions, panels),
                                           outputs.panels, dist)
    result = _evaluation_result(matrices, hierarchical)
    image_mious = metrics.mean_iou(metrics.iou_per_class(*metrics.class_counts(confusions)))
    scored = image_mious[~np.isnan(image_mious)]  # an image without a labelled pixel has no mIoU
    result = {"miou": result["miou"], "per_image_miou": float(scored.mean()) if len(scored) else None,
              "per_image_convention": metrics.PER_IMAGE_CONVENTION, **result}  # beside the dataset-level miou
    if outputs.per_image:
        result["per_image"] = {"ids": ids, "confusion": torch.from_numpy(confusions)}
    return ImageEvaluation(result, len(shard) / max(seconds, 1e-9), panels)  # this process's images


@torch.inference_mode()
def choose_thin_factor(model: nn.Module, images: working.EvaluationSet, window: tiling.SlidingWindow,
                       device: torch.device) -> thin_prior.FactorChoice:
    """The thin factor of a flat model on ``images`` (the validation part): per image, the odds map of its blended
    probabilities (:func:`heritage.modeling.thin_prior.thin_odds`, on the scored pixels as :func:`_label_maps`
    maps labels), swept over :data:`heritage.modeling.thin_prior.FACTORS` at once. Every process sweeps every
    image (the same choice everywhere, nothing to exchange)."""
    from PIL import Image

    model.eval()
    sweep = thin_prior.FactorSweep()
    unscaled = replace(window, class_scale=None)
    for index in range(len(images)):
        item = images[index]
        odds = np.empty(item.model_input.shape[:2], dtype=np.float32)
        for y0, probabilities in tiling.iter_probability_bands(model, item.model_input, unscaled, device,
                                                              progress=False):
            odds[y0:y0 + probabilities.shape[1]] = thin_prior.thin_odds(probabilities)
        height, width = item.mask.shape
        if (height, width) != odds.shape:  # letterbox: back to the scored pixels
            odds = np.asarray(Image.fromarray(odds).resize((width, height), Image.Resampling.NEAREST))
        sweep.add_scores(odds, item.mask)
    return sweep.choice()


def _label_maps(net: nn.Module, item: working.EvaluationImage, heads: Mapping[str, tuple[int, int]],
                window: tiling.SlidingWindow, device: torch.device) -> dict[str, np.ndarray]:
    """Each head's (H, W) uint8 labels of ``item`` on its scored pixels: the tiler's blended probabilities
    of its model input, argmax per head, resized back with nearest neighbour when the input was letterboxed."""
    from PIL import Image

    channels = max(hi for _, hi in heads.values())
    maps = {name: np.empty(item.model_input.shape[:2], dtype=np.uint8) for name in heads}
    for y0, probabilities in tiling.iter_probability_bands(net, item.model_input, window, device,
                                                          num_classes=channels, progress=False):
        rows = slice(y0, y0 + probabilities.shape[1])
        for name, (lo, hi) in heads.items():
            maps[name][rows] = probabilities[lo:hi].argmax(0).to(torch.uint8).cpu().numpy()
    height, width = item.mask.shape
    if (height, width) != item.model_input.shape[:2]:  # letterbox: back to the scored pixels
        maps = {name: np.array(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))
                for name, labels in maps.items()}
    return maps


def _chunks(height: int, width: int) -> range:
    """First rows of the row chunks an image is scored in."""
    return range(0, height, max(1, CHUNK_PIXELS // width))


def _accumulate(matrices: Any, mask: np.ndarray, maps: Mapping[str, np.ndarray], hierarchical: bool) -> None:
    """Add one image's pixels to the dataset-level confusion matrices (one image, however many chunks)."""
    chunks = _chunks(*mask.shape)
    for y0 in chunks:
        y1 = y0 + chunks.step
        target = torch.from_numpy(np.ascontiguousarray(mask[y0:y1]))[None]
        first = int(y0 == 0)
        if hierarchical:
            matrices.update({name: torch.from_numpy(labels[y0:y1])[None] for name, labels in maps.items()}, target,
                            n_images=first)
        else:
            matrices.update(torch.from_numpy(maps["fine"][y0:y1])[None], target, n_images=first)


def _image_confusion(mask: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """One image's own 16 x 16 fine confusion (for its per-image mIoU), counted in row chunks."""
    chunks = _chunks(*mask.shape)
    return sum((_confusion(mask[y0:y0 + chunks.step], prediction[y0:y0 + chunks.step]) for y0 in chunks),
               np.zeros((taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES), dtype=np.int64))


def _panel(item: working.EvaluationImage, prediction: np.ndarray) -> Panel:
    """Picture (area), truth and prediction (nearest) with the longest side at most PANEL_SIDE."""
    import cv2

    picture, truth = np.asarray(item.picture), np.asarray(item.mask)
    height, width = truth.shape
    factor = PANEL_SIDE / max(height, width)
    if factor >= 1:
        return Panel(item.sample_id, picture, truth, prediction)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return Panel(item.sample_id, cv2.resize(picture, size, interpolation=cv2.INTER_AREA),
                 cv2.resize(truth, size, interpolation=cv2.INTER_NEAREST),
                 cv2.resize(prediction, size, interpolation=cv2.INTER_NEAREST))


class _Gathered(NamedTuple):
    ids: list[str]
    confusions: np.ndarray
    panels: list[Panel]


def _reduced(accumulators: Sequence[Any], shard_rows: tuple[list[int], list[str], np.ndarray, list[Panel]], keep: int,
             dist: Distributed) -> _Gathered:
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
    return _Gathered(ids, confusions, [panel for _, panel in sorted(panels, key=lambda pair: pair[0])][:keep])


def _confusion(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """16 x 16 counts (truth x prediction) of one chunk; Background (255) rows fall past the first 256 codes."""
    codes = truth.astype(np.intp) * taxonomy.NUM_CLASSES + prediction
    counts = np.bincount(codes.ravel(), minlength=256 * taxonomy.NUM_CLASSES)
    return counts[: taxonomy.NUM_CLASSES ** 2].reshape(taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES)
