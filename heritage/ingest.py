"""HF parquet shards of ARTeFACT (or an already exported folder) -> a data folder.

The data folder (layout in ARCHITECTURE.md) is what every later step reads: ``images/<id>.png``,
``annotations/<id>.png`` and ``metadata.csv``. This module writes it and owns its reading helpers
(:func:`read_metadata`, :func:`image_path`, :func:`annotation_path`).

Rows are read one at a time, with parquet pre-buffering off, so memory is bounded by one decoded
image even for the 100+ megapixel scans of the real dataset. Every row is validated (decodable
image and mask, class ids, matching sizes) and errors name the shard, row and id. Outputs are first
written into a staging folder inside the destination and moved into place only once every row has
been converted, with ``metadata.csv`` written last: a failed ingest leaves the destination as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from heritage import errors, fileio, taxonomy

PARQUET_COLUMNS = ("id", "image", "annotation", "material", "content")
EXPORT_COLUMNS = ("id", "material", "content")
METADATA_COLUMNS = ("id", "material", "content", "width", "height", "source_id", "transform")
METADATA_FILE = "metadata.csv"
IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
IDENTITY = "identity"
DEFAULT_LONGEST_SIDE = 512
# "__" separates a source id from the name of an augmentation (see heritage.augment).
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PARQUET_BUFFER_BYTES = 8 << 20


@dataclass(frozen=True)
class RawSample:
    """One input sample before decoding; ``where`` locates it in error messages."""

    id: str
    material: str
    content: str
    image: bytes | Path
    annotation: bytes | Path
    where: str


# --- the data folder -------------------------------------------------------------------------


def image_path(data_dir: str | os.PathLike, sample_id: str) -> Path:
    return Path(data_dir) / IMAGES_DIR / f"{sample_id}.png"


def annotation_path(data_dir: str | os.PathLike, sample_id: str) -> Path:
    return Path(data_dir) / ANNOTATIONS_DIR / f"{sample_id}.png"


def read_metadata(data_dir: str | os.PathLike) -> pd.DataFrame:
    """The validated ``metadata.csv`` of a data folder (columns in METADATA_COLUMNS order)."""
    path = Path(data_dir) / METADATA_FILE
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: file not found (run `python -m heritage data ingest` first)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in METADATA_COLUMNS if c not in table.columns]
    if missing:
        raise errors.InputError(f"{path}: missing column(s) {missing}")
    if table.empty:
        raise errors.InputError(f"{path}: empty dataset (no rows)")
    duplicated = table["id"][table["id"].duplicated()].tolist()
    if duplicated:
        raise errors.InputError(f"{path}: duplicated id(s) {duplicated[:5]}")
    for column in ("width", "height"):
        if not table[column].str.fullmatch(r"[1-9][0-9]*").all():
            bad = table.loc[~table[column].str.fullmatch(r"[1-9][0-9]*"), "id"].tolist()
            raise errors.InputError(f"{path}: column {column!r} is not a positive integer for id(s) {bad[:5]}")
        table[column] = table[column].astype(np.int64)
    orphans = sorted(set(table["source_id"]) - set(table.loc[table["transform"] == IDENTITY, "id"]))
    if orphans:
        raise errors.InputError(f"{path}: source_id(s) {orphans[:5]} have no original (transform={IDENTITY!r}) row")
    return table[list(METADATA_COLUMNS)].reset_index(drop=True)


def metadata_fingerprint(data_dir: str | os.PathLike) -> str:
    """sha256 of ``metadata.csv``'s bytes: what split manifests and run configs record of their data.

    It changes whenever a sample is added, removed or relabelled (ingest, augment), not when the data
    folder is moved or copied elsewhere.
    """
    path = Path(data_dir) / METADATA_FILE
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise errors.MissingInputError(f"{path}: file not found (run `python -m heritage data ingest` first)") from None


def write_metadata(data_dir: str | os.PathLike, table: pd.DataFrame) -> None:
    fileio.write_text(Path(data_dir) / METADATA_FILE, table[list(METADATA_COLUMNS)].to_csv(index=False))


def check_id(sample_id: object, where: str) -> str:
    if not isinstance(sample_id, str) or not _ID_PATTERN.fullmatch(sample_id) or "__" in sample_id:
        raise errors.InputError(
            f"{where}: id {sample_id!r} is not usable as a file name "
            "(letters, digits, '.', '_', '-'; no '__', which marks augmented copies)"
        )
    return sample_id


# --- reading the inputs ----------------------------------------------------------------------


def find_shards(source: str | os.PathLike) -> list[Path]:
    """The parquet shards of a HF dataset folder (``data/*.parquet`` or ``*.parquet``) or one file."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise errors.MissingInputError(f"{source}: no such file or folder")
    shards = sorted((source / "data").glob("*.parquet")) or sorted(source.glob("*.parquet"))
    if not shards:
        raise errors.MissingInputError(f"{source}: no parquet shards (looked for data/*.parquet and *.parquet)")
    return shards


def check_parquet_columns(shards: list[Path]) -> int:
    """Check every shard has the required columns; return the total number of rows."""
    rows = 0
    for shard in shards:
        parquet = pq.ParquetFile(shard)
        missing = [c for c in PARQUET_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise errors.InputError(f"{shard}: missing column(s) {missing} (has {parquet.schema_arrow.names})")
        rows += parquet.metadata.num_rows
    return rows


def iter_parquet(shards: list[Path]) -> Iterator[RawSample]:
    for shard in shards:
        # pre_buffer=False + a bounded buffer: stream pages instead of loading whole row groups,
        # which hold ~100 full-resolution scans in the HF export.
        parquet = pq.ParquetFile(shard, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES)
        batches = parquet.iter_batches(batch_size=1, columns=list(PARQUET_COLUMNS), use_threads=False)
        for row_index, batch in enumerate(batches):
            row = batch.to_pylist()[0]
            where = f"{shard}: row {row_index} (id {row['id']!r})"
            yield RawSample(
                id=check_id(row["id"], where),
                material=_text(row["material"], "material", where),
                content=_text(row["content"], "content", where),
                image=_encoded(row["image"], "image", where),
                annotation=_encoded(row["annotation"], "annotation", where),
                where=where,
            )


def _text(value: object, column: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise errors.InputError(f"{where}: column {column!r} is empty or not a string ({value!r})")
    return value


def _encoded(value: object, column: str, where: str) -> bytes:
    """The encoded bytes of an HF Image cell (struct {bytes, path}, or plain binary)."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, bytes) or not data:
        path = value.get("path") if isinstance(value, dict) else None
        raise errors.InputError(f"{where}: column {column!r} holds no embedded image bytes (path={path!r})")
    return data


def read_export_table(folder: Path) -> pd.DataFrame:
    """The metadata of an exported folder, restricted to original samples."""
    path = folder / METADATA_FILE
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in EXPORT_COLUMNS if c not in table.columns]
    if missing:
        raise errors.InputError(f"{path}: missing column(s) {missing}")
    if "transform" in table.columns:  # one of our data folders: re-derive augmented copies later
        table = table[table["transform"] == IDENTITY]
    if table.empty:
        raise errors.InputError(f"{path}: empty dataset (no original samples)")
    return table.reset_index(drop=True)


def export_samples(folder: Path, table: pd.DataFrame) -> list[RawSample]:
    """Samples of an exported folder, all files checked to exist; paths from image_path/annotation_path or the id."""
    samples = []
    for row_index, row in table.iterrows():
        where = f"{folder / METADATA_FILE}: row {row_index} (id {row['id']!r})"
        sample_id = check_id(row["id"], where)
        image = folder / row["image_path"] if row.get("image_path") else image_path(folder, sample_id)
        annotation = (
            folder / row["annotation_path"] if row.get("annotation_path") else annotation_path(folder, sample_id)
        )
        samples.append(RawSample(sample_id, _text(row["material"], "material", where),
                                 _text(row["content"], "content", where), image, annotation, where))
    missing = [str(p) for s in samples for p in (s.image, s.annotation) if not Path(p).is_file()]
    if missing:
        raise errors.MissingInputError(f"{len(missing)} file(s) listed in {folder / METADATA_FILE} not found: {missing[:5]}")
    return samples


# --- conversion --------------------------------------------------------------------------------


def decode_sample(sample: RawSample) -> tuple[np.ndarray, np.ndarray]:
    """Decode and validate one sample: (H, W, 3) uint8 image and (H, W) uint8 class-id mask."""

    def label(kind: str, source: bytes | Path) -> str:
        return f"{sample.where}: {kind}" if isinstance(source, bytes) else str(source)

    image = fileio.read_rgb(sample.image, name=label("image", sample.image))
    mask = fileio.read_mask(sample.annotation, name=label("annotation", sample.annotation))
    if image.shape[:2] != mask.shape:
        raise errors.InputError(
            f"{sample.where}: image is {image.shape[1]}x{image.shape[0]} but annotation is "
            f"{mask.shape[1]}x{mask.shape[0]} (width x height)"
        )
    taxonomy.check_mask_values(mask, label("annotation", sample.annotation))
    return image, mask


def resize_longest_side(image: np.ndarray, mask: np.ndarray, longest_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Downscale so the longer side is ``longest_side`` (never upscale; None keeps the size).

    The image goes through PIL's reduce (area averaging) then LANCZOS; the mask uses nearest
    neighbour so class ids are never interpolated.
    """
    height, width = mask.shape
    if longest_side is None or max(height, width) <= longest_side:
        return image, mask
    scale = longest_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
    mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    return image, mask


def ingest(source: str | os.PathLike, out: str | os.PathLike,
           longest_side: int | None = DEFAULT_LONGEST_SIDE) -> pd.DataFrame:
    """Convert parquet shards or an exported folder at ``source`` into the data folder ``out``.

    Returns the metadata written (original samples only: re-run ``augment`` afterwards).
    """
    if longest_side is not None and longest_side < 1:
        raise errors.InputError(f"longest_side must be a positive number of pixels, got {longest_side}")
    source = Path(source)
    out = Path(out)
    if source.is_dir() and (source / METADATA_FILE).is_file():
        exported = export_samples(source, read_export_table(source))
        samples: Iterable[RawSample] = exported
        total = len(exported)
    else:
        shards = find_shards(source)
        samples, total = iter_parquet(shards), check_parquet_columns(shards)
        if total == 0:
            raise errors.InputError(f"{source}: empty dataset (the parquet shards hold no rows)")

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ingest-", dir=out))
    try:
        rows = _convert_all(samples, staging, longest_side, total)
        for row in rows:  # every sample converted: move them into place, metadata last
            for relative in (image_path("", row["id"]), annotation_path("", row["id"])):
                (out / relative).parent.mkdir(exist_ok=True)
                os.replace(staging / relative, out / relative)
        metadata = pd.DataFrame(rows, columns=list(METADATA_COLUMNS))
        write_metadata(out, metadata)
    finally:
        shutil.rmtree(staging)
    return metadata


def _convert_all(samples: Iterable[RawSample], staging: Path, longest_side: int | None, total: int) -> list[dict]:
    rows: list[dict] = []
    seen: dict[str, str] = {}
    for sample in tqdm(samples, total=total, desc="ingest", unit="image"):
        if sample.id in seen:
            raise errors.InputError(f"{sample.where}: duplicated id, first seen at {seen[sample.id]}")
        seen[sample.id] = sample.where
        image, mask = resize_longest_side(*decode_sample(sample), longest_side)
        fileio.write_png(image_path(staging, sample.id), image)
        fileio.write_png(annotation_path(staging, sample.id), mask)
        rows.append({"id": sample.id, "material": sample.material, "content": sample.content,
                     "width": mask.shape[1], "height": mask.shape[0], "source_id": sample.id,
                     "transform": IDENTITY})
    return rows


# --- CLI -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, type=Path,
                        help="HF dataset folder (data/*.parquet or *.parquet), one parquet file, "
                             "or an exported folder (images/, annotations/, metadata.csv)")
    parser.add_argument("--out", required=True, type=Path, help="data folder to write")
    parser.add_argument("--longest-side", type=int, default=DEFAULT_LONGEST_SIDE,
                        help="downscale so the longer side is at most this many pixels; 0 keeps "
                             "the original size (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    metadata = ingest(args.source, args.out, args.longest_side or None)
    print(f"ingested {len(metadata)} samples into {args.out}")
    return 0
