"""Decoding one sample's image and annotation into the arrays a data folder stores.

What ingest does to each row, apart from reading its sources and writing the folder: the checks
and conversions that depend on the image and mask formats met in real annotations.

- Sizes are read from the file header before decoding: more than ``--max-pixels`` (default
  :data:`heritage.fileio.DEFAULT_MAX_PIXELS`, just above ARTeFACT's largest scan) is refused naming
  the row, so a decompression bomb never allocates. A JPEG that is downscaled anyway is decoded at
  1/2, 1/4 or 1/8 size by libjpeg (``Image.draft``), a pyramidal TIFF is read from its smallest
  level that is still large enough (tifffile), and every image is reduced inside PIL before it
  becomes an array, so memory stays near one decoded image (PNG and flat TIFF decode at full size).
- Camera JPEGs are turned upright by their EXIF orientation; the annotation is compared against the
  upright size. Where sizes cannot tell whether the annotation was drawn on the upright or on the
  stored pixels (a square scan turned by 90 degrees, a flip or a half turn) and the annotation does
  not carry the same orientation, the row's ``annotation_rgb`` (when it has one) decides: an
  ``annotation_rgb`` equal to the annotation turned by the image's orientation is refused; otherwise
  each such row gets an :class:`OrientationWarning`. An EXIF block that cannot be read (or an
  orientation outside 1-8) keeps the stored pixels, with an :class:`OrientationWarning` naming the row.
- Annotations are single-channel class ids of exactly the image's size unless asked otherwise:
  ``--binary-mask-class NAME --binary-threshold T`` (values >= T are NAME, others Clean),
  ``--rgb-masks`` (colours mapped to the nearest ARTeFACT palette colour within
  ``--palette-tolerance``, for lossy JPEG renderings; ``--unmatched-as-background`` ignores the
  colours chroma-subsampled JPEG smears across class edges), ``--resize-masks`` (an annotation of the same
  aspect ratio but another size is resized with nearest neighbour). Masks are only ever resampled
  with nearest neighbour, and mapped to class ids after resampling (the two commute).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from struct import error as struct_error

from heritage import errors, fileio
from heritage.data import scale, taxonomy

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
# Share of pixels on which annotation_rgb must agree with one reading of the annotation (and not the other)
# to decide its orientation.
FRAME_AGREEMENT = 0.98


class OrientationWarning(UserWarning):
    """An EXIF orientation that cannot be read, or an annotation whose frame the sizes cannot check."""


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
    annotation_rgb: bytes | Path | None = None  # the annotation drawn in colours, when the row has one


class Decoded(NamedTuple):
    """One decoded sample (:func:`decode_sample`)."""

    image: np.ndarray  # (H, W, 3) uint8, upright, at the stored size
    mask: np.ndarray  # (H, W) uint8 class ids, at the stored size
    original_size: tuple[int, int]  # (width, height) of the upright scan before any downscaling
    # damage components of the mask at original_size (scale.component_areas); None where measuring them
    # would mean mapping a full-size --rgb-masks mask to the palette
    original_components: scale.ComponentAreas | None


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
        image_orientation, mask_orientation = _orientation(image, image_label), _orientation(mask, mask_label)
        size, mask_size = _upright_size(image, image_orientation), _upright_size(mask, mask_orientation)
        if mask_size != size:
            _check_alignment(sample.where, size, mask_size, image_orientation, masks)
        elif image_orientation != mask_orientation and image_orientation != 1 and mask.size == image.size:
            _check_frame(sample, mask, mask_label, image_orientation, mask_orientation, masks, max_pixels)
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


def _orientation(image: Image.Image, label: str = "image") -> int:
    """The EXIF Orientation (1 = as stored), read without decoding the pixels. A block that cannot be read
    (PIL then returns no tags, sometimes warning "Corrupt EXIF data"), or a value outside 1-8, keeps the
    stored pixels with an :class:`OrientationWarning` naming ``label``."""
    raw = image.info.get("exif") or b""
    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if image.format == "PNG":  # PIL's PNG getexif() decodes the whole image to find a late eXIf chunk
                exif = Image.Exif()
                if raw:
                    exif.load(raw)
            else:
                exif = image.getexif()
            value = exif.get(0x0112, 1)
            orientation = int(value)
        except (TypeError, ValueError, OSError, SyntaxError, struct_error) as err:
            problem, value, orientation = f"its EXIF block cannot be read ({err or type(err).__name__})", None, 1
    corrupt = [str(w.message) for w in caught if "EXIF" in str(w.message)]
    if problem is None and (corrupt or (len(raw) > len(b"Exif\0\0") + 8 and not len(exif))):
        problem = f"its EXIF block cannot be read ({corrupt[0].strip() if corrupt else 'no tag could be parsed'})"
    if problem is None and not 1 <= orientation <= 8:
        problem = f"EXIF orientation {value!r} is not one of 1-8"
    if problem is not None:
        warnings.warn(f"{label}: {problem}; its pixels are used as stored (orientation 1): check the image is "
                      "upright", OrientationWarning, stacklevel=2)
        return 1
    return orientation


def _check_frame(sample: RawSample, mask: Image.Image, mask_label: str, image_orientation: int,
                 mask_orientation: int, masks: MaskFormat, max_pixels: int | None) -> None:
    """The annotation matches the upright image by size, but would also match the stored pixels: refuse it
    when ``annotation_rgb`` shows it was drawn on the stored pixels, else warn that its frame is unchecked."""
    as_given = as_stored = rgb_ids = None
    if sample.annotation_rgb is not None and not masks.rgb:
        try:
            stored = _class_ids(_single_channel(fileio.load(mask, mask_label, max_pixels), masks), masks)
            as_given = _transposed(stored, mask_orientation)
            as_stored = _transposed(stored, image_orientation)  # drawn on the stored pixels, turned upright
            rgb_label = (f"{sample.where}: annotation_rgb" if isinstance(sample.annotation_rgb, bytes)
                         else str(sample.annotation_rgb))
            rgb = fileio.open_image(sample.annotation_rgb, rgb_label, max_pixels)
            rgb_ids = palette_ids(_transposed(fileio.to_rgb_array(rgb), _orientation(rgb, rgb_label)),
                                  DEFAULT_PALETTE_TOLERANCE, rgb_label, unmatched_background=True)
        except errors.InputError:  # an annotation_rgb that cannot be read cannot decide: warn below
            rgb_ids = None
    if rgb_ids is not None:
        given, stored_frame = _agreement(rgb_ids, as_given), _agreement(rgb_ids, as_stored)
        if stored_frame >= FRAME_AGREEMENT > given:
            raise errors.InputError(
                f"{sample.where}: the image's EXIF orientation {image_orientation} turns its pixels upright, but its "
                f"annotation_rgb equals the annotation turned the same way ({stored_frame:.0%} of pixels, "
                f"{given:.0%} as given): the annotation was drawn on the stored (unrotated) pixels; export the "
                "annotation of the upright image")
        if given >= FRAME_AGREEMENT > stored_frame:
            return  # annotation_rgb agrees with the annotation as given, not with the other reading
    checked = " (its annotation_rgb does not decide it)" if rgb_ids is not None else ""
    warnings.warn(
        f"{sample.where}: the image's EXIF orientation {image_orientation} turns it upright, and its annotation "
        f"({'EXIF orientation ' + str(mask_orientation) if mask_orientation != 1 else 'no EXIF orientation'}) has a "
        f"size that fits both the upright and the stored pixels{checked}: check that it was drawn on the upright "
        "image, else its labels are turned against the pixels", OrientationWarning, stacklevel=3)


def _transposed(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` turned as PIL turns an image of that EXIF orientation (as ImageOps.exif_transpose)."""
    if orientation not in _TRANSPOSE:
        return array
    return np.asarray(Image.fromarray(np.ascontiguousarray(array)).transpose(_TRANSPOSE[orientation]))


def _agreement(a: np.ndarray, b: np.ndarray | None) -> float:
    return float(np.mean(a == b)) if b is not None and a.shape == b.shape else 0.0


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
