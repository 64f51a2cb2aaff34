"""HF parquet shards of ARTeFACT (or an already exported folder) -> a data folder.

The data folder (:mod:`heritage.data.datafolder`: ``images/<id>.png``, ``annotations/<id>.png`` and
``metadata.csv``) is what every later step reads; this module is the ``data ingest`` command that
writes it, each row decoded by :mod:`heritage.data.decoding`.

Rows are read one at a time, with parquet pre-buffering off, so memory is bounded by one decoded
image even for the 100+ megapixel scans of the real dataset. Every row is validated (decodable
image and mask, class ids, matching sizes) and errors name the shard, row and id. Outputs are first
written into a staging folder inside the destination and moved into place only once every row has
been converted, with ``metadata.csv`` written last: a failed ingest leaves the destination as it was.

Bad input, and the opt-ins for real annotation formats (``--max-pixels``, the mask formats and
how each row is decoded are described in :mod:`heritage.data.decoding`):

- Each sample's original size is recorded (``original_width``, ``original_height``), and a
  ``--longest-side`` that shrinks a class's median damage component (8-connected, measured on the
  full-size masks, :mod:`heritage.data.scale`) below a pixel is warned about, naming the classes.
- Materials and contents outside ARTeFACT's vocabulary (:mod:`heritage.data.vocabulary`) are warned
  about with the closest name, and refused with ``--strict``.
- A staging folder or temporary file left by a killed ingest/augment is removed by the next one
  (owner pid dead on this host, or untouched for :data:`heritage.fileio.STALE_AFTER_S`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from heritage import errors, fileio
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


# -- reading the inputs ----------------------------------------------------------------------------


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


def iter_parquet(shards: list[Path]) -> Iterator[decoding.RawSample]:
    for shard in shards:
        # pre_buffer=False + a bounded buffer: stream pages instead of loading whole row groups,
        # which hold ~100 full-resolution scans in the HF export.
        parquet = pq.ParquetFile(shard, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES)
        batches = parquet.iter_batches(batch_size=1, columns=list(PARQUET_COLUMNS), use_threads=False)
        for row_index, batch in enumerate(batches):
            row = batch.to_pylist()[0]
            where = f"{shard}: row {row_index} (id {row['id']!r})"
            yield decoding.RawSample(
                id=datafolder.check_id(row["id"], where),
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
    path = folder / datafolder.METADATA_FILE
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in EXPORT_COLUMNS if c not in table.columns]
    if missing:
        raise errors.InputError(f"{path}: missing column(s) {missing}")
    if "transform" in table.columns:  # one of our data folders: re-derive augmented copies later
        table = table[table["transform"] == datafolder.IDENTITY]
    if table.empty:
        raise errors.InputError(f"{path}: empty dataset (no original samples)")
    return table.reset_index(drop=True)


def export_samples(folder: Path, table: pd.DataFrame) -> list[decoding.RawSample]:
    """Samples of an exported folder, all files checked to exist; paths from image_path/annotation_path or the id."""
    samples = []
    for row_index, row in table.iterrows():
        where = f"{folder / datafolder.METADATA_FILE}: row {row_index} (id {row['id']!r})"
        sample_id = datafolder.check_id(row["id"], where)
        image = folder / row["image_path"] if row.get("image_path") else datafolder.image_path(folder, sample_id)
        annotation = (
            folder / row["annotation_path"] if row.get("annotation_path")
            else datafolder.annotation_path(folder, sample_id)
        )
        samples.append(decoding.RawSample(sample_id, _text(row["material"], "material", where),
                                          _text(row["content"], "content", where), image, annotation, where))
    missing = [str(p) for s in samples for p in (s.image, s.annotation) if not Path(p).is_file()]
    if missing:
        raise errors.MissingInputError(f"{len(missing)} file(s) listed in {folder / datafolder.METADATA_FILE} "
                                       f"not found: {missing[:5]}")
    return samples


# -- conversion ------------------------------------------------------------------------------------


def ingest(source: str | os.PathLike, out: str | os.PathLike,
           longest_side: int | None = DEFAULT_LONGEST_SIDE, *,
           max_pixels: int | None = fileio.DEFAULT_MAX_PIXELS, masks: decoding.MaskFormat = decoding.MaskFormat(),
           strict: bool = False) -> pd.DataFrame:
    """Convert parquet shards or an exported folder at ``source`` into the data folder ``out``.

    ``max_pixels`` (None: PIL's own guard) refuses larger images from their header; ``masks`` opts in
    to binary, RGB or resized annotations; ``strict`` refuses materials/contents outside ARTeFACT's
    vocabulary, which are otherwise reported as :class:`heritage.data.vocabulary.VocabularyWarning`.
    Each sample's original (upright) size is recorded (datafolder.ORIGINAL_SIZE_COLUMNS); a
    :class:`heritage.data.scale.ScaleWarning` names each class whose median damage component, measured on
    the full-size masks, ``longest_side`` shrinks below a pixel. Returns the metadata written (original samples only: re-run ``augment`` afterwards).
    """
    if longest_side is not None and longest_side < 1:
        raise errors.InputError(f"longest_side must be a positive number of pixels, got {longest_side}")
    if max_pixels is not None and max_pixels < 1:
        raise errors.InputError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
    source = Path(source)
    out = Path(out)
    if source.is_dir() and (source / datafolder.METADATA_FILE).is_file():
        exported = export_samples(source, read_export_table(source))
        samples: Iterable[decoding.RawSample] = exported
        total = len(exported)
    else:
        shards = find_shards(source)
        samples, total = iter_parquet(shards), check_parquet_columns(shards)
        if total == 0:
            raise errors.InputError(f"{source}: empty dataset (the parquet shards hold no rows)")

    out.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{fileio.owner_tag()}-", dir=out))
    try:
        rows = _convert_all(samples, staging, total,
                            dict(longest_side=longest_side, max_pixels=max_pixels, masks=masks), strict)
        for row in rows:  # every sample converted: move them into place, metadata last
            for relative in (datafolder.image_path("", row["id"]), datafolder.annotation_path("", row["id"])):
                (out / relative).parent.mkdir(exist_ok=True)
                os.replace(staging / relative, out / relative)
        metadata = pd.DataFrame(rows, columns=[*datafolder.METADATA_COLUMNS, *datafolder.ORIGINAL_SIZE_COLUMNS])
        datafolder.write_metadata(out, metadata)
    finally:
        shutil.rmtree(staging)
    return metadata


def remove_stale(data_dir: str | os.PathLike) -> list[Path]:
    """Remove what killed ingest/augment runs left in ``data_dir``; return what was removed.

    Staging folders (STAGING_PATTERN) and atomic-write temporaries (fileio.TEMP_FILE_PATTERN) in the
    folder, images/ and annotations/, when their owner is gone (:func:`heritage.fileio.owner_is_gone`):
    a concurrently running ingest keeps its staging folder.
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
    for folder in (data_dir, data_dir / datafolder.IMAGES_DIR, data_dir / datafolder.ANNOTATIONS_DIR):
        removed += fileio.remove_stale_temporaries(folder)
    return removed


def _convert_all(samples: Iterable[decoding.RawSample], staging: Path, total: int, decode_options: dict,
                 strict: bool) -> list[dict]:
    rows: list[dict] = []
    seen: dict[str, str] = {}
    unknown: dict[tuple[str, str], list] = {}  # (column, value) -> [rows, first where]
    components: list[scale.ComponentAreas] = []  # at the original size, with the factor to the stored one
    factors: list[float] = []
    try:
        for sample in tqdm(samples, total=total, desc="ingest", unit="image"):
            if sample.id in seen:
                raise errors.InputError(f"{sample.where}: duplicated id, first seen at {seen[sample.id]}")
            seen[sample.id] = sample.where
            for column, value in (("material", sample.material), ("content", sample.content)):
                if strict:
                    vocabulary.check_name(column, value, sample.where)
                elif value not in vocabulary.VOCABULARIES[column]:
                    unknown.setdefault((column, value), [0, sample.where])[0] += 1
            decoded = decoding.decode_sample(sample, **decode_options)
            fileio.write_png(datafolder.image_path(staging, sample.id), decoded.image)
            fileio.write_png(datafolder.annotation_path(staging, sample.id), decoded.mask)
            height, width = decoded.mask.shape
            original_width, original_height = decoded.original_size
            rows.append({"id": sample.id, "material": sample.material, "content": sample.content,
                         "width": width, "height": height, "source_id": sample.id, "transform": datafolder.IDENTITY,
                         "original_width": original_width, "original_height": original_height})
            if decoded.original_components is not None:
                components.append(decoded.original_components)
                factors.append(max(width, height) / max(original_width, original_height))
    finally:  # also when a later row fails: the names seen so far are worth fixing too
        for (column, value), (count, where) in unknown.items():  # one warning per name, not per row
            warnings.warn(f"{vocabulary.unknown_name_message(column, value)}: {count} row(s), first {where} "
                          "(fix the metadata, or pass --strict to refuse such names)",
                          vocabulary.VocabularyWarning, stacklevel=3)
    _warn_vanishing(components, factors, decode_options["longest_side"])
    return rows


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


def main(args: argparse.Namespace) -> int:
    masks = decoding.MaskFormat(binary_class=args.binary_mask_class, binary_threshold=args.binary_threshold,
                       rgb=args.rgb_masks, palette_tolerance=args.palette_tolerance,
                       unmatched_background=args.unmatched_as_background, resize=args.resize_masks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", vocabulary.VocabularyWarning)
        warnings.simplefilter("always", scale.ScaleWarning)
        try:
            metadata = ingest(args.source, args.out, args.longest_side or None, max_pixels=args.max_pixels or None,
                              masks=masks, strict=args.strict)
        finally:  # the warnings matter even when a later row fails
            for warning in caught:
                if issubclass(warning.category, (vocabulary.VocabularyWarning, scale.ScaleWarning)):
                    print(f"heritage data ingest: warning: {warning.message}", file=sys.stderr)
                else:
                    warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    print(f"ingested {len(metadata)} samples into {args.out}")
    return 0
