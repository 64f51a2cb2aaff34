"""HF parquet shards of ARTeFACT (or an already exported folder) -> a data folder.

The data folder (layout in ARCHITECTURE.md) is what every later step reads: ``images/<id>.png``,
``annotations/<id>.png`` and ``metadata.csv``. This module writes it and owns its reading helpers
(:func:`read_metadata`, :func:`image_path`, :func:`annotation_path`).

Rows are read one at a time, with parquet pre-buffering off, so memory is bounded by one decoded
image even for the 100+ megapixel scans of the real dataset. Every row is validated (decodable
image and mask, class ids, matching sizes) and errors name the shard, row and id. Outputs are first
written into a staging folder inside the destination and moved into place only once every row has
been converted, with ``metadata.csv`` written last: a failed ingest leaves the destination as it was.

Bad input, and the opt-ins for real annotation formats:

- Sizes are read from the file header before decoding: more than ``--max-pixels`` (default
  :data:`heritage.fileio.DEFAULT_MAX_PIXELS`, just above ARTeFACT's largest scan) is refused naming
  the row, so a decompression bomb never allocates. A JPEG that is downscaled anyway is decoded at
  1/2, 1/4 or 1/8 size by libjpeg (``Image.draft``), a pyramidal TIFF is read from its smallest
  level that is still large enough (tifffile), and every image is reduced inside PIL before it
  becomes an array, so memory stays near one decoded image (PNG and flat TIFF decode at full size).
- Camera JPEGs are turned upright by their EXIF orientation; the annotation is compared against the
  upright size.
- Annotations are single-channel class ids of exactly the image's size unless asked otherwise:
  ``--binary-mask-class NAME --binary-threshold T`` (values >= T are NAME, others Clean),
  ``--rgb-masks`` (colours mapped to the nearest ARTeFACT palette colour within
  ``--palette-tolerance``, for lossy JPEG renderings; ``--unmatched-as-background`` ignores the
  colours chroma-subsampled JPEG smears across class edges), ``--resize-masks`` (an annotation of the same
  aspect ratio but another size is resized with nearest neighbour). Masks are only ever resampled
  with nearest neighbour, and mapped to class ids after resampling (the two commute).
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
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from heritage import errors, fileio
from heritage.data import scale, taxonomy, vocabulary

PARQUET_COLUMNS = ("id", "image", "annotation", "material", "content")
EXPORT_COLUMNS = ("id", "material", "content")
METADATA_COLUMNS = ("id", "material", "content", "width", "height", "source_id", "transform")
# The scan's size before ingest downscaled it (upright, pixels): written by ingest, optional when read
# (folders from before it was recorded: their stored size is taken as the original, see original_size).
ORIGINAL_SIZE_COLUMNS = ("original_width", "original_height")
METADATA_FILE = "metadata.csv"
IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
IDENTITY = "identity"
DEFAULT_LONGEST_SIDE = 512
# "__" separates a source id from the name of an augmentation (see heritage.data.augment).
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PARQUET_BUFFER_BYTES = 8 << 20
# The staging folder: ".ingest-<pid>@<host>-<random>" (remove_stale_staging parses the owner back;
# the legacy form, without owner, is removed by age only).
STAGING_PREFIX = ".ingest-"
STAGING_PATTERN = re.compile(rf"\.ingest-{fileio.OWNER_PATTERN}-{fileio.RANDOM_PATTERN}")
LEGACY_STAGING_PATTERN = re.compile(rf"\.ingest-{fileio.RANDOM_PATTERN}")
DEFAULT_BINARY_THRESHOLD = 128
# Euclidean RGB distance to the nearest palette colour (the nearest decides the class): wide enough for
# the ringing of a JPEG saved at quality 90 without chroma subsampling (measured: at most ~45), narrow
# enough to refuse most masks drawn in another palette. Chroma-subsampled JPEG (4:2:0, PIL's and most
# cameras' default) smears colours across class edges much farther (~130): see unmatched_background.
DEFAULT_PALETTE_TOLERANCE = 50.0
# With unmatched_background, a mask with more unmatched pixels than this is still refused: it is
# not edge noise but another palette.
MAX_UNMATCHED_SHARE = 0.05
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # as in ImageOps.exif_transpose, applied here after resizing (cheaper, and keeps draft's box)
_PALETTE_CHUNK_PIXELS = 1 << 20


@dataclass(frozen=True)
class MaskFormat:
    """How annotation files are read; the default is single-channel class ids of the image's size."""

    binary_class: str | None = None  # binary masks: values >= binary_threshold are this class, others Clean
    binary_threshold: int = DEFAULT_BINARY_THRESHOLD
    rgb: bool = False  # colours of the ARTeFACT palette (nearest within palette_tolerance)
    palette_tolerance: float = DEFAULT_PALETTE_TOLERANCE
    unmatched_background: bool = False  # colours beyond the tolerance become Background (ignored)
    resize: bool = False  # resize an annotation of the same aspect ratio to its image (nearest neighbour)

    def __post_init__(self) -> None:
        if self.binary_class is not None and self.rgb:
            raise errors.InputError("--binary-mask-class and --rgb-masks exclude each other: "
                                    "a mask is one or the other")
        if self.binary_class is not None and self.binary_class not in taxonomy.CLASS_NAMES[1:]:
            raise errors.InputError(f"--binary-mask-class {self.binary_class!r} is not a damage class "
                                    f"(expected one of {list(taxonomy.CLASS_NAMES[1:])})")
        if not 1 <= self.binary_threshold <= 255:
            raise errors.InputError(f"--binary-threshold must be in 1..255, got {self.binary_threshold}")
        if not self.palette_tolerance >= 0:
            raise errors.InputError(f"--palette-tolerance must be >= 0, got {self.palette_tolerance}")
        if (self.unmatched_background or self.palette_tolerance != DEFAULT_PALETTE_TOLERANCE) and not self.rgb:
            raise errors.InputError("--palette-tolerance and --unmatched-as-background apply to --rgb-masks only")


@dataclass(frozen=True)
class RawSample:
    """One input sample before decoding; ``where`` locates it in error messages."""

    id: str
    material: str
    content: str
    image: bytes | Path
    annotation: bytes | Path
    where: str


class Decoded(NamedTuple):
    """One decoded sample (:func:`decode_sample`)."""

    image: np.ndarray  # (H, W, 3) uint8, upright, at the stored size
    mask: np.ndarray  # (H, W) uint8 class ids, at the stored size
    original_size: tuple[int, int]  # (width, height) of the upright scan before any downscaling
    # damage components of the mask at original_size (scale.component_areas); None where measuring them
    # would mean mapping a full-size --rgb-masks mask to the palette
    original_components: scale.ComponentAreas | None


# --- the data folder -------------------------------------------------------------------------


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
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
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
    fileio.write_text(Path(data_dir) / METADATA_FILE, table[columns].to_csv(index=False))


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
        try:
            parquet = pq.ParquetFile(shard)
        except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid / ArrowIOError: not a parquet file
            raise errors.InputError(f"{shard}: not a readable parquet file ({err})") from None
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


def decode_sample(sample: RawSample, longest_side: int | None = None,
                  max_pixels: int | None = fileio.DEFAULT_MAX_PIXELS,
                  masks: MaskFormat = MaskFormat()) -> Decoded:
    """Decode and validate one sample: (H, W, 3) uint8 image and (H, W) uint8 class-id mask.

    Both are downscaled to ``longest_side`` (None: original size) while decoding, the image upright
    by its EXIF orientation; sizes are checked from the headers first (``max_pixels``, alignment).
    The mask's damage components are measured on the full-size mask, which is decoded anyway before
    it is resized (the downscaled one has lost the smallest of them).
    """

    def label(kind: str, source: bytes | Path) -> str:
        return f"{sample.where}: {kind}" if isinstance(source, bytes) else str(source)

    image_label, mask_label = label("image", sample.image), label("annotation", sample.annotation)
    image = fileio.open_lazy(sample.image, image_label, max_pixels)
    mask = fileio.open_lazy(sample.annotation, mask_label, max_pixels)
    _check_mask_mode(mask, mask_label, masks)
    try:
        image_orientation, mask_orientation = _orientation(image), _orientation(mask)
        size, mask_size = _upright_size(image, image_orientation), _upright_size(mask, mask_orientation)
        if mask_size != size:
            _check_alignment(sample.where, size, mask_size, image_orientation, masks)
        target = target_size(size, longest_side)
        image_array = _decode_image(image, image_orientation, target, image_label, max_pixels, sample.image)
        mask_array, components = _decode_mask(mask, mask_orientation, target, mask_label, max_pixels, masks)
    except MemoryError:  # an admitted size can still exceed this machine's memory: say which row
        width, height = image.size
        raise errors.InputError(
            f"{sample.where}: not enough memory to decode its {width}x{height} = {width * height:,} pixel "
            f"image (--max-pixels is {f'{max_pixels:,}' if max_pixels else 'off'}); run with more memory, or "
            "lower --max-pixels to refuse such scans up front") from None
    return Decoded(image_array, mask_array, size, components)


def target_size(size: tuple[int, int], longest_side: int | None) -> tuple[int, int]:
    """(width, height) with the longer side ``longest_side``, aspect kept; never upscales."""
    width, height = size
    if longest_side is None or max(width, height) <= longest_side:
        return size
    scale = longest_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _orientation(image: Image.Image) -> int:
    """The EXIF Orientation (1 = as stored), read without decoding the pixels."""
    try:
        if image.format == "PNG":  # PIL's PNG getexif() decodes the whole image to find a late eXIf chunk
            exif = Image.Exif()
            if image.info.get("exif"):
                exif.load(image.info["exif"])
        else:
            exif = image.getexif()
        return int(exif.get(0x0112, 1))
    except (TypeError, ValueError, OSError, SyntaxError):  # a malformed EXIF block: keep the stored pixels
        return 1


def _upright_size(image: Image.Image, orientation: int) -> tuple[int, int]:
    width, height = image.size
    return (height, width) if orientation in _ROTATING_ORIENTATIONS else (width, height)


def _stored(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """An upright (width, height) in the file's stored orientation."""
    return (size[1], size[0]) if orientation in _ROTATING_ORIENTATIONS else size


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether one size is the other scaled, up to the rounding of each side to whole pixels."""
    return abs(a[0] * b[1] - a[1] * b[0]) <= max(a[0] + a[1], b[0] + b[1]) / 2


def _check_alignment(where: str, size: tuple[int, int], mask_size: tuple[int, int], orientation: int,
                     masks: MaskFormat) -> None:
    message = (f"{where}: image is {size[0]}x{size[1]} but annotation is {mask_size[0]}x{mask_size[1]} "
               "(width x height)")
    if orientation in _ROTATING_ORIENTATIONS and mask_size == _stored(size, orientation):
        raise errors.InputError(
            f"{message}: the image's EXIF orientation {orientation} turns its stored "
            f"{mask_size[0]}x{mask_size[1]} pixels upright, the annotation matches the unrotated pixels; "
            "export the annotation of the upright image")
    if not _same_aspect(size, mask_size):
        raise errors.InputError(f"{message}: the aspect ratios differ, so no resize can align them")
    if not masks.resize:
        raise errors.InputError(f"{message}: same aspect ratio; pass --resize-masks to resize annotations to "
                                "their image (nearest neighbour)")


def _decode_image(image: Image.Image, orientation: int, target: tuple[int, int], label: str,
                  max_pixels: int | None, source: bytes | Path) -> np.ndarray:
    stored_target = _stored(target, orientation)
    box = None
    if stored_target != image.size and image.format == "JPEG":
        # reduce on decode: libjpeg scales by 1/2, 1/4 or 1/8, to no less than the target
        drafted = image.draft("RGB", stored_target)
        box = drafted[1] if drafted else None
    elif stored_target != image.size and image.format == "TIFF":
        level = _tiff_pyramid_level(source, stored_target, label)
        if level is not None:
            image = Image.fromarray(level)
    fileio.load(image, label, max_pixels)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "RGBA", "LA", "PA") or "transparency" in image.info:
        image = Image.fromarray(fileio.to_rgb_array(image))  # explicit 16-bit scaling, alpha on white
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if stored_target != image.size or box is not None:
        image = image.resize(stored_target, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    return np.asarray(image, dtype=np.uint8)


def _tiff_pyramid_level(source: bytes | Path, stored_target: tuple[int, int], label: str) -> np.ndarray | None:
    """The smallest pyramid level of a tiled TIFF that is still at least the target, read with tifffile.

    Pyramidal TIFFs (sub-IFDs or reduced pages, as slide and IIIF scanners write them) then never
    decode at full size. None (decode with PIL) for a TIFF without a smaller level or with pixels
    other than 8-bit grey/RGB.
    """
    import tifffile  # only needed for TIFF sources

    try:
        with tifffile.TiffFile(io.BytesIO(source) if isinstance(source, bytes) else source) as tiff:
            series = tiff.series[0]
            levels = [level for level in series.levels[1:] if level.axes in ("YX", "YXS")
                      and level.dtype == np.uint8 and level.shape[2:] in ((), (3,))
                      and level.shape[1] >= stored_target[0] and level.shape[0] >= stored_target[1]]
            return levels[-1].asarray() if levels else None
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
        raise errors.InputError(f"{label}: cannot read TIFF pyramid ({err})") from None


def _check_mask_mode(mask: Image.Image, label: str, masks: MaskFormat) -> None:
    if masks.binary_class is None and not masks.rgb and mask.mode not in ("L", "P"):
        hint = ("for masks drawn in the ARTeFACT palette pass --rgb-masks, for binary masks "
                "--binary-mask-class NAME [--binary-threshold T]")
        raise errors.InputError(f"{label}: a class-id mask must be single-channel 8-bit, got mode {mask.mode} ({hint})")
    if masks.rgb and mask.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
        raise errors.InputError(f"{label}: --rgb-masks expects a colour mask, got mode {mask.mode}")


def _decode_mask(mask: Image.Image, orientation: int, target: tuple[int, int], label: str,
                 max_pixels: int | None, masks: MaskFormat) -> tuple[np.ndarray, scale.ComponentAreas | None]:
    """The stored class-id mask, and the damage components of the full-size one (see :class:`Decoded`)."""
    fileio.load(mask, label, max_pixels)
    stored_target = _stored(target, orientation)
    resized = stored_target != mask.size
    original_components = None
    if resized and not masks.rgb:  # measured before the resize drops the smallest components
        original_components = scale.component_areas(_class_ids(_single_channel(mask, masks), masks))
    if resized:  # nearest neighbour only: class ids (or colours) are picked, never blended
        mask = mask.resize(stored_target, Image.Resampling.NEAREST)
    # converted after resizing (nearest picks pixels, so the two commute): the full-size mask is never copied
    mask = mask.convert("RGB") if masks.rgb else _single_channel(mask, masks)
    if orientation in _TRANSPOSE:
        mask = mask.transpose(_TRANSPOSE[orientation])
    array = np.asarray(mask, dtype=np.uint8)
    where = f"{label} (resized to {target[0]}x{target[1]})" if resized else label
    if masks.rgb:
        array = palette_ids(array, masks.palette_tolerance, where, masks.unmatched_background)
    elif masks.binary_class is not None:
        array = _class_ids(mask, masks)
    else:
        try:
            taxonomy.check_mask_values(array, where)
        except errors.InputError as err:
            raise errors.InputError(
                f"{err}; for binary masks pass --binary-mask-class NAME [--binary-threshold T]") from None
    return array, (original_components if resized else scale.component_areas(array))


def _single_channel(mask: Image.Image, masks: MaskFormat) -> Image.Image:
    """A class-id or binary mask as one 8-bit channel (not for --rgb-masks)."""
    if masks.binary_class is not None:
        return mask.convert("L")
    return _palette_mask_ids(mask) if mask.mode == "P" else mask


def _class_ids(mask: Image.Image, masks: MaskFormat) -> np.ndarray:
    """Class ids of a single-channel mask: binary masks thresholded, class-id masks as they are."""
    array = np.asarray(mask, dtype=np.uint8)
    if masks.binary_class is None:
        return array
    damage = np.uint8(taxonomy.CLASS_IDS[masks.binary_class])
    return np.where(array >= masks.binary_threshold, damage, np.uint8(0)).astype(np.uint8)


def _palette_mask_ids(mask: Image.Image) -> Image.Image:
    """Class ids of an indexed (P) mask: its grey levels when the palette is grey, else its indices.

    A grey palette is how optimisers store a greyscale PNG (index != grey level); a colour palette is
    the VOC convention, where the index is the class id.
    """
    indices = np.asarray(mask, dtype=np.uint8)
    palette = np.asarray(mask.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    used = np.unique(indices)
    if len(palette) > used.max() and (palette[used] == palette[used][:, :1]).all():
        grey = np.zeros(256, np.uint8)
        grey[: len(palette)] = palette[:, 0]
        return Image.fromarray(grey[indices])
    return Image.fromarray(indices)


def palette_ids(rgb: np.ndarray, tolerance: float, where: str, unmatched_background: bool = False) -> np.ndarray:
    """Class ids of an (H, W, 3) mask drawn in the ARTeFACT palette (Background colour -> 255).

    Each colour goes to the nearest palette colour if it lies within ``tolerance`` (Euclidean RGB),
    which absorbs JPEG ringing. A farther colour is an error naming it and its first pixel, or, with
    ``unmatched_background``, Background (255: ignored by losses and metrics, as an uncertain edge
    pixel should be) unless more than MAX_UNMATCHED_SHARE of the pixels are unmatched.
    """
    colours = taxonomy.palette_array()[[*range(taxonomy.NUM_CLASSES), taxonomy.IGNORE_INDEX]].astype(np.float64)
    ids = np.array([*range(taxonomy.NUM_CLASSES), taxonomy.IGNORE_INDEX], dtype=np.uint8)
    flat = rgb.reshape(-1, 3)
    out = np.empty(len(flat), dtype=np.uint8)
    first_far: tuple[int, np.ndarray, float, int] | None = None  # pixel index, colour, distance, nearest id
    n_far = 0
    for start in range(0, len(flat), _PALETTE_CHUNK_PIXELS):  # bounded memory on full-size masks
        chunk = flat[start: start + _PALETTE_CHUNK_PIXELS]
        unique, inverse = np.unique(chunk, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        distance = np.linalg.norm(unique[:, None, :].astype(np.float64) - colours[None], axis=2)
        nearest = distance.argmin(axis=1)
        nearest_distance = distance[np.arange(len(unique)), nearest]
        far = nearest_distance > tolerance
        mapped = ids[nearest]
        if far.any():
            far_pixels = far[inverse]
            n_far += int(far_pixels.sum())
            if first_far is None:
                index = int(np.flatnonzero(far_pixels)[0])
                u = inverse[index]
                first_far = (start + index, unique[u], float(nearest_distance[u]), int(ids[nearest[u]]))
            mapped = np.where(far, np.uint8(taxonomy.IGNORE_INDEX), mapped)
        out[start: start + len(chunk)] = mapped[inverse]
    if first_far is not None and (not unmatched_background or n_far > MAX_UNMATCHED_SHARE * len(flat)):
        index, colour, distance_to, closest = first_far
        y, x = divmod(index, rgb.shape[1])
        name = taxonomy.BACKGROUND_NAME if closest == taxonomy.IGNORE_INDEX else taxonomy.CLASS_NAMES[closest]
        if unmatched_background:
            hint = (f"{n_far} pixels ({n_far / len(flat):.0%}) are that far, more than "
                    f"{MAX_UNMATCHED_SHARE:.0%}: is it drawn in another palette?")
        else:
            hint = ("lossy JPEG edges: raise --palette-tolerance, or pass --unmatched-as-background "
                    "to ignore such pixels")
        raise errors.InputError(
            f"{where}: colour {tuple(int(v) for v in colour)} at (x={x}, y={y}) is not an ARTeFACT palette colour "
            f"(nearest: {name}, at distance {distance_to:.1f} > --palette-tolerance {tolerance:g}); {hint}")
    return out.reshape(rgb.shape[:2])


def ingest(source: str | os.PathLike, out: str | os.PathLike,
           longest_side: int | None = DEFAULT_LONGEST_SIDE, *,
           max_pixels: int | None = fileio.DEFAULT_MAX_PIXELS, masks: MaskFormat = MaskFormat(),
           strict: bool = False) -> pd.DataFrame:
    """Convert parquet shards or an exported folder at ``source`` into the data folder ``out``.

    ``max_pixels`` (None: PIL's own guard) refuses larger images from their header; ``masks`` opts in
    to binary, RGB or resized annotations; ``strict`` refuses materials/contents outside ARTeFACT's
    vocabulary, which are otherwise reported as :class:`heritage.data.vocabulary.VocabularyWarning`.
    Each sample's original (upright) size is recorded (ORIGINAL_SIZE_COLUMNS); a
    :class:`heritage.data.scale.ScaleWarning` names each class whose median damage component, measured on
    the full-size masks, ``longest_side`` shrinks below a pixel. Returns the metadata written (original samples only: re-run ``augment`` afterwards).
    """
    if longest_side is not None and longest_side < 1:
        raise errors.InputError(f"longest_side must be a positive number of pixels, got {longest_side}")
    if max_pixels is not None and max_pixels < 1:
        raise errors.InputError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
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
    remove_stale(out)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{fileio.owner_tag()}-", dir=out))
    try:
        rows = _convert_all(samples, staging, total,
                            dict(longest_side=longest_side, max_pixels=max_pixels, masks=masks), strict)
        for row in rows:  # every sample converted: move them into place, metadata last
            for relative in (image_path("", row["id"]), annotation_path("", row["id"])):
                (out / relative).parent.mkdir(exist_ok=True)
                os.replace(staging / relative, out / relative)
        metadata = pd.DataFrame(rows, columns=[*METADATA_COLUMNS, *ORIGINAL_SIZE_COLUMNS])
        write_metadata(out, metadata)
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
    for folder in (data_dir, data_dir / IMAGES_DIR, data_dir / ANNOTATIONS_DIR):
        removed += fileio.remove_stale_temporaries(folder)
    return removed


def _convert_all(samples: Iterable[RawSample], staging: Path, total: int, decode_options: dict,
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
            decoded = decode_sample(sample, **decode_options)
            fileio.write_png(image_path(staging, sample.id), decoded.image)
            fileio.write_png(annotation_path(staging, sample.id), decoded.mask)
            height, width = decoded.mask.shape
            original_width, original_height = decoded.original_size
            rows.append({"id": sample.id, "material": sample.material, "content": sample.content,
                         "width": width, "height": height, "source_id": sample.id, "transform": IDENTITY,
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


# --- CLI -----------------------------------------------------------------------------------------


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
    masks.add_argument("--binary-threshold", type=int, default=DEFAULT_BINARY_THRESHOLD,
                       help="grey level from which a binary mask pixel is damage (default: %(default)s)")
    masks.add_argument("--rgb-masks", action="store_true",
                       help="annotations are drawn in the ARTeFACT palette (heritage.data.taxonomy.PALETTE, "
                            "Background BACKGROUND_RGB); each colour maps to the nearest palette colour")
    masks.add_argument("--palette-tolerance", type=float, default=DEFAULT_PALETTE_TOLERANCE,
                       help="with --rgb-masks: largest RGB distance to the nearest palette colour (JPEG "
                            "ringing); farther colours are refused (default: %(default)s)")
    masks.add_argument("--unmatched-as-background", action="store_true",
                       help="with --rgb-masks: colours beyond --palette-tolerance (the smeared edges of "
                            f"chroma-subsampled JPEG) become Background, ignored in training and metrics; a "
                            f"mask with more than {MAX_UNMATCHED_SHARE * 100:.0f}%% such pixels is still refused")
    masks.add_argument("--resize-masks", action="store_true",
                       help="resize an annotation of another size but the same aspect ratio to its image "
                            "(nearest neighbour)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse materials/contents outside ARTeFACT's vocabulary instead of warning")


def main(args: argparse.Namespace) -> int:
    masks = MaskFormat(binary_class=args.binary_mask_class, binary_threshold=args.binary_threshold,
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
