"""Shared fixtures: synthetic shards (heritage.data.synthetic), a ready data folder, hand-made parquet rows.

``synthetic_parquet`` and ``data_dir`` are built once per session; tests must not modify them
(copy ``data_dir`` with ``copy_data_dir`` before writing into it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from heritage.data import augment, ingest, splits, synthetic as synth, taxonomy
from heritage import fileio

# albumentations asks PyPI for a newer version when imported (tests import it directly); stay offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

N_SYNTHETIC_IMAGES = 24
SYNTHETIC_LONGEST_SIDE = 96

PARQUET_SCHEMA = synth.PARQUET_SCHEMA


def make_row(sample_id: str, size: tuple[int, int] = (48, 32), seed: int = 0, material: str = "Paper",
             content: str = "Line art", mask: np.ndarray | None = None) -> dict:
    """One hand-made parquet row in the HF schema (for bad-input tests): random pixels, rectangles of classes."""
    width, height = size
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if mask is None:
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[:, : max(1, width // 8)] = taxonomy.IGNORE_INDEX  # a Background strip
        for class_id in rng.choice(np.arange(1, taxonomy.NUM_CLASSES), size=3, replace=False):
            y, x = rng.integers(0, height // 2), rng.integers(width // 8, width // 2)
            mask[y: y + height // 4, x: x + width // 4] = class_id
    return {
        "id": sample_id,
        "image": {"bytes": fileio.encode_png(image), "path": f"{sample_id}.png"},
        "annotation": {"bytes": fileio.encode_png(mask), "path": f"{sample_id}.png"},
        "annotation_rgb": {"bytes": fileio.encode_png(taxonomy.mask_to_rgb(mask)), "path": f"{sample_id}.png"},
        "material": material,
        "content": content,
    }


def write_rows(path: Path, rows: list[dict], schema: pa.Schema = PARQUET_SCHEMA) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


@pytest.fixture(scope="session")
def synthetic_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HF-style dataset folder (data/train-*.parquet) of ~24 images, longest side 96."""
    folder = tmp_path_factory.mktemp("synthetic_parquet")
    synth.write_parquet(folder, n_images=N_SYNTHETIC_IMAGES, seed=0, longest_side=SYNTHETIC_LONGEST_SIDE,
                        shard_size=N_SYNTHETIC_IMAGES // 2, progress=False)
    return folder


@pytest.fixture(scope="session")
def data_dir(synthetic_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic shards ingested, augmented, with every split protocol (leaky too) written. Read-only."""
    folder = tmp_path_factory.mktemp("data") / "synthetic"
    ingest.ingest(synthetic_parquet, folder, longest_side=None)
    augment.augment(folder, seed=42)
    splits.write_manifests(folder, splits.ALL_PROTOCOLS)
    return folder


@pytest.fixture
def copy_data_dir(data_dir: Path, tmp_path: Path) -> Callable[[], Path]:
    """A function returning a private, writable copy of ``data_dir``."""

    def copy() -> Path:
        return Path(shutil.copytree(data_dir, tmp_path / "data_copy"))

    return copy


@pytest.fixture
def empty_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache (``HF_HOME`` and huggingface_hub's own constant, read at its import)."""
    from huggingface_hub import constants as hub_constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def _marked_image(seed: int = 0, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A smooth picture with mild noise, a 1 px dark scratch (column 30) and bright 2x2 dust specks, and its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    picture = 90 + 60 * np.sin(xx / 17.0) + 40 * np.cos(yy / 23.0) + rng.normal(0, 2.0, (size, size))
    mask = np.full((size, size), taxonomy.CLASS_IDS["Clean"], dtype=np.uint8)
    picture[:, 30] -= 45
    mask[:, 30] = taxonomy.CLASS_IDS["Scratch"]
    for y, x in ((10, 60), (40, 70), (75, 50)):
        picture[y:y + 2, x:x + 2] += 50
        mask[y:y + 2, x:x + 2] = taxonomy.CLASS_IDS["Dust"]
    rgb = np.clip(np.repeat(picture[..., None], 3, axis=2), 0, 255).astype(np.uint8)
    return rgb, mask


@pytest.fixture
def marked_image():
    """A picture with thin marks of both polarities and its mask (:func:`_marked_image`)."""
    return _marked_image
