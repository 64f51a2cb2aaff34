"""Torch dataset over a data folder, its transforms, a RAM/`/dev/shm` preload cache, and loaders.

Every sample is brought to a uniform ``S x S`` square by *letterboxing*: the longer side is resized
to S (area averaging when shrinking, bilinear when enlarging; masks nearest neighbour) and the
shorter side padded, image with the ImageNet mean colour (0 after normalisation) and mask with
Background 255 (ignored). Aspect ratios are kept, so thin damage (cracks, hair, scratches) is not
stretched differently from one artwork to the next. Training adds albumentations flips, a mild
affine and colour jitter, whose padding is again 255 in the mask.

Resizing happens once: :class:`PreloadCache` decodes every image, letterboxes it and keeps the uint8
result in one contiguous array (RGB + mask as a 4th channel), either in RAM (DataLoader workers
forked after it is built read it without copies) or in a file under ``/dev/shm`` that other jobs on
the node map instead of rebuilding (the seeds' multi-job option).

Determinism: the random augmentation of a sample is seeded from (dataset seed, epoch, index), so it
does not depend on the number of workers; the shuffling order comes from (loader seed, epoch).
Call :func:`set_epoch` before every epoch.

:func:`padding`/:func:`pad_image`/:func:`pad_to` pad the way the letterbox does, for sides below a tile or
a crop (the sliding window, patches). Training at a working resolution (patches, whole-image
evaluation) is :mod:`heritage.data.working`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler
from tqdm import tqdm

from heritage import errors, fileio
from heritage.data import datafolder, taxonomy
from heritage.data.augment import FILL_RGB

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32) * 255.0
_INV_STD = 1.0 / (np.asarray(IMAGENET_STD, dtype=np.float32) * 255.0)
_CACHE_FORMAT = 1  # bump when the cached arrays change meaning


def longest_side(size: int) -> A.LongestMaxSize:
    """Resize so the longer side is ``size`` (area averaging when shrinking; masks nearest neighbour)."""
    return A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR,
                            mask_interpolation=cv2.INTER_NEAREST, area_for_downscale="image")


def letterbox(image_size: int) -> A.Compose:
    """Resize the longer side to ``image_size`` and pad to a square (mask padding = 255)."""
    return A.Compose([
        longest_side(image_size),
        A.PadIfNeeded(min_height=image_size, min_width=image_size, position="center",
                      border_mode=cv2.BORDER_CONSTANT, fill=FILL_RGB, fill_mask=taxonomy.IGNORE_INDEX),
    ])


def train_augmentation() -> A.Compose:
    """Random flips, a mild affine and colour jitter; pixels moved in from outside are 255 in the mask."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-15, 15),
                 interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                 border_mode=cv2.BORDER_CONSTANT, fill=FILL_RGB, fill_mask=taxonomy.IGNORE_INDEX, p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
    ])


def seed_transforms(compose: A.Compose, seed: Sequence[int]) -> None:
    """Give each transform of ``compose`` its own stream derived from ``seed``.

    ``Compose.set_random_seed`` hands every transform the *same* seed in albumentations 2.0, which
    makes e.g. HorizontalFlip(p=0.5) and VerticalFlip(p=0.5) fire together every time.
    """
    states = np.random.SeedSequence(list(seed)).generate_state(len(compose.transforms))
    for transform, state in zip(compose.transforms, states):
        transform.set_random_seed(int(state))


def load_resized(data_dir: str | os.PathLike, sample_id: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode one sample and letterbox it: (S, S, 3) uint8 image and (S, S) uint8 mask."""
    image = fileio.read_rgb(datafolder.image_path(data_dir, sample_id))
    mask = fileio.read_mask(datafolder.annotation_path(data_dir, sample_id))
    if image.shape[:2] != mask.shape:
        raise errors.InputError(f"{datafolder.image_path(data_dir, sample_id)}: image is "
                                f"{image.shape[1]}x{image.shape[0]} but its annotation is {mask.shape[1]}x{mask.shape[0]}")
    resized = letterbox(image_size)(image=image, mask=mask)
    return resized["image"], resized["mask"]


def normalize(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 with ImageNet mean/std (on the CPU: the loaders' samples)."""
    return torch.from_numpy(((image.astype(np.float32) - _MEAN) * _INV_STD).transpose(2, 0, 1).copy())


def normalize_tiles(tiles: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, T, T, 3) uint8 -> (B, 3, T, T) float32 with ImageNet mean/std, computed on ``device`` (the
    sliding window's batches: only uint8 crosses to the GPU). Its float rounding is not :func:`normalize`'s
    (x / 255 - mean) / std against (x - 255 mean) / (255 std)): each is kept as it scored every run so far."""
    return normalize_on_device(torch.from_numpy(tiles), device)


def normalize_on_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 with ImageNet mean/std, computed on ``device``: only uint8
    crosses to it (a quarter of float32's bytes). The result is channels_last in memory (the permuted
    HWC batch); ``.contiguous()`` gives the other layout."""
    batch = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std)


def batch_to_device(images: torch.Tensor, masks: torch.Tensor, device: torch.device,
                    memory_format: torch.memory_format = torch.contiguous_format) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader's uint8 batch ((B, H, W, 3) images, (B, H, W) masks) on ``device``: images normalised there
    (:func:`normalize_on_device`) in ``memory_format``, masks as int64 class ids (255 ignored)."""
    normalised = normalize_on_device(images, device).contiguous(memory_format=memory_format)
    return normalised, masks.to(device, non_blocking=True).long()


class PreloadCache:
    """Letterboxed uint8 samples decoded once, in RAM or in a reusable file under ``shm_dir``.

    ``array`` is (N, S, S, 4) uint8: RGB then the mask. In RAM it is one anonymous buffer that
    forked DataLoader workers share copy-on-write without ever copying it (it is never written
    after construction). With ``shm_dir`` (e.g. ``/dev/shm``) it is a .npy file named after a hash of
    the data folder's files, the ids and the size; later jobs on the node memory-map it.
    """

    def __init__(self, data_dir: str | os.PathLike, ids: Sequence[str], image_size: int,
                 shm_dir: str | os.PathLike | None = None, progress: bool = True):
        self.data_dir = Path(data_dir)
        self.ids = list(ids)
        self.image_size = image_size
        self.progress = progress  # a bar while decoding (off in notebooks: it would land in the report)
        self.index = {sample_id: row for row, sample_id in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise errors.InputError("PreloadCache: duplicated ids")
        shape = (len(self.ids), image_size, image_size, 4)
        if shm_dir is None:
            self.path = None
            self.array = self._fill(np.empty(shape, dtype=np.uint8))
            return
        self.path = Path(shm_dir) / f"heritage-cache-{self._key()}.npy"
        if not self.path.is_file():
            with fileio.atomic_path(self.path) as tmp:
                self._fill(np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)).flush()
        self.array = np.load(self.path, mmap_mode="r")
        if self.array.shape != shape:
            raise errors.InputError(f"{self.path}: cached array has shape {self.array.shape}, expected {shape}")

    def _fill(self, array: np.ndarray) -> np.ndarray:
        for row, sample_id in enumerate(tqdm(self.ids, desc=f"preload {self.image_size}px", unit="image",
                                             disable=not self.progress)):
            image, mask = load_resized(self.data_dir, sample_id, self.image_size)
            array[row, ..., :3] = image
            array[row, ..., 3] = mask
        return array

    def _key(self) -> str:
        """Hash of what the cached arrays depend on: files (size, mtime), ids, size, format."""
        files = []
        for sample_id in self.ids:
            for path in (datafolder.image_path(self.data_dir, sample_id),
                         datafolder.annotation_path(self.data_dir, sample_id)):
                stat = path.stat()
                files.append((stat.st_size, stat.st_mtime_ns))
        description = json.dumps([_CACHE_FORMAT, str(self.data_dir.resolve()), self.ids, self.image_size, files])
        return hashlib.sha256(description.encode("utf-8")).hexdigest()[:20]

    def get(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        row = self.array[self.index[sample_id]]
        return np.ascontiguousarray(row[..., :3]), np.ascontiguousarray(row[..., 3])

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self.index

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size_mb(self) -> float:
        return self.array.nbytes / 2**20

    def __repr__(self) -> str:
        where = f"file {self.path}" if self.path else "RAM"
        return f"PreloadCache({len(self)} samples at {self.image_size}px, {self.size_mb:.1f} MB in {where})"


def training_pair(image: np.ndarray, mask: np.ndarray, augmentation: A.Compose | None,
                  seed: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(image (H, W, 3) uint8, mask (H, W) uint8) tensors after ``augmentation`` seeded by ``seed`` (seed,
    epoch, index). They stay uint8 until the device (:func:`batch_to_device` normalises there)."""
    if augmentation is not None:
        seed_transforms(augmentation, seed)
        augmented = augmentation(image=image, mask=mask)
        image, mask = augmented["image"], augmented["mask"]
    return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask))


class SegmentationDataset(Dataset):
    """(image uint8 (S, S, 3), mask uint8 (S, S)) pairs for ``ids`` of a data folder; a batch goes to the
    device with :func:`batch_to_device`, which normalises it there."""

    def __init__(self, data_dir: str | os.PathLike, ids: Sequence[str], image_size: int, train: bool,
                 cache: PreloadCache | None = None, seed: int = 0):
        self.data_dir = Path(data_dir)
        self.ids = list(ids)
        self.image_size = image_size
        self.train = train
        self.cache = cache
        self.seed = seed
        self.epoch = 0
        self.augmentation = train_augmentation() if train else None
        if not self.ids:
            raise errors.InputError(f"{self.data_dir}: SegmentationDataset needs at least one id")
        if cache is not None:
            if cache.image_size != image_size:
                raise errors.InputError(f"cache holds {cache.image_size}px samples, the dataset needs {image_size}px")
            missing = [i for i in self.ids if i not in cache]
            if missing:
                raise errors.InputError(f"{len(missing)} id(s) are not in the preload cache: {missing[:5]}")
        else:
            paths = [p for i in self.ids
                     for p in (datafolder.image_path(data_dir, i), datafolder.annotation_path(data_dir, i))]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise errors.MissingInputError(f"{len(missing)} file(s) not found: {missing[:5]}")

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The letterboxed uint8 (image, mask) of sample ``index``, before augmentation."""
        sample_id = self.ids[index]
        if self.cache is not None:
            return self.cache.get(sample_id)
        return load_resized(self.data_dir, sample_id, self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return training_pair(*self.load(index), self.augmentation, (self.seed, self.epoch, index))


def _seed_worker(worker_id: int) -> None:
    """Seed Python and NumPy in a worker from its torch seed (itself derived from the loader seed)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int, seed: int,
                distributed: bool = False) -> DataLoader:
    """A DataLoader with deterministic per-epoch shuffling (call :func:`set_epoch` every epoch).

    Training shuffles with a DistributedSampler (one replica when not distributed), whose order is
    a function of (seed, epoch), and drops the last incomplete batch. Evaluation keeps the order;
    when distributed, DistributedSampler pads the last shard by repeating samples, so reduce
    metrics over the padded set knowingly or evaluate on rank 0.
    """
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed)
    elif train:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        drop_last=train,
        pin_memory=torch.cuda.is_available(),
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Select the shuffling order and the augmentation seeds of ``epoch`` (also after a resume)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):  # SegmentationDataset, working.PatchDataset
        loader.dataset.set_epoch(epoch)


def padding(height: int, width: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) that bring each side to at least ``size``, centred as the
    letterbox's ``PadIfNeeded(position="center")`` pads."""
    top, left = max(0, size - height) // 2, max(0, size - width) // 2
    return (top, max(0, size - height) - top), (left, max(0, size - width) - left)


def pad_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 padded to at least ``size`` a side with FILL_RGB (:func:`padding`)."""
    rows, columns = padding(*image.shape[:2], size)
    return np.stack([np.pad(image[..., c], (rows, columns), constant_values=FILL_RGB[c]) for c in range(3)], axis=-1)


def pad_to(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad both sides to at least ``size``, centred as the letterbox pads: image FILL_RGB, mask 255."""
    return pad_image(image, size), np.pad(mask, padding(*mask.shape, size), constant_values=taxonomy.IGNORE_INDEX)
