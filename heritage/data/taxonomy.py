"""The ARTeFACT label taxonomy: fine classes, the coarse and binary groupings, and the palette.

Class ids and names follow the dataset's own order (ARTeFACT, Ivanova et al., WACV 2025; HF dataset
``danielaivanova/damaged-media``): the ``annotation`` column is a single-channel PNG whose pixel
values are these ids, with 255 for Background (pixels outside the artwork), which is ignored
everywhere (losses, metrics, class weights).

The dataset card documents the columns (id, image, annotation, annotation_rgb, material, content,
type, descriptions) but not the colours of ``annotation_rgb``. The palette below is the one of the
seeds' ARTeFACT download script (a class name -> hex colour table). We always read class ids from
``annotation`` and use the palette only to render masks and to round-trip RGB renderings;
:func:`palette_from_pairs` recovers the colours actually used in a real export so they can be
checked against this table.

Coarse groups are the hierarchy POC-5.5 trains on. The seeds grouped ids by number ranges
(e.g. Fold with Cracks as "colour" damage); we group by the physical nature of the damage, which is
what a conservator reads off a map. Clean and Background are ignored by the coarse head: it only
says *which kind* of damage a damaged pixel is, the binary head says *whether* it is damaged.
"""

from __future__ import annotations

import numpy as np

from heritage import errors

IGNORE_INDEX = 255

CLASS_NAMES: tuple[str, ...] = (
    "Clean",
    "Material loss",
    "Peel",
    "Dust",
    "Scratch",
    "Hair",
    "Dirt",
    "Fold",
    "Writing",
    "Cracks",
    "Staining",
    "Stamp",
    "Sticker",
    "Puncture",
    "Burn marks",
    "Lightleak",
)
NUM_CLASSES = len(CLASS_NAMES)
# Damage a few pixels wide, which a letterbox shrinks below a pixel (RQ4 and bench/scale_check.py).
THIN_CLASSES: tuple[str, ...] = ("Dust", "Scratch", "Hair", "Cracks")
BACKGROUND_NAME = "Background"
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
VALID_MASK_VALUES: frozenset[int] = frozenset(range(NUM_CLASSES)) | {IGNORE_INDEX}

# Colour of each fine class and of Background in rendered masks, as in the seeds' download script.
PALETTE_HEX: dict[str, str] = {
    "Clean": "#000000",
    "Material loss": "#1CE6FF",
    "Peel": "#FF34FF",
    "Dust": "#FF4A46",
    "Scratch": "#008941",
    "Hair": "#006FA6",
    "Dirt": "#A30059",
    "Fold": "#FFA500",
    "Writing": "#7A4900",
    "Cracks": "#0000A6",
    "Staining": "#63FFAC",
    "Stamp": "#004D43",
    "Sticker": "#8FB0FF",
    "Puncture": "#997D87",
    "Burn marks": "#809693",
    "Lightleak": "#F6FF1B",
    "Background": "#5A0007",
}


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``"#1CE6FF"`` -> ``(28, 230, 255)``."""
    if not (len(colour) == 7 and colour[0] == "#"):
        raise ValueError(f"expected a colour as #RRGGBB, got {colour!r}")
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


PALETTE: tuple[tuple[int, int, int], ...] = tuple(hex_to_rgb(PALETTE_HEX[name]) for name in CLASS_NAMES)
BACKGROUND_RGB: tuple[int, int, int] = hex_to_rgb(PALETTE_HEX[BACKGROUND_NAME])

COARSE_NAMES: tuple[str, ...] = (
    "Substrate loss",
    "Mechanical",
    "Deposits and additions",
    "Chromatic alteration",
)
COARSE_OF_FINE: dict[str, str] = {
    "Material loss": "Substrate loss",
    "Peel": "Substrate loss",
    "Puncture": "Substrate loss",
    "Burn marks": "Substrate loss",
    "Scratch": "Mechanical",
    "Fold": "Mechanical",
    "Cracks": "Mechanical",
    "Dust": "Deposits and additions",
    "Hair": "Deposits and additions",
    "Dirt": "Deposits and additions",
    "Writing": "Deposits and additions",
    "Stamp": "Deposits and additions",
    "Sticker": "Deposits and additions",
    "Staining": "Chromatic alteration",
    "Lightleak": "Chromatic alteration",
}
BINARY_NAMES: tuple[str, ...] = ("Clean", "Damage")


def _lookup(values: dict[int, int]) -> np.ndarray:
    """A 256-entry table mapping every uint8 value; unmapped values go to IGNORE_INDEX."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in values.items():
        table[src] = dst
    return table


FINE_TO_BINARY = _lookup({i: int(i != CLASS_IDS["Clean"]) for i in range(NUM_CLASSES)})
FINE_TO_COARSE = _lookup(
    {CLASS_IDS[fine]: COARSE_NAMES.index(coarse) for fine, coarse in COARSE_OF_FINE.items()}
)


def check_mask_values(mask: np.ndarray, source: str) -> None:
    """Raise ValueError naming ``source`` when ``mask`` holds values outside {0..15, 255}."""
    values = np.unique(mask)
    bad = [int(v) for v in values if int(v) not in VALID_MASK_VALUES]
    if bad:
        raise errors.InputError(
            f"{source}: mask values {bad[:10]} are not ARTeFACT class ids "
            f"(expected 0..{NUM_CLASSES - 1} or {IGNORE_INDEX} for Background)"
        )


def palette_array() -> np.ndarray:
    """(256, 3) uint8 colour table: class ids to PALETTE, 255 to BACKGROUND_RGB, others black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:NUM_CLASSES] = np.asarray(PALETTE, dtype=np.uint8)
    table[IGNORE_INDEX] = BACKGROUND_RGB
    return table


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """Render an (H, W) id mask as an (H, W, 3) uint8 image in the ARTeFACT palette."""
    return palette_array()[mask]


def rgb_to_mask(rgb: np.ndarray, source: str = "annotation_rgb") -> np.ndarray:
    """Invert :func:`mask_to_rgb`; a colour that is not in the palette is an error naming ``source``."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise errors.InputError(f"{source}: expected an RGB image, got shape {rgb.shape}")
    packed = _pack(rgb[..., :3])
    colours = {_pack_one(c): i for i, c in enumerate(PALETTE)}
    colours[_pack_one(BACKGROUND_RGB)] = IGNORE_INDEX
    keys = np.array(sorted(colours), dtype=np.int64)
    ids = np.array([colours[k] for k in keys], dtype=np.uint8)
    pos = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    unknown = keys[pos] != packed
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        raise errors.InputError(f"{source}: colour {tuple(int(v) for v in rgb[y, x, :3])} at (x={x}, y={y}) "
                         "is not in the ARTeFACT palette")
    return ids[pos]


def palette_from_pairs(mask: np.ndarray, rgb: np.ndarray) -> dict[int, tuple[int, int, int]]:
    """The colour used for each class id in a real (annotation, annotation_rgb) pair.

    Raises ValueError when one id is drawn in several colours, which would mean the two
    columns disagree.
    """
    found: dict[int, tuple[int, int, int]] = {}
    for class_id in np.unique(mask):
        colours = np.unique(rgb[mask == class_id][:, :3], axis=0)
        if len(colours) != 1:
            raise errors.InputError(f"class id {int(class_id)} is drawn in {len(colours)} colours")
        found[int(class_id)] = tuple(int(v) for v in colours[0])
    return found


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _pack_one(colour: tuple[int, int, int]) -> int:
    return (colour[0] << 16) | (colour[1] << 8) | colour[2]
