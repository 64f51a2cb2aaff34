"""HF parquet shards of ARTeFACT (or an already exported folder) -> a data folder.

The data folder (:mod:`heritage.data.datafolder`: ``images/<id>.png``, ``annotations/<id>.png`` and
``metadata.csv``) is what every later step reads; this module is the ``data ingest`` command that
writes it, each row decoded by :mod:`heritage.data.decoding`.

Rows are read one at a time, with parquet pre-buffering off, so memory is bounded by one decoded
image even for the 100+ megapixel scans of the real dataset. Every row is validated (decodable
image and mask, class ids, matching sizes) and errors name the shard, row and id. Outputs are first
written into a staging folder inside the destination and moved into place only once every row has
been converted, with ``metadata.csv`` written last: a failed ingest leaves the destination's data as
it was.

Resuming. The staging folder (``<out>/.ingest-resume``: ``images/``, ``annotations/``, ``components/``
and ``rows.jsonl``, one line per converted row, after its files) outlives a
failure, a Ctrl-C or a kill -9: the next ingest into the same ``--out`` with the same ``--longest-side``
and mask options reuses every row whose id and bytes (sha256 of image and annotation) are unchanged and
converts the rest (a staged row whose files a crash cut short is converted again), so a bad row 300 of
ARTeFACT's 418 (scans up to 244 MP) costs only itself. Other
options start over. ``skip_bad_rows`` (``--skip-bad-rows``) converts every good row, writes them and
``<out>/rejected.csv`` (row, id, where, error) and then fails with exit 1; a clean ingest removes an
old ``rejected.csv``. The data folder is held (:mod:`heritage.locks`) while ingest writes it; one that
ingest created and that holds nothing after a failure is removed.

Bad input, and the opt-ins for real annotation formats (``--max-pixels``, the mask formats and
how each row is decoded are described in :mod:`heritage.data.decoding`):

- Each sample's original size is recorded (``original_width``, ``original_height``), and a
  ``--longest-side`` that shrinks a class's median damage component (8-connected, measured on the
  full-size masks, :mod:`heritage.data.scale`) below a pixel is warned about, naming the classes.
- Materials and contents outside ARTeFACT's vocabulary (:mod:`heritage.data.vocabulary`) are warned
  about with the closest name, and refused with ``--strict``.
- A staging folder or temporary file left by a killed ingest/augment is removed by the next one
  (owner pid dead on this host, or untouched for :data:`heritage.fileio.STALE_AFTER_S`).
- An exported folder's ``metadata.csv`` is read as UTF-8 (a BOM is skipped); another encoding (Excel's
  cp1252) is one line naming the line and byte offset and the ``--encoding`` to pass.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from heritage import errors, fileio, locks
from heritage.data import datafolder, decoding, scale, taxonomy, vocabulary

PARQUET_COLUMNS = ("id", "image", "annotation", "material", "content")
EXPORT_COLUMNS = ("id", "material", "content")
DEFAULT_LONGEST_SIDE = 512
_PARQUET_BUFFER_BYTES = 8 << 20
# The staging folder: ".ingest-<pid>@<host>-<random>" (remove_stale_staging parses the owner back;
# the legacy form, without owner, is removed by age only).
STAGING_PREFIX = ".ingest-"
STAGING_PATTERN = re.compile(rf"\.ingest-{fileio.OWNER_PATTERN}-{fileio.RANDOM_PATTERN}")
LEGACY_STAGING_PATTERN = re.compile(rf"\.ingest-{fileio.RANDOM_PATTERN}")
# The resumable staging folder inside --out, and what it holds besides images/ and annotations/.
RESUME_DIR = ".ingest-resume"
JOURNAL_FILE = "rows.jsonl"
OPTIONS_FILE = "options.json"
COMPONENTS_DIR = "components"
REJECTED_FILE = "rejected.csv"
REJECTED_COLUMNS = ("row", "id", "where", "error")
OPTIONAL_PARQUET_COLUMNS = ("annotation_rgb",)


class ResumeNote(UserWarning):
    """What ingest did with the rows an earlier, unfinished ingest left (kept, or started over)."""


# -- reading the inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRow:
    """One row of the source before it is checked: ``build`` makes its sample or raises naming it."""

    index: int  # 0-based, over every shard (the row of the export's metadata.csv)
    where: str
    id: object  # as read, for rejected.csv
    build: Callable[[], decoding.RawSample]


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
        try:
            parquet = pq.ParquetFile(shard)
        except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid / ArrowIOError: not a parquet file
            raise errors.InputError(f"{shard}: not a readable parquet file ({err})") from None
        missing = [c for c in PARQUET_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise errors.InputError(f"{shard}: missing column(s) {missing} (has {parquet.schema_arrow.names})")
        rows += parquet.metadata.num_rows
    return rows


def iter_parquet(shards: list[Path]) -> Iterator[SourceRow]:
    index = 0
    for shard in shards:
        # pre_buffer=False + a bounded buffer: stream pages instead of loading whole row groups,
        # which hold ~100 full-resolution scans in the HF export.
        parquet = pq.ParquetFile(shard, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES)
        columns = [*PARQUET_COLUMNS, *(c for c in OPTIONAL_PARQUET_COLUMNS if c in parquet.schema_arrow.names)]
        batches = parquet.iter_batches(batch_size=1, columns=columns, use_threads=False)
        for row_index, batch in enumerate(batches):
            row = batch.to_pylist()[0]
            where = f"{shard}: row {row_index} (id {row['id']!r})"
            yield SourceRow(index, where, row["id"], lambda row=row, where=where: _parquet_sample(row, where))
            index += 1


def _parquet_sample(row: dict, where: str) -> decoding.RawSample:
    rgb = row.get("annotation_rgb")
    rgb_bytes = rgb.get("bytes") if isinstance(rgb, dict) else rgb
    return decoding.RawSample(
        id=datafolder.check_id(row["id"], where),
        material=_text(row["material"], "material", where),
        content=_text(row["content"], "content", where),
        image=_encoded(row["image"], "image", where),
        annotation=_encoded(row["annotation"], "annotation", where),
        where=where,
        annotation_rgb=rgb_bytes if isinstance(rgb_bytes, bytes) and rgb_bytes else None,
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


def read_export_table(folder: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """The metadata of an exported folder, restricted to original samples; read as ``encoding``."""
    path = folder / datafolder.METADATA_FILE
    text = fileio.decode_text(path.read_bytes(), path, encoding, hint="pass --encoding {encoding}", csv_header=True)
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise errors.InputError(f"{path}: not a readable CSV file ({cli_line(str(err))})") from None
    missing = [c for c in EXPORT_COLUMNS if c not in table.columns]
    if missing:
        raise errors.InputError(f"{path}: missing column(s) {missing}")
    if "transform" in table.columns:  # one of our data folders: re-derive augmented copies later
        table = table[table["transform"] == datafolder.IDENTITY]
    if table.empty:
        raise errors.InputError(f"{path}: empty dataset (no original samples)")
    return table.reset_index(drop=True)


def export_rows(folder: Path, table: pd.DataFrame) -> list[SourceRow]:
    """The rows of an exported folder; paths from image_path/annotation_path (annotation_rgb_path when
    present) or the id. Building a row checks its files exist."""
    rows = []
    for row_index, row in table.iterrows():
        where = f"{folder / datafolder.METADATA_FILE}: row {row_index} (id {row['id']!r})"
        rows.append(SourceRow(int(row_index), where, row["id"],
                              lambda row=row, where=where: _export_sample(folder, row, where)))
    return rows


def _export_sample(folder: Path, row: pd.Series, where: str) -> decoding.RawSample:
    sample_id = datafolder.check_id(row["id"], where)
    image = folder / row["image_path"] if row.get("image_path") else datafolder.image_path(folder, sample_id)
    annotation = (folder / row["annotation_path"] if row.get("annotation_path")
                  else datafolder.annotation_path(folder, sample_id))
    rgb = folder / row["annotation_rgb_path"] if row.get("annotation_rgb_path") else None
    missing = [str(p) for p in (image, annotation) if not p.is_file()]
    if missing:
        raise errors.MissingInputError(f"{where}: file(s) not found: {', '.join(missing)}")
    return decoding.RawSample(sample_id, _text(row["material"], "material", where),
                              _text(row["content"], "content", where), image, annotation, where,
                              rgb if rgb is not None and rgb.is_file() else None)


def _check_export_files(folder: Path, rows: list[SourceRow]) -> None:
    """Every file an export lists, checked before the first row is converted (all missing ones named)."""
    missing = []
    for row in rows:
        try:
            row.build()
        except errors.MissingInputError as err:
            missing += str(err).split("file(s) not found: ", 1)[1].split(", ")
    if missing:
        raise errors.MissingInputError(f"{len(missing)} file(s) listed in {folder / datafolder.METADATA_FILE} "
                                       f"not found: {missing[:5]}")


def cli_line(message: str) -> str:
    return " ".join(message.split())


# -- the resumable staging folder ------------------------------------------------------------------


class Staging:
    """``<out>/.ingest-resume``: the rows converted so far, each written to disk before its journal line.

    A row is reused when its id and the sha256 of its encoded image and annotation match the journal's
    and its files are there; the journal is kept only for the same conversion options.
    """

    def __init__(self, out: Path, options: dict):
        self.folder = out / RESUME_DIR
        self.options = options
        self.entries: dict[str, dict] = {}
        self.converted = 0  # rows written by this ingest
        self.reused = 0
        if self.folder.is_dir():
            recorded = self._recorded_options()
            if recorded == options:
                self.entries = self._read_journal()
            else:
                warnings.warn(f"{self.folder}: the rows an unfinished ingest left were converted with other options "
                              f"({_describe_options(recorded)}; now {_describe_options(options)}): starting over",
                              ResumeNote, stacklevel=2)
                shutil.rmtree(self.folder)
        if not self.folder.is_dir():
            for name in (datafolder.IMAGES_DIR, datafolder.ANNOTATIONS_DIR, COMPONENTS_DIR):
                (self.folder / name).mkdir(parents=True, exist_ok=True)
            fileio.write_json(self.folder / OPTIONS_FILE, options, durable=True)
        elif self.entries:
            warnings.warn(f"{self.folder}: an unfinished ingest left {len(self.entries)} converted row(s); those "
                          "whose bytes are unchanged are reused", ResumeNote, stacklevel=2)

    def _recorded_options(self) -> dict | None:
        try:
            return json.loads((self.folder / OPTIONS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _read_journal(self) -> dict[str, dict]:
        entries = {}
        try:
            lines = (self.folder / JOURNAL_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        for line in lines:
            try:
                entry = json.loads(line)
                entries[entry["id"]] = entry
            except (ValueError, KeyError, TypeError):  # the line a kill cut short
                continue
        return entries

    @property
    def kept(self) -> int:
        """Rows on disk that a rerun can reuse."""
        return len(self.entries)

    def reuse(self, sample: decoding.RawSample, key: str, max_pixels: int | None) -> dict | None:
        entry = self.entries.get(sample.id)
        if entry is None or entry["key"] != key:
            return None
        if max_pixels is not None and entry["original_width"] * entry["original_height"] > max_pixels:
            return None  # converted under a higher --max-pixels: decode it again, to be refused by name
        pictures = [datafolder.image_path(self.folder, sample.id), datafolder.annotation_path(self.folder, sample.id)]
        if not all(_whole_png(path) for path in pictures):
            return None  # moved into place by a finishing ingest that was then killed, removed, or cut by a crash
        if entry["components"]:
            try:
                self.components(sample.id)
            except (OSError, ValueError, zipfile.BadZipFile):
                return None
        self.reused += 1
        return entry

    def write(self, sample: decoding.RawSample, key: str, decoded: decoding.Decoded, notes: list[str]) -> dict:
        """Write the row's files, then its journal line. Not flushed one by one (an fsync per file would
        cost more than the decoding of small scans): :meth:`reuse` checks a row's files are whole, and
        :meth:`move_into` flushes them all before metadata.csv marks the folder complete."""
        fileio.write_png(datafolder.image_path(self.folder, sample.id), decoded.image)
        fileio.write_png(datafolder.annotation_path(self.folder, sample.id), decoded.mask)
        if decoded.original_components is not None:
            with fileio.atomic_path(self._components_path(sample.id)) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, **{str(k): v for k, v in decoded.original_components.items()})
        height, width = decoded.mask.shape
        original_width, original_height = decoded.original_size
        entry = {"id": sample.id, "key": key, "width": width, "height": height,
                 "original_width": original_width, "original_height": original_height,
                 "components": decoded.original_components is not None, "notes": notes}
        try:
            with open(self.folder / JOURNAL_FILE, "a", encoding="utf-8") as journal:
                journal.write(json.dumps(entry) + "\n")
        except OSError as err:
            raise fileio.write_error(self.folder / JOURNAL_FILE, err) from None
        self.entries[sample.id] = entry
        self.converted += 1
        return entry

    def components(self, sample_id: str) -> scale.ComponentAreas:
        with np.load(self._components_path(sample_id)) as stored:
            return {int(k): stored[k] for k in stored.files}

    def _components_path(self, sample_id: str) -> Path:
        return self.folder / COMPONENTS_DIR / f"{sample_id}.npz"

    def move_into(self, out: Path, ids: list[str]) -> None:
        """Every staged row into ``out`` (images/, annotations/), its data and the folders' entries flushed to
        disk first: metadata.csv, written next, must never point at files a crash could still empty."""
        fileio.flush_files(self.folder, [path for sample_id in ids for path in
                                         (datafolder.image_path(self.folder, sample_id),
                                          datafolder.annotation_path(self.folder, sample_id))])
        for sample_id in ids:
            for relative in (datafolder.image_path("", sample_id), datafolder.annotation_path("", sample_id)):
                (out / relative).parent.mkdir(exist_ok=True)
                os.replace(self.folder / relative, out / relative)
        for name in (datafolder.IMAGES_DIR, datafolder.ANNOTATIONS_DIR):
            if (out / name).is_dir():
                fileio.fsync_directory(out / name)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _whole_png(path: Path) -> bool:
    """Whether ``path`` is a PNG that ends as PNGs do (its IEND chunk): not missing, not cut short by a crash."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            handle.seek(-12, os.SEEK_END)
            return handle.read(12) == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    except OSError:
        return False


def _describe_options(options: dict | None) -> str:
    if not options:
        return "unknown"
    masks = {k: v for k, v in options["masks"].items() if v != getattr(decoding.MaskFormat(), k)}
    return f"--longest-side {options['longest_side'] or 0}" + "".join(f", {k}={v}" for k, v in masks.items())


def row_key(sample: decoding.RawSample) -> str:
    """sha256 of the id and the encoded image and annotation: a row whose key is unchanged converts the same."""
    digest = hashlib.sha256(sample.id.encode())
    for source in (sample.image, sample.annotation):
        digest.update(b"\0")
        if isinstance(source, bytes):
            digest.update(source)
        else:
            with open(source, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()


# -- conversion ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowChecks:
    """What :func:`ingest` does with a doubtful row: ``strict`` (``--strict``) refuses materials/contents
    outside ARTeFACT's vocabulary; ``skip_bad_rows`` (``--skip-bad-rows``) lists a failing row in
    ``rejected.csv`` instead of stopping."""

    strict: bool = False
    skip_bad_rows: bool = False


def ingest(source: str | os.PathLike, out: str | os.PathLike,
           longest_side: int | None = DEFAULT_LONGEST_SIDE, *,
           max_pixels: int | None = fileio.DEFAULT_MAX_PIXELS, masks: decoding.MaskFormat = decoding.MaskFormat(),
           checks: RowChecks = RowChecks(), encoding: str = "utf-8") -> pd.DataFrame:
    """Convert parquet shards or an exported folder at ``source`` into the data folder ``out``.

    ``max_pixels`` (None: no limit) refuses larger images from their header; ``masks`` opts in
    to binary, RGB or resized annotations; ``checks.strict`` refuses materials/contents outside ARTeFACT's
    vocabulary, which are otherwise reported as :class:`heritage.data.vocabulary.VocabularyWarning`.
    Each sample's original (upright) size is recorded (datafolder.ORIGINAL_SIZE_COLUMNS); a
    :class:`heritage.data.scale.ScaleWarning` names each class whose median damage component, measured on
    the full-size masks, ``longest_side`` shrinks below a pixel. Returns the metadata written (original samples only: re-run ``augment`` afterwards).

    Rows converted before a failure are kept in ``out/.ingest-resume`` and reused by the next call (see the
    module's docstring). ``checks.skip_bad_rows``: a row that fails is listed in ``out/rejected.csv`` instead, the
    others are written, then :class:`heritage.errors.CommandFailed` says how many were rejected.
    ``encoding``: of an exported folder's ``metadata.csv``.
    """
    if longest_side is not None and longest_side < 1:
        raise errors.InputError(f"longest_side must be a positive number of pixels, got {longest_side}")
    if max_pixels is not None and max_pixels < 1:
        raise errors.InputError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
    source = Path(source)
    out = Path(out)
    if source.is_dir() and (source / datafolder.METADATA_FILE).is_file():
        exported = export_rows(source, read_export_table(source, encoding))
        if not checks.skip_bad_rows:
            _check_export_files(source, exported)
        rows: Iterable[SourceRow] = exported
        total = len(exported)
    else:
        shards = find_shards(source)
        rows, total = iter_parquet(shards), check_parquet_columns(shards)
        if total == 0:
            raise errors.InputError(f"{source}: empty dataset (the parquet shards hold no rows)")

    created = not out.exists()
    try:
        with locks.hold(out, "heritage data ingest"):
            remove_stale(out)
            options = {"longest_side": longest_side, "masks": vars(masks).copy()}
            staging = Staging(out, options)
            try:
                converted = _convert_all(rows, staging, total, dict(longest_side=longest_side, max_pixels=max_pixels,
                                                                     masks=masks), checks)
            except errors.HeritageError as err:
                raise _kept_rows(err, staging) from None
            except BaseException:
                if not staging.kept:
                    staging.discard()
                raise
            metadata = _finish(out, staging, converted)
    except BaseException:
        if created:  # nothing of ours worth keeping: leave no empty --out behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    if converted.rejected:
        first = converted.rejected[0]
        raise errors.CommandFailed(
            f"ingested {len(metadata)} samples into {out}, {len(converted.rejected)} row(s) rejected, each with its "
            f"reason in {out / REJECTED_FILE} (first: {first['error']})")
    return metadata


def _kept_rows(err: errors.HeritageError, staging: Staging) -> errors.HeritageError:
    """``err`` saying which rows are kept and how to continue (the staging folder is removed when none are)."""
    if not staging.kept:
        staging.discard()
        return err
    before = staging.converted + staging.reused  # this run's rows, all before the one that failed
    kept = (f"the {before} row(s) converted before it are kept" if before
            else f"the {staging.kept} row(s) an earlier ingest converted are kept")
    fix = ("fix the machine" if isinstance(err, errors.MachineError)
           else "fix that row (or pass --skip-bad-rows)")
    return type(err)(f"{err}; {kept} in {staging.folder}: {fix} and run the same command again, it continues "
                     "with the rest")


@dataclass
class Converted:
    """The good rows (metadata rows, in source order), the rejected ones (rejected.csv rows) and the scale
    measurements of the good ones."""

    rows: list[dict]
    rejected: list[dict]
    components: list[scale.ComponentAreas]
    factors: list[float]


def _finish(out: Path, staging: Staging, converted: Converted) -> pd.DataFrame:
    """Move the staged rows into place, write metadata.csv (durably) and rejected.csv, drop the staging."""
    if not converted.rows:
        _write_rejected(out, converted.rejected)
        staging.discard()
        raise errors.InputError(f"no row could be ingested: all {len(converted.rejected)} were rejected, each with "
                                f"its reason in {out / REJECTED_FILE}")
    staging.move_into(out, [row["id"] for row in converted.rows])
    metadata = pd.DataFrame(converted.rows, columns=[*datafolder.METADATA_COLUMNS, *datafolder.ORIGINAL_SIZE_COLUMNS])
    datafolder.write_metadata(out, metadata)
    _write_rejected(out, converted.rejected)
    staging.discard()
    return metadata


def _write_rejected(out: Path, rejected: list[dict]) -> None:
    path = out / REJECTED_FILE
    if rejected:
        fileio.write_text(path, pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS)).to_csv(index=False))
    else:  # a clean ingest: an older list of rejected rows would describe another data folder
        path.unlink(missing_ok=True)


def remove_stale(data_dir: str | os.PathLike) -> list[Path]:
    """Remove what killed ingest/augment runs left in ``data_dir``; return what was removed.

    Staging folders (STAGING_PATTERN) and atomic-write temporaries (fileio.TEMP_FILE_PATTERN) in the
    folder, images/ and annotations/ (and in the resumable staging folder's), when their owner is gone
    (:func:`heritage.fileio.owner_is_gone`): a concurrently running ingest keeps its staging folder.
    """
    data_dir = Path(data_dir)
    removed = []
    if data_dir.is_dir():
        for path in data_dir.iterdir():
            match = STAGING_PATTERN.fullmatch(path.name)
            if match is None and not LEGACY_STAGING_PATTERN.fullmatch(path.name):
                continue
            if path.is_dir() and not path.is_symlink() and fileio.owner_is_gone(match, path):
                shutil.rmtree(path, ignore_errors=True)  # its owner may be finishing the same removal
                removed.append(path)
    resume = data_dir / RESUME_DIR
    for folder in (data_dir, data_dir / datafolder.IMAGES_DIR, data_dir / datafolder.ANNOTATIONS_DIR, resume,
                   resume / datafolder.IMAGES_DIR, resume / datafolder.ANNOTATIONS_DIR, resume / COMPONENTS_DIR):
        removed += fileio.remove_stale_temporaries(folder)
    return removed


def _convert_all(rows: Iterable[SourceRow], staging: Staging, total: int, decode_options: dict,
                 checks: RowChecks) -> Converted:
    converted = Converted([], [], [], [])
    seen: dict[str, str] = {}
    unknown: dict[tuple[str, str], list] = {}  # (column, value) -> [rows, first where]
    try:
        for row in tqdm(rows, total=total, desc="ingest", unit="image"):
            try:
                _convert_row(row, staging, decode_options, checks.strict, seen, unknown, converted)
            except (errors.InputError, errors.MissingInputError) as err:  # the row's fault, not the machine's
                if not checks.skip_bad_rows:
                    raise
                converted.rejected.append({"row": row.index, "id": row.id, "where": row.where,
                                           "error": cli_line(str(err))})
    finally:  # also when a later row fails: the names seen so far are worth fixing too
        for (column, value), (count, where) in unknown.items():  # one warning per name, not per row
            warnings.warn(f"{vocabulary.unknown_name_message(column, value)}: {count} row(s), first {where} "
                          "(fix the metadata, or pass --strict to refuse such names)",
                          vocabulary.VocabularyWarning, stacklevel=3)
    _warn_vanishing(converted.components, converted.factors, decode_options["longest_side"])
    return converted


def _convert_row(row: SourceRow, staging: Staging, decode_options: dict, strict: bool, seen: dict[str, str],
                 unknown: dict[tuple[str, str], list], converted: Converted) -> None:
    """Check, decode (or reuse) and stage one row; its metadata row and measurements go into ``converted``."""
    sample = row.build()
    if sample.id in seen:
        raise errors.InputError(f"{sample.where}: duplicated id, first seen at {seen[sample.id]}")
    seen[sample.id] = sample.where
    for column, value in (("material", sample.material), ("content", sample.content)):
        if strict:
            vocabulary.check_name(column, value, sample.where)
        elif value not in vocabulary.VOCABULARIES[column]:
            unknown.setdefault((column, value), [0, sample.where])[0] += 1
    key = row_key(sample)
    entry = staging.reuse(sample, key, decode_options["max_pixels"])
    components = None
    if entry is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            decoded = decoding.decode_sample(sample, **decode_options)
        notes = [str(w.message) for w in caught if issubclass(w.category, decoding.OrientationWarning)]
        for other in caught:
            if not issubclass(other.category, decoding.OrientationWarning):
                warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
        entry = staging.write(sample, key, decoded, notes)
        components = decoded.original_components
    elif entry["components"]:
        components = staging.components(sample.id)
    for note in entry["notes"]:  # said again when the row is reused: it still holds
        warnings.warn(note, decoding.OrientationWarning, stacklevel=2)
    width, height = entry["width"], entry["height"]
    converted.rows.append({"id": sample.id, "material": sample.material, "content": sample.content,
                           "width": width, "height": height, "source_id": sample.id,
                           "transform": datafolder.IDENTITY, "original_width": entry["original_width"],
                           "original_height": entry["original_height"]})
    if components is not None:
        converted.components.append(components)
        converted.factors.append(max(width, height) / max(entry["original_width"], entry["original_height"]))


def _warn_vanishing(components: list[scale.ComponentAreas], factors: list[float], longest_side: int | None
                    ) -> None:
    """A :class:`heritage.data.scale.ScaleWarning` per class whose median component (measured at the original
    size) the downscaling to ``longest_side`` shrinks below a pixel."""
    if not factors or min(factors) >= 1:  # nothing downscaled: every component keeps its pixels
        return
    where = (f"--longest-side {longest_side} (median factor {np.median(factors):.3g} of the original scans; "
             "0 keeps the original size)")
    for message in scale.vanishing_messages(scale.summarise(components, factors), where):
        warnings.warn(message, scale.ScaleWarning, stacklevel=4)


# -- CLI -------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, type=Path,
                        help="HF dataset folder (data/*.parquet or *.parquet), one parquet file, "
                             "or an exported folder (images/, annotations/, metadata.csv)")
    parser.add_argument("--out", required=True, type=Path, help="data folder to write")
    parser.add_argument("--longest-side", type=int, default=DEFAULT_LONGEST_SIDE,
                        help="downscale so the longer side is at most this many pixels; 0 keeps "
                             "the original size (default: %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=fileio.DEFAULT_MAX_PIXELS,
                        help="refuse images or annotations of more pixels, read from the file header before "
                             "decoding (decompression bombs); the default admits ARTeFACT's largest scan "
                             "(243,748,701 px); 0 leaves only PIL's own guard (default: %(default)s)")
    masks = parser.add_argument_group("annotation formats (default: single-channel class ids, the image's size)")
    masks.add_argument("--binary-mask-class", metavar="NAME", choices=taxonomy.CLASS_NAMES[1:],
                       help="annotations are binary masks: pixels >= --binary-threshold become this damage "
                            "class, the others Clean (no Background)")
    masks.add_argument("--binary-threshold", type=int, default=decoding.DEFAULT_BINARY_THRESHOLD,
                       help="grey level from which a binary mask pixel is damage (default: %(default)s)")
    masks.add_argument("--rgb-masks", action="store_true",
                       help="annotations are drawn in the ARTeFACT palette (heritage.data.taxonomy.PALETTE, "
                            "Background BACKGROUND_RGB); each colour maps to the nearest palette colour")
    masks.add_argument("--palette-tolerance", type=float, default=decoding.DEFAULT_PALETTE_TOLERANCE,
                       help="with --rgb-masks: largest RGB distance to the nearest palette colour (JPEG "
                            "ringing); farther colours are refused (default: %(default)s)")
    masks.add_argument("--unmatched-as-background", action="store_true",
                       help="with --rgb-masks: colours beyond --palette-tolerance (the smeared edges of "
                            f"chroma-subsampled JPEG) become Background, ignored in training and metrics; a "
                            f"mask with more than {decoding.MAX_UNMATCHED_SHARE * 100:.0f}%% such pixels is still "
                            "refused")
    masks.add_argument("--resize-masks", action="store_true",
                       help="resize an annotation of another size but the same aspect ratio to its image "
                            "(nearest neighbour)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse materials/contents outside ARTeFACT's vocabulary instead of warning")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help=f"write every good row and list each bad one with its reason in <out>/{REJECTED_FILE}, "
                             "then exit 1 (default: stop at the first bad row; the rows converted before it are "
                             "kept and a rerun continues after them)")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of an exported folder's metadata.csv, e.g. cp1252 for what Excel "
                             "writes (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    masks = decoding.MaskFormat(binary_class=args.binary_mask_class, binary_threshold=args.binary_threshold,
                       rgb=args.rgb_masks, palette_tolerance=args.palette_tolerance,
                       unmatched_background=args.unmatched_as_background, resize=args.resize_masks)
    said = (vocabulary.VocabularyWarning, scale.ScaleWarning, decoding.OrientationWarning)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            for category in (*said, ResumeNote):
                warnings.simplefilter("always", category)
            # PIL's own note on a damaged EXIF block: the row's OrientationWarning says it, naming the row
            warnings.filterwarnings("ignore", message="Corrupt EXIF data")
            metadata = ingest(args.source, args.out, args.longest_side or None, max_pixels=args.max_pixels or None,
                              masks=masks, checks=RowChecks(strict=args.strict, skip_bad_rows=args.skip_bad_rows),
                              encoding=args.encoding)
    finally:  # the warnings matter even when a later row fails; shown once the recorder is gone (inside it,
        # showing another library's warning would record it again, into the list being shown)
        for warning in caught:
            if issubclass(warning.category, said):
                print(f"heritage data ingest: warning: {warning.message}", file=sys.stderr)
            elif issubclass(warning.category, ResumeNote):
                print(f"heritage data ingest: {warning.message}", file=sys.stderr)
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    print(f"ingested {len(metadata)} samples into {args.out}")
    return 0
