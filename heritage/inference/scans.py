"""Reading scans: the inputs predict accepts, decoded to RGB and where the artwork is.

One home for what an input path means (an image file, a folder of images, a data folder, HF parquet
shards) and how each is decoded (PIL, or tifffile for 16-bit, float and planar TIFFs), so that the
command, the gallery and the benches read scans the same way. Sources decode lazily: a folder is
listed up front, and a scan that cannot be read fails only when loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from heritage import errors, fileio

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
ROW_CHUNK = 256  # rows converted at a time: bounds temporaries on 100 MP scans


@dataclass
class Scan:
    """A decoded scan: RGB pixels and, when the input had alpha, where the artwork is."""

    rgb: np.ndarray  # (H, W, 3) uint8
    artwork: np.ndarray | None  # (H, W) bool, False where alpha == 0; None without alpha

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def read_scan(path: str | Path) -> Scan:
    """Read an image file (PNG/JPEG/... via PIL, TIFF via tifffile); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: file not found")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _read_tiff(path)
    return scan_from_image(fileio.open_image(path))


def scan_from_image(image: Image.Image) -> Scan:
    """A :class:`Scan` from a decoded PIL image: RGB via ``fileio.to_rgb_array`` plus its alpha."""
    artwork = None
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        alpha = image if "A" in image.getbands() else image.convert("RGBA")
        artwork = np.asarray(alpha.getchannel("A")) > 0
    return Scan(fileio.to_rgb_array(image), artwork)


def _read_tiff(path: Path) -> Scan:
    import tifffile

    try:
        try:  # uncompressed, contiguous TIFFs are memory-mapped instead of read into RAM
            array = tifffile.memmap(path, mode="r")
        except ValueError:
            array = tifffile.imread(path)
    except (OSError, ValueError) as err:  # TiffFileError is a ValueError
        raise errors.InputError(f"{path}: cannot read TIFF ({err})") from None
    return tiff_array_to_scan(array, str(path))


def tiff_array_to_scan(array: np.ndarray, name: str) -> Scan:
    """Convert a TIFF sample array (grey, grey+alpha, RGB, RGBA; 8/16-bit or float) to a Scan.

    16-bit samples are scaled by their declared range (65535 -> 255), float samples are taken as
    0..1, and alpha is composited over white as ``fileio.to_rgb_array`` does for PIL images.
    """
    array = np.squeeze(array, axis=tuple(range(max(array.ndim - 3, 0))))  # drop leading page axes
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar-separate TIFF: samples first
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise errors.InputError(f"{name}: unsupported TIFF layout {array.shape}; "
                         "expected (H, W) or (H, W, 1-4 samples)")
    if not (array.dtype in (np.uint8, np.uint16) or np.issubdtype(array.dtype, np.floating)):
        raise errors.InputError(f"{name}: unsupported TIFF sample type {array.dtype}; "
                         "expected 8/16-bit unsigned or float")
    height, width, samples = array.shape
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    has_alpha = samples in (2, 4)
    artwork = np.empty((height, width), dtype=bool) if has_alpha else None
    for y0 in range(0, height, ROW_CHUNK):  # chunked: the source may be a memory map
        chunk = _to_unit_range(np.asarray(array[y0:y0 + ROW_CHUNK]))
        colour = chunk[..., :3] if samples >= 3 else np.repeat(chunk[..., :1], 3, axis=2)
        if has_alpha:
            alpha = chunk[..., -1:]
            colour = colour * alpha + (1.0 - alpha)
            artwork[y0:y0 + ROW_CHUNK] = alpha[..., 0] > 0
        rgb[y0:y0 + ROW_CHUNK] = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Scan(rgb, artwork)


def _to_unit_range(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.uint8:
        return samples.astype(np.float32) / 255.0
    if samples.dtype == np.uint16:
        return samples.astype(np.float32) / 65535.0
    return np.clip(samples.astype(np.float32), 0.0, 1.0)


@dataclass(frozen=True)
class ScanSource:
    """One input to predict: ``name`` is its output folder, ``label`` what errors call it."""

    name: str
    label: str
    load: Callable[[], Scan]


def iter_sources(path: str | Path) -> Iterator[ScanSource]:
    """The scans under ``path``: an image file, a folder of images, a data folder or parquet shards.

    A folder holding ``images/`` is a data folder (its ``images/`` are read); a folder holding
    ``*.parquet`` files (searched recursively, as HF snapshots nest them) or a ``.parquet`` file is
    read as HF shards (columns ``id`` and ``image``). Other folders contribute their files with an
    image suffix, not recursively. Nothing is decoded here: a source fails only when loaded.
    """
    path = Path(path)
    if not path.exists():
        raise errors.MissingInputError(f"{path}: input not found")
    if path.is_file():
        if path.suffix.lower() == ".parquet":
            yield from _parquet_sources(path)
        else:
            yield file_source(path)
        return
    if (path / "images").is_dir():
        path = path / "images"
    shards = sorted(path.rglob("*.parquet"))
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not shards and not files:
        raise errors.InputError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                         "or parquet shards found")
    for shard in shards:
        yield from _parquet_sources(shard)
    for file in files:
        yield file_source(file)


def file_source(path: Path, name: str | None = None) -> ScanSource:
    """One image file as a source (its output folder: ``name``, default the file's stem)."""
    return ScanSource(_safe_name(name or printable(path.stem)), printable(str(path)), lambda: read_scan(path))


def printable(text: str) -> str:
    """A file name as text that can be printed and written: bytes that are not UTF-8 (a name made on
    another system) become ``\\xe9`` escapes instead of failing every later write of the label."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _parquet_sources(shard: Path) -> Iterator[ScanSource]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(shard)
        missing = {"id", "image"} - set(parquet.schema_arrow.names)
        if missing:
            raise errors.InputError(f"missing column(s) {sorted(missing)}")
        for batch in parquet.iter_batches(batch_size=8, columns=["id", "image"]):
            for row in batch.to_pylist():
                label = f"{shard}:{row['id']}"
                data = (row["image"] or {}).get("bytes")
                yield ScanSource(_safe_name(str(row["id"])), label, _bytes_loader(data, label))
    except (OSError, ValueError, pa.ArrowException) as err:
        message = f"{shard}: cannot read parquet shard ({err})"
        yield ScanSource(_safe_name(shard.stem), str(shard), _failing_loader(message))


def _bytes_loader(data: bytes | None, label: str) -> Callable[[], Scan]:
    def load() -> Scan:
        if not data:
            raise errors.InputError(f"{label}: no image bytes")
        return scan_from_image(fileio.open_image(data, name=label))
    return load


def _failing_loader(message: str) -> Callable[[], Scan]:
    def load() -> Scan:
        raise errors.InputError(message)
    return load


def _safe_name(name: str) -> str:
    """A folder name from an image stem or dataset id (no path separators)."""
    return re.sub(r"[^\w.-]+", "_", name).strip(".") or "image"
