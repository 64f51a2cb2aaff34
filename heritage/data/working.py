"""Samples at a working resolution: memory-mapped caches, patch sampling, whole images for evaluation.

Where :mod:`heritage.data.datasets` letterboxes every sample to the model's input, a run with
``sampling: patch`` trains on crops of each sample at its working resolution (``native``, or a longest
side of at most N px): :class:`WorkingCache` writes every sample once as an ``.npy`` read back
memory-mapped, with its class counts and damage-pixel positions; :class:`PatchDataset` draws crops
(uniform, or centred on a damage class drawn by inverse pixel frequency); :class:`EvaluationSet`
gives whole images for scoring at the working resolution, so letterbox and patch runs are scored on
the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from heritage import errors, fileio
from heritage.data import datafolder, stats, taxonomy
from heritage.data.datasets import longest_side, pad_to, train_augmentation, training_pair

WORKING_CACHE_FORMAT = 1  # bump when the cached files change meaning
LOCATIONS_PER_CLASS = 1000  # stored damage-pixel positions per class and sample (crop centres)
DAMAGE_CLASSES = tuple(c for c in range(taxonomy.NUM_CLASSES) if c != taxonomy.CLASS_IDS["Clean"])
_CROP_STREAM = 0x6372  # keeps crop draws apart from the augmentation streams of the same (seed, epoch, index)
_CHUNK_PIXELS = 1 << 22  # pixels per row chunk when scanning a mask: bounds int64 temporaries


def resolution_tag(working_resolution: str | int) -> str:
    """Folder name of a working resolution in the cache: ``native`` or ``longest<N>``."""
    return "native" if working_resolution == "native" else f"longest{int(working_resolution)}"


def describe_resolution(working_resolution: str | int) -> str:
    """What ``working_resolution`` means, for metrics.json (``test.evaluated_at``)."""
    if working_resolution == "native":
        return "native: the data folder's stored size"
    return f"longest side at most {int(working_resolution)} px (the data folder's stored size below that)"


def to_working_resolution(image: np.ndarray, mask: np.ndarray, working_resolution: str | int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The stored sample at the working resolution: unchanged for ``native`` or when its longest side is
    at most N, else shrunk with training's letterbox resize (so at N = image_size the pixels are the
    letterbox's, without the padding)."""
    if working_resolution == "native" or max(mask.shape) <= int(working_resolution):
        return image, mask
    resized = longest_side(int(working_resolution))(image=image, mask=mask)
    return resized["image"], resized["mask"]


def read_sample(data_dir: str | os.PathLike, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The stored (image, mask) of a sample; an image and annotation of different sizes are refused."""
    image = fileio.read_rgb(datafolder.image_path(data_dir, sample_id))
    mask = fileio.read_mask(datafolder.annotation_path(data_dir, sample_id))
    if image.shape[:2] != mask.shape:
        raise errors.InputError(f"{datafolder.image_path(data_dir, sample_id)}: image is "
                                f"{image.shape[1]}x{image.shape[0]} but its annotation is {mask.shape[1]}x{mask.shape[0]}")
    return image, mask


class WorkingCache:
    """Samples at a working resolution, each written once as ``<folder>/<id>-<key>.npy`` ((H, W, 4) uint8:
    RGB then the mask) and read back memory-mapped, so a 100 MP scan costs no RAM until a crop is cut.

    Beside each, ``<id>-<key>.npz`` holds the pixel count of every class (``counts``) and up to
    :data:`LOCATIONS_PER_CLASS` (y, x) positions of each damage class present (``class<c>``), drawn
    uniformly: the centres of foreground crops. ``<key>`` hashes the format, the resolution and the
    files' size and mtime, so re-ingested data is cached anew. ``folder`` is
    ``<cache_dir or data_dir/cache>/<resolution_tag>``.
    """

    def __init__(self, data_dir: str | os.PathLike, working_resolution: str | int = "native",
                 cache_dir: str | os.PathLike | None = None):
        self.data_dir = Path(data_dir)
        self.working_resolution = working_resolution
        root = Path(cache_dir) if cache_dir is not None else self.data_dir / "cache"
        self.folder = root / resolution_tag(working_resolution)
        self._stems: dict[str, Path] = {}

    def stem(self, sample_id: str) -> Path:
        if sample_id not in self._stems:
            files = []
            for path in (datafolder.image_path(self.data_dir, sample_id),
                         datafolder.annotation_path(self.data_dir, sample_id)):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    raise errors.MissingInputError(f"{path}: file not found") from None
                files.append((stat.st_size, stat.st_mtime_ns))
            key = hashlib.sha256(json.dumps([WORKING_CACHE_FORMAT, resolution_tag(self.working_resolution),
                                             files]).encode("utf-8")).hexdigest()[:12]
            self._stems[sample_id] = self.folder / f"{sample_id}-{key}"
        return self._stems[sample_id]

    def ensure(self, ids: Sequence[str], progress: bool = True) -> None:
        """Write the files of every id that has none yet (once; later runs and processes map them)."""
        missing = [i for i in ids if not (self.stem(i).with_suffix(".npz").is_file()
                                          and self.stem(i).with_suffix(".npy").is_file())]
        for sample_id in tqdm(missing, desc=f"cache {resolution_tag(self.working_resolution)}", unit="image",
                              disable=True if not progress or not missing else None):  # None: off when not a tty
            self._write(sample_id)

    def _write(self, sample_id: str) -> None:
        image, mask = to_working_resolution(*read_sample(self.data_dir, sample_id), self.working_resolution)
        height, width = mask.shape
        counts = stats.mask_histogram(mask)
        if counts[taxonomy.NUM_CLASSES:taxonomy.IGNORE_INDEX].any():
            taxonomy.check_mask_values(mask, str(datafolder.annotation_path(self.data_dir, sample_id)))
        counts = counts[:taxonomy.NUM_CLASSES]
        stem = self.stem(sample_id)
        try:
            with fileio.atomic_path(stem.with_suffix(".npy")) as tmp:
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(height, width, 4))
                array[..., :3] = image
                array[..., 3] = mask
                array.flush()
                del array
            locations = _sample_locations(mask, counts, np.random.default_rng(WORKING_CACHE_FORMAT))
            with fileio.atomic_path(stem.with_suffix(".npz")) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, counts=counts, **{f"class{c}": xy for c, xy in locations.items()})
        except errors.OutputError as err:
            raise errors.OutputError(f"{err} (the working-resolution cache; set cache_dir= to a writable "
                                     "folder)") from None

    def array(self, sample_id: str) -> np.memmap:
        """(H, W, 4) uint8 memory map: RGB and the mask at the working resolution (:meth:`ensure` first)."""
        return np.load(self.stem(sample_id).with_suffix(".npy"), mmap_mode="r")

    def counts(self, sample_id: str) -> np.ndarray:
        with np.load(self.stem(sample_id).with_suffix(".npz")) as stored:
            return stored["counts"]

    def locations(self, sample_id: str, class_id: int) -> np.ndarray:
        """(n, 2) int32 (y, x) positions of ``class_id`` in the sample (empty when absent)."""
        with np.load(self.stem(sample_id).with_suffix(".npz")) as stored:
            key = f"class{class_id}"
            return stored[key] if key in stored.files else np.empty((0, 2), dtype=np.int32)


def _sample_locations(mask: np.ndarray, counts: np.ndarray, rng: np.random.Generator,
                      per_class: int = LOCATIONS_PER_CLASS) -> dict[int, np.ndarray]:
    """Up to ``per_class`` uniformly drawn (y, x) of each damage class, scanning the mask in row chunks."""
    height, width = mask.shape
    ranks = {c: np.sort(rng.choice(int(counts[c]), size=min(per_class, int(counts[c])), replace=False))
             for c in DAMAGE_CLASSES if counts[c]}
    found: dict[int, list[np.ndarray]] = {c: [] for c in ranks}
    seen = dict.fromkeys(ranks, 0)
    rows = max(1, _CHUNK_PIXELS // width)
    for y0 in range(0, height, rows):
        chunk = mask[y0:y0 + rows]
        for c, wanted in ranks.items():
            flat = np.flatnonzero(chunk == c)
            if flat.size:
                lo, hi = np.searchsorted(wanted, [seen[c], seen[c] + flat.size])
                picked = flat[wanted[lo:hi] - seen[c]]
                found[c].append(np.stack([picked // width + y0, picked % width], axis=1).astype(np.int32))
                seen[c] += flat.size
    return {c: np.concatenate(parts) for c, parts in found.items()}


@dataclass(frozen=True)
class Crop:
    """Where a training patch comes from: sample index, top-left corner, and the class it is centred on."""

    sample: int
    top: int
    left: int
    centred_on: int | None  # a damage class id for a foreground crop, None for a uniformly placed one


class PatchDataset(Dataset):
    """Random ``image_size`` crops of samples at the working resolution (``sampling: patch``).

    Item ``index`` of an epoch is a crop of sample ``index`` placed uniformly, except for a share
    ``foreground_share`` of items (a draw per item) that are centred on a labelled damage pixel in the
    style of nnU-Net: the class is drawn with probability proportional to the inverse of its pixel
    count over these (training) samples, so rare classes are seen, then a sample holding it and one of
    its stored positions (:class:`WorkingCache`). Every draw is a function of (seed, epoch, index), so
    crops are the same for any number of DataLoader workers and change with the epoch. A side shorter
    than ``image_size`` is padded (image FILL_RGB, mask Background 255). The training augmentation
    is then the letterbox mode's. The length is the number of samples: a patch epoch has as many steps
    and training pixels as a letterbox epoch at the same image_size.

    Only paths and per-class counts are held: each item maps its sample's .npy file and copies the
    crop out of it, so RAM does not grow with the scans.
    """

    def __init__(self, cache: WorkingCache, ids: Sequence[str], image_size: int, foreground_share: float = 0.33,
                 seed: int = 0, train: bool = True, progress: bool = True):
        self.ids = list(ids)
        if not self.ids:
            raise errors.InputError(f"{cache.data_dir}: PatchDataset needs at least one id")
        if not 0.0 <= foreground_share <= 1.0:
            raise errors.InputError(f"foreground_share: a share of crops is in [0, 1], got {foreground_share!r}")
        self.image_size = image_size
        self.foreground_share = foreground_share
        self.seed = seed
        self.epoch = 0
        self.cache = cache
        self.cache.ensure(self.ids, progress=progress)
        self.shapes = [tuple(self.cache.array(i).shape[:2]) for i in self.ids]
        counts = np.stack([self.cache.counts(i) for i in self.ids])  # (N, classes): small
        total = counts.sum(axis=0)
        self.classes = np.asarray([c for c in DAMAGE_CLASSES if total[c] > 0], dtype=np.int64)
        inverse = 1.0 / total[self.classes].astype(np.float64)
        self.class_probabilities = inverse / inverse.sum() if len(self.classes) else inverse
        self.holders = {int(c): np.flatnonzero(counts[:, c] > 0) for c in self.classes}
        self.augmentation = train_augmentation() if train else None

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def crop(self, index: int) -> Crop:
        """The crop item ``index`` of the current epoch takes (a function of seed, epoch and index)."""
        rng = np.random.default_rng([self.seed, self.epoch, index, _CROP_STREAM])
        size = self.image_size
        if len(self.classes) and rng.random() < self.foreground_share:
            class_id = int(rng.choice(self.classes, p=self.class_probabilities))
            sample = int(rng.choice(self.holders[class_id]))
            positions = self.cache.locations(self.ids[sample], class_id)
            y, x = positions[rng.integers(len(positions))]
            height, width = self.shapes[sample]
            top = min(max(int(y) - size // 2, 0), max(height - size, 0))
            left = min(max(int(x) - size // 2, 0), max(width - size, 0))
            return Crop(sample, top, left, class_id)
        height, width = self.shapes[index]
        return Crop(index, int(rng.integers(max(height - size, 0) + 1)), int(rng.integers(max(width - size, 0) + 1)),
                    None)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (image, mask) uint8 crop of item ``index``, padded to ``image_size``, before augmentation."""
        crop = self.crop(index)
        size = self.image_size
        patch = np.array(self.cache.array(self.ids[crop.sample])[crop.top:crop.top + size, crop.left:crop.left + size])
        image, mask = patch[..., :3], patch[..., 3]
        if mask.shape != (size, size):
            image, mask = pad_to(image, mask, size)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return training_pair(*self.load(index), self.augmentation, (self.seed, self.epoch, index))


@dataclass(frozen=True)
class EvaluationImage:
    """One whole image to score: what the model is given and the pixels it is scored on."""

    sample_id: str
    model_input: np.ndarray  # (h, w, 3) uint8: the working-resolution image, or (letterbox) its resized copy
    picture: np.ndarray  # (H, W, 3) uint8 at the evaluation resolution (a memory map)
    mask: np.ndarray  # (H, W) uint8 at the evaluation resolution (a memory map)


class EvaluationSet:
    """The whole images of ``ids`` at the working resolution, for sliding-window evaluation
    (:func:`heritage.training.evaluation.evaluate_images`), in both sampling modes.

    ``model_input="working"`` (patch runs) gives the model the working-resolution image, tiled;
    ``"letterbox"`` gives it what letterbox training gave it: the stored image with its longer side
    resized to ``image_size`` (the tiler pads it as the letterbox does), the prediction then being
    mapped back to the evaluation resolution with nearest neighbour. Either way the scored pixels are
    the masks of the data folder at ``working_resolution``.
    """

    def __init__(self, data_dir: str | os.PathLike, ids: Sequence[str], image_size: int,
                 working_resolution: str | int = "native", model_input: str = "working",
                 cache_dir: str | os.PathLike | None = None, progress: bool = True):
        if model_input not in ("working", "letterbox"):
            raise errors.InputError(f"model_input {model_input!r}: expected 'working' or 'letterbox'")
        self.ids = list(ids)
        if not self.ids:
            raise errors.InputError(f"{data_dir}: EvaluationSet needs at least one id")
        self.data_dir = Path(data_dir)
        self.image_size = image_size
        self.working_resolution = working_resolution
        self.model_input = model_input
        self.cache = WorkingCache(data_dir, working_resolution, cache_dir)
        self.cache.ensure(self.ids, progress=progress)

    def __len__(self) -> int:
        return len(self.ids)

    def scored(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index``'s (picture, mask) at the working resolution (memory maps): the scored pixels, without
        the model input (what a model-free score such as the residual filter reads)."""
        array = self.cache.array(self.ids[index])
        return array[..., :3], array[..., 3]

    def __getitem__(self, index: int) -> EvaluationImage:
        sample_id = self.ids[index]
        picture, mask = self.scored(index)
        model_input = picture
        if self.model_input == "letterbox":
            stored = (np.ascontiguousarray(picture) if self.working_resolution == "native"
                      else read_sample(self.data_dir, sample_id)[0])
            model_input = longest_side(self.image_size)(image=stored)["image"]
        return EvaluationImage(sample_id, model_input, picture, mask)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
