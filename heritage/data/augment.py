"""Offline 3x augmentation: a horizontal flip, a vertical flip and a rotation of every original.

This reproduces the seeds' augmented ARTeFACT (1 original + 3 copies per source image) with two
fixes: every copy keeps the ``source_id`` of its original, so splits can keep copies of one artwork
on one side; and pixels a rotation brings in from outside the image are Background (255, ignored),
not Clean (0) as in the seeds, which taught the model that empty corners are undamaged artwork.

The rotation angle is drawn per sample from a generator seeded with (seed, id), so re-running gives
the same files, and the step is idempotent: derived rows are rebuilt from the originals each time.
It holds the data folder (:mod:`heritage.locks`) and starts by removing the temporary files a killed
earlier run left (``ingest.remove_stale``).
"""

from __future__ import annotations

import argparse
import os
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from heritage import errors, fileio, locks
from heritage.data import datafolder, ingest, taxonomy

TRANSFORMS = ("hflip", "vflip", "rot")
MAX_ROTATION_DEG = 30.0
# ImageNet mean colour: pixels filled with it become 0 after the dataset's normalisation.
FILL_RGB = (124, 116, 104)
DEFAULT_SEED = 42


def derived_id(source_id: str, transform: str) -> str:
    return f"{source_id}__{transform}"


def rotation_angle(sample_id: str, seed: int) -> float:
    """The rotation (degrees, in [-MAX_ROTATION_DEG, MAX_ROTATION_DEG]) applied to ``sample_id``."""
    rng = np.random.default_rng([seed, zlib.crc32(sample_id.encode("utf-8"))])
    return float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))


def rotate(image: np.ndarray, mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre on the original canvas; uncovered pixels: FILL_RGB / Background."""
    height, width = mask.shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=FILL_RGB)
    mask = cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=taxonomy.IGNORE_INDEX)
    return image, mask


def apply_transform(image: np.ndarray, mask: np.ndarray, transform: str, angle: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    if transform == "hflip":
        return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])
    if transform == "vflip":
        return np.ascontiguousarray(image[::-1]), np.ascontiguousarray(mask[::-1])
    if transform == "rot":
        return rotate(image, mask, angle)
    raise errors.InputError(f"unknown transform {transform!r} (expected one of {TRANSFORMS})")


def augment(data_dir: str | os.PathLike, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Write the three copies of every original in ``data_dir`` and the updated metadata."""
    data_dir = Path(data_dir)
    metadata = datafolder.read_metadata(data_dir)
    with locks.hold(data_dir, "heritage data augment"):  # one writer per data folder
        return _augment(data_dir, metadata, seed)


def _augment(data_dir: Path, metadata: pd.DataFrame, seed: int) -> pd.DataFrame:
    ingest.remove_stale(data_dir)  # temporaries of an augment/ingest killed mid-write (kill -9)
    originals = metadata[metadata["transform"] == datafolder.IDENTITY]
    rows = []
    for original in tqdm(originals.itertuples(index=False), total=len(originals), desc="augment", unit="image"):
        image = fileio.read_rgb(datafolder.image_path(data_dir, original.id))
        mask = fileio.read_mask(datafolder.annotation_path(data_dir, original.id))
        rows.append(original._asdict())
        angle = rotation_angle(original.id, seed)
        for transform in TRANSFORMS:
            new_id = derived_id(original.id, transform)
            new_image, new_mask = apply_transform(image, mask, transform, angle)
            fileio.write_png(datafolder.image_path(data_dir, new_id), new_image)
            fileio.write_png(datafolder.annotation_path(data_dir, new_id), new_mask)
            rows.append({**original._asdict(), "id": new_id, "width": new_mask.shape[1],
                         "height": new_mask.shape[0], "transform": transform})
    table = pd.DataFrame(rows, columns=list(metadata.columns))  # with the original scan size, if recorded
    written = [path for row in rows if row["transform"] != datafolder.IDENTITY
               for path in (datafolder.image_path(data_dir, row["id"]), datafolder.annotation_path(data_dir, row["id"]))]
    fileio.flush_files(data_dir, written)  # on disk before metadata.csv lists them
    datafolder.write_metadata(data_dir, table)
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="data folder written by `data ingest`")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the rotation angles (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    table = augment(args.data, args.seed)
    n_originals = int((table["transform"] == datafolder.IDENTITY).sum())
    print(f"{args.data}: {n_originals} originals + {len(table) - n_originals} augmented copies")
    return 0
