"""The data folder's contract: where a sample's files are, and what ``metadata.csv`` holds.

A data folder (layout in ARCHITECTURE.md) is ``images/<id>.png``, ``annotations/<id>.png`` and
``metadata.csv``; ingest writes it, augment adds to it, and every later step only reads it. Its paths,
columns and checks live here, apart from the ingest command, so that a reader of a data folder
(splits, stats, weights, datasets, training, reports) imports none of the decoding of source images.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from heritage import errors, fileio

METADATA_COLUMNS = ("id", "material", "content", "width", "height", "source_id", "transform")
# The scan's size before ingest downscaled it (upright, pixels): written by ingest, optional when read
# (folders from before it was recorded: their stored size is taken as the original, see original_size).
ORIGINAL_SIZE_COLUMNS = ("original_width", "original_height")
METADATA_FILE = "metadata.csv"
IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
IDENTITY = "identity"
# "__" separates a source id from the name of an augmentation (see heritage.data.augment).
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def image_path(data_dir: str | os.PathLike, sample_id: str) -> Path:
    return Path(data_dir) / IMAGES_DIR / f"{sample_id}.png"


def annotation_path(data_dir: str | os.PathLike, sample_id: str) -> Path:
    return Path(data_dir) / ANNOTATIONS_DIR / f"{sample_id}.png"


def read_metadata(data_dir: str | os.PathLike) -> pd.DataFrame:
    """The validated ``metadata.csv`` of a data folder: columns in METADATA_COLUMNS order, then
    ORIGINAL_SIZE_COLUMNS when the file has them."""
    path = Path(data_dir) / METADATA_FILE
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: file not found (run `python -m heritage data ingest` first)")
    text = fileio.decode_text(path.read_bytes(), path,  # hand-edited in a spreadsheet: say where, not crash
                              hint="save it as UTF-8 (heritage writes and reads it as UTF-8)", csv_header=True)
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise errors.InputError(f"{path}: not a readable CSV file ({' '.join(str(err).split())})") from None
    missing = [c for c in METADATA_COLUMNS if c not in table.columns]
    if missing:
        raise errors.InputError(f"{path}: missing column(s) {missing}")
    if table.empty:
        raise errors.InputError(f"{path}: empty dataset (no rows)")
    duplicated = table["id"][table["id"].duplicated()].tolist()
    if duplicated:
        raise errors.InputError(f"{path}: duplicated id(s) {duplicated[:5]}")
    optional = [c for c in ORIGINAL_SIZE_COLUMNS if c in table.columns]
    if optional and len(optional) != len(ORIGINAL_SIZE_COLUMNS):
        raise errors.InputError(f"{path}: has {optional[0]!r} without "
                                f"{[c for c in ORIGINAL_SIZE_COLUMNS if c not in optional][0]!r}")
    for column in ("width", "height", *optional):
        if not table[column].str.fullmatch(r"[1-9][0-9]*").all():
            bad = table.loc[~table[column].str.fullmatch(r"[1-9][0-9]*"), "id"].tolist()
            raise errors.InputError(f"{path}: column {column!r} is not a positive integer for id(s) {bad[:5]}")
        table[column] = table[column].astype(np.int64)
    orphans = sorted(set(table["source_id"]) - set(table.loc[table["transform"] == IDENTITY, "id"]))
    if orphans:
        raise errors.InputError(f"{path}: source_id(s) {orphans[:5]} have no original (transform={IDENTITY!r}) row")
    return table[[*METADATA_COLUMNS, *optional]].reset_index(drop=True)


def has_original_size(table: pd.DataFrame) -> bool:
    """Whether a metadata table records the original scan sizes (ORIGINAL_SIZE_COLUMNS)."""
    return set(ORIGINAL_SIZE_COLUMNS) <= set(table.columns)


def original_size(table: pd.DataFrame) -> pd.DataFrame:
    """(original_width, original_height) per row: the recorded scan size, else the stored size (a
    folder written before ingest recorded it, or one never downscaled)."""
    if has_original_size(table):
        return table[list(ORIGINAL_SIZE_COLUMNS)].astype(np.int64)
    return table[["width", "height"]].astype(np.int64).set_axis(list(ORIGINAL_SIZE_COLUMNS), axis=1)


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
    """Write ``metadata.csv``: METADATA_COLUMNS, and ORIGINAL_SIZE_COLUMNS when ``table`` has them."""
    columns = [*METADATA_COLUMNS, *(ORIGINAL_SIZE_COLUMNS if has_original_size(table) else ())]
    # durable: metadata.csv is written last and marks the folder complete
    fileio.write_text(Path(data_dir) / METADATA_FILE, table[columns].to_csv(index=False), durable=True)


def check_id(sample_id: object, where: str) -> str:
    if not isinstance(sample_id, str) or not _ID_PATTERN.fullmatch(sample_id) or "__" in sample_id:
        raise errors.InputError(
            f"{where}: id {sample_id!r} is not usable as a file name "
            "(letters, digits, '.', '_', '-'; no '__', which marks augmented copies)"
        )
    return sample_id
