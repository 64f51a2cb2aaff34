"""The sliding window: a whole image cut into tiles, predicted in batches, blended back.

One home for the tiler that ``python -m heritage predict`` and the evaluation of every run
(:func:`heritage.training.evaluation.evaluate_images`) share, below both: tiles of ``tile`` px in raster order,
Hann (or Gaussian) blending weights, a side shorter than a tile padded as the letterbox pads
(:func:`heritage.data.datasets.pad_image`), batches normalised on the device (:func:`heritage.data.datasets.normalize_tiles`).

Memory. Tiles are predicted in raster order and blended into a :class:`BandBlender` that holds
one band of ``tile`` rows across the image width (on a narrow scan, one batch of tiles' pixels);
rows are finalised (argmax) once no later tile reaches them. The float buffers therefore grow with
tile x width (or the batch), never with the height, and no full-resolution 16-class float map
exists.

torch is imported inside the functions, so that importing this module (``predict --help``) stays fast.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np

from heritage import errors
from heritage.data import taxonomy

if TYPE_CHECKING:
    import torch

WINDOWS = ("hann", "gaussian")


@dataclass(frozen=True)
class SlidingWindow:
    """How a scan is cut into tiles and blended back."""

    tile: int = 384
    overlap: float = 0.25  # fraction of a tile shared with its neighbour
    window: str = "hann"
    batch_size: int = 8
    tta: bool = False  # average with horizontally and vertically flipped predictions
    # Autocast dtype of the forward passes, None = float32: a run's own choice,
    # heritage.training.devices.autocast_dtype(config amp, device), so a bf16-trained run is predicted in bf16.
    dtype: torch.dtype | None = None
    # Per-class multipliers of the blended probabilities, renormalised (a shift of the classes' prior), None = the
    # model's own: a calibrated run's thin factor (heritage.modeling.thin_prior.class_scale).
    class_scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise errors.InputError(f"tile {self.tile}: must be a positive number of pixels")
        if not 0.0 <= self.overlap < 1.0:
            raise errors.InputError(f"overlap {self.overlap}: must be in [0, 1)")
        if self.window not in WINDOWS:
            raise errors.InputError(f"window {self.window!r}: expected one of {', '.join(WINDOWS)}")
        if self.batch_size < 1:
            raise errors.InputError(f"batch size {self.batch_size}: must be at least 1")
        if self.class_scale is not None and not all(value > 0 for value in self.class_scale):
            raise errors.InputError(f"class scale {self.class_scale}: every multiplier must be positive")

    @property
    def stride(self) -> int:
        return max(1, round(self.tile * (1.0 - self.overlap)))


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles covering ``length`` pixels; the last tile ends exactly at the edge.

    ``length`` must be at least ``tile`` (shorter images are padded first).
    """
    if length < tile:
        raise errors.InputError(f"length {length} is shorter than the tile {tile}; pad the image first")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_positions(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(y, x) starts of the tiles covering a (height, width) image in raster order, the order they are
    predicted and blended in; both sides must be at least ``tile`` (shorter images are padded first)."""
    return [(y, x) for y in tile_starts(height, tile, stride) for x in tile_starts(width, tile, stride)]


def tile_grid(height: int, width: int, options: SlidingWindow) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The tiles over a (height, width) image and the blending weights they sum to at each pixel.

    Returns the :func:`tile_positions` and the (max(height, tile), max(width, tile)) float64 sum of their
    :func:`tile_window` weights, what the blend divides by (a side shorter than a tile is extended to
    one tile at its end): for showing how a scan is tiled, not used by the prediction itself.
    """
    total = np.zeros((max(height, options.tile), max(width, options.tile)))
    weights = tile_window(options.tile, options.window)
    positions = tile_positions(total.shape[0], total.shape[1], options.tile, options.stride)
    for y, x in positions:
        total[y:y + options.tile, x:x + options.tile] += weights
    return positions, total


def tile_window(tile: int, kind: str) -> np.ndarray:
    """(tile, tile) float32 blending weights, highest in the centre and positive everywhere.

    Hann is sampled at pixel centres, ``sin²(π(i+½)/tile)``, so even border pixels get a small
    positive weight: a pixel that only one tile covers (the image border) is still predicted.
    With 50 % overlap the Hann weights of neighbouring tiles sum to exactly 1. Gaussian uses
    σ = tile/8 (edge weight e⁻⁸).
    """
    centres = np.arange(tile, dtype=np.float64) + 0.5
    if kind == "hann":
        profile = np.sin(np.pi * centres / tile) ** 2
    elif kind == "gaussian":
        profile = np.exp(-0.5 * ((centres - tile / 2) / (tile / 8)) ** 2)
    else:
        raise errors.InputError(f"window {kind!r}: expected one of {', '.join(WINDOWS)}")
    return np.outer(profile, profile).astype(np.float32)


class BandBlender:
    """Window-weighted sums of tile probabilities for one band of ``rows`` rows x the image width.

    Buffers are (classes, rows, width) and (rows, width) float32; :func:`band_rows` sizes the band
    from the tile, the width and the batch, never from the image height. Only image pixels are
    held: tiles arrive cropped to the image.
    """

    def __init__(self, num_classes: int, rows: int, width: int, device: torch.device) -> None:
        import torch

        self.rows = rows
        self.sums = torch.zeros((num_classes, rows, width), dtype=torch.float32, device=device)
        self.weights = torch.zeros((rows, width), dtype=torch.float32, device=device)

    def add(self, y: int, x: int, probabilities: torch.Tensor, window: torch.Tensor) -> None:
        """Blend one tile's (classes, rows, columns) probabilities in at band row ``y``, column ``x``."""
        rows, columns = probabilities.shape[-2:]
        self.sums[:, y:y + rows, x:x + columns].addcmul_(probabilities, window)  # no temporary
        self.weights[y:y + rows, x:x + columns] += window

    def pop(self, rows: int) -> torch.Tensor:
        """Normalised probabilities of the band's first ``rows`` rows; the band moves down by ``rows``."""
        done = self.sums[:, :rows] / self.weights[:rows]
        keep = self.rows - rows
        self.sums[:, :keep] = self.sums[:, rows:].clone()
        self.sums[:, keep:] = 0.0
        self.weights[:keep] = self.weights[rows:].clone()
        self.weights[keep:] = 0.0
        return done


def band_rows(height: int, width: int, tile: int, batch_size: int) -> int:
    """Rows of the blending band: a tile's rows, or for a narrow scan one batch of tiles' pixels.

    A band of ``tile`` rows is finished once per row of tiles; on a narrow scan that is once per
    few pixels, and the fixed cost of each finishing step would make a tall scan slower than its
    transpose. So the band holds at least ``batch_size`` tiles' worth of pixels (as much memory
    as the batch's own probabilities): never more rows than the image, never fewer than a tile.
    """
    return min(height, max(tile, -(-batch_size * tile * tile // width)))


def iter_probability_bands(
    model: torch.nn.Module,
    image: np.ndarray,
    options: SlidingWindow,
    device: torch.device,
    num_classes: int = taxonomy.NUM_CLASSES,
    progress: bool = True,
    desc: str | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Blended class probabilities of an (H, W, 3) uint8 image, one finished band of rows at a time.

    Yields ``(y0, probabilities)`` with probabilities a (classes, rows, W) float32 tensor on
    ``device`` for image rows ``y0 .. y0 + rows``, top to bottom (shifted by ``options.class_scale``
    when it is set). Images smaller than a tile are padded, so every tile has exactly ``options.tile``
    pixels a side.

    The work depends on the pixels, not on the orientation: the tiles of a scan and of its transpose
    are as many, they go to the model in full batches of ``options.batch_size`` in both cases
    (batches run across rows of tiles), only the image part of each tile is blended, and a narrow
    scan's band spans many rows of tiles (:func:`band_rows`).
    """
    import torch

    if options.class_scale is not None and len(options.class_scale) != num_classes:
        raise errors.InputError(f"class scale of {len(options.class_scale)} classes for a model of {num_classes}")
    scale = None if options.class_scale is None else torch.tensor(options.class_scale, device=device)[:, None, None]
    for y0, probabilities in _blended_bands(model, image, options, device, num_classes, progress, desc):
        if scale is not None:
            probabilities = probabilities * scale
            probabilities /= probabilities.sum(0, keepdim=True)
        yield y0, probabilities


def _blended_bands(model: torch.nn.Module, image: np.ndarray, options: SlidingWindow, device: torch.device,
                   num_classes: int, progress: bool, desc: str | None) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`iter_probability_bands` before the class scale: the model's blended probabilities."""
    import torch
    from tqdm import tqdm

    from heritage.data import datasets

    height, width = image.shape[:2]
    tile = options.tile
    # Like training's letterbox: a side shorter than a tile is padded on both sides with FILL_RGB
    # (a scan at least a tile a side is not copied).
    (top, _), (left, _) = datasets.padding(height, width, tile)
    padded = datasets.pad_image(image, tile) if tile > min(height, width) else image
    ys = tile_starts(padded.shape[0], tile, options.stride)
    xs = tile_starts(padded.shape[1], tile, options.stride)
    positions = tile_positions(padded.shape[0], padded.shape[1], tile, options.stride)  # raster order
    # The image part of every tile: padding is never blended. A padded side has a single tile at 0,
    # so padded and image coordinates of tile starts agree.
    crop = (slice(top, top + min(tile, height)), slice(left, left + min(tile, width)))
    window = torch.from_numpy(np.ascontiguousarray(tile_window(tile, options.window)[crop])).to(device)
    blender = BandBlender(num_classes, band_rows(height, width, tile, options.batch_size), width, device)
    origin = 0  # the image row of the band's first row
    # Batches run across rows of tiles: a tall, narrow scan has one tile per row and would otherwise
    # call the model once per tile. Tiles of later rows wait in `ahead` until their row is blended;
    # `ahead` is empty whenever a batch is predicted, so at most one batch's output is held.
    ahead: deque[tuple[int, int, torch.Tensor]] = deque()
    predicted = 0
    with tqdm(total=len(positions), desc=desc, unit="tile", disable=not progress) as bar:
        for row, y in enumerate(ys):
            if y + min(tile, height) > origin + blender.rows:  # full: rows above y are finished
                yield origin, blender.pop(y - origin)
                origin = y
            while ahead and ahead[0][0] == y:
                blender.add(y - origin, *ahead.popleft()[1:], window)
            while predicted < (row + 1) * len(xs):
                batch = positions[predicted:predicted + options.batch_size]
                predicted += len(batch)
                tiles = np.stack([padded[ty:ty + tile, tx:tx + tile] for ty, tx in batch])
                probabilities = predict_tiles(model, tiles, options.tta, device, options.dtype)
                if probabilities.shape[1] != num_classes:
                    raise errors.InputError(f"the model predicts {probabilities.shape[1]} classes, "
                                     f"expected {num_classes}")
                for (ty, tx), tile_probabilities in zip(batch, probabilities[:, :, crop[0], crop[1]]):
                    if ty == y:
                        blender.add(y - origin, tx, tile_probabilities, window)
                    else:
                        ahead.append((ty, tx, tile_probabilities))
                del probabilities, tile_probabilities  # only `ahead` may keep a batch past the next one
                bar.update(len(batch))
        yield origin, blender.pop(height - origin)


def predict_tiles(model: torch.nn.Module, tiles: np.ndarray, tta: bool, device: torch.device,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, classes, T, T) float32 softmax probabilities of (B, T, T, 3) uint8 tiles, autocast to ``dtype``."""
    import torch

    from heritage.data.datasets import normalize_tiles
    from heritage.modeling.models import fine_logits

    batch = normalize_tiles(tiles, device)
    flips: list[list[int]] = [[], [3], [2]] if tta else [[]]  # identity, horizontal, vertical
    total = None
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for dims in flips:
            flipped = batch.flip(dims) if dims else batch
            probabilities = torch.softmax(fine_logits(model(flipped)).float(), dim=1)
            probabilities = probabilities.flip(dims) if dims else probabilities
            total = probabilities if total is None else total + probabilities
    return total / len(flips)


def predict_labels(model: torch.nn.Module, image: np.ndarray, options: SlidingWindow,
                   device: torch.device, progress: bool = True, desc: str | None = None) -> np.ndarray:
    """(H, W) uint8 class ids of an (H, W, 3) uint8 image by sliding-window inference."""
    import torch

    labels = np.empty(image.shape[:2], dtype=np.uint8)
    for y0, probabilities in iter_probability_bands(model, image, options, device,
                                                    progress=progress, desc=desc):
        labels[y0:y0 + probabilities.shape[1]] = probabilities.argmax(0).to(torch.uint8).cpu().numpy()
    return labels
