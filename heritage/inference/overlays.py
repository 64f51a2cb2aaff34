"""Damage overlays and their legend: the one home of how a label map is drawn over a scan.

Damage classes are blended in the ARTeFACT palette at :data:`ALPHA`; Clean and Background stay
untinted. Light colours (Dust, Lightleak, Staining, Sticker, ...) vanish on bright scans, so every
damage region gets a dark outline (:data:`OUTLINE_RGB`): a pixel is drawn dark when a neighbour
has a higher damage id than its own (Clean and Background count as 0), i.e. a rim just outside
each region and one line between two touching damage classes. Legends use the same colours, with
a dark edge around each swatch and Clean (and Background) listed as "untinted", not as a swatch.
``heritage.inference.damage_report`` (damage maps), ``heritage.report`` (dataset examples) and the notebooks use it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from heritage import errors
from heritage.data import taxonomy

ALPHA = 0.5  # opacity of damage colours over the scan
OUTLINE_RGB = (24, 24, 24)
OUTLINE_HEX = "#181818"
ROW_CHUNK = 256  # rows at a time: uint16 temporaries stay small on 100 MP scans
DISPLAY_MIN_WIDTH = 512  # small scans are enlarged (nearest neighbour) to at least this for display


def damage_ids(labels: np.ndarray) -> np.ndarray:
    """Labels with Clean and Background as 0, damage classes as their ids (uint8)."""
    untinted = (labels == taxonomy.CLASS_IDS["Clean"]) | (labels == taxonomy.IGNORE_INDEX)
    return np.where(untinted, np.uint8(0), labels).astype(np.uint8)


def outline_mask(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool: pixels within ``width`` of a region of a higher damage id (see the module docstring)."""
    import cv2

    if width < 1:
        raise errors.InputError(f"outline width {width}: must be at least 1 pixel")
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    out = np.empty(labels.shape, dtype=bool)
    for y0 in range(0, labels.shape[0], ROW_CHUNK):  # with a halo of `width` rows on both sides
        top, bottom = max(0, y0 - width), min(labels.shape[0], y0 + ROW_CHUNK + width)
        ids = damage_ids(labels[top:bottom])
        near = cv2.dilate(ids, kernel, borderType=cv2.BORDER_REPLICATE) > ids
        out[y0:y0 + ROW_CHUNK] = near[y0 - top:y0 - top + min(ROW_CHUNK, labels.shape[0] - y0)]
    return out


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = ALPHA, outline: int = 1) -> np.ndarray:
    """The scan with damage blended in the palette, Clean and Background untinted, regions outlined.

    ``outline`` is the rim's width in pixels (0: none).
    """
    if rgb.shape[:2] != labels.shape:
        raise errors.InputError(f"overlay: image {rgb.shape[:2]} and label map {labels.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise errors.InputError(f"overlay: alpha {alpha} must be in [0, 1]")
    out = rgb.copy()
    weight = round(alpha * 256)
    for y0 in range(0, labels.shape[0], ROW_CHUNK):
        rows = slice(y0, y0 + ROW_CHUNK)
        chunk_labels = labels[rows]
        damaged = (chunk_labels != taxonomy.CLASS_IDS["Clean"]) & (chunk_labels != taxonomy.IGNORE_INDEX)
        colours = taxonomy.mask_to_rgb(chunk_labels[damaged]).astype(np.uint16)
        pixels = out[rows][damaged].astype(np.uint16)
        out[rows][damaged] = ((pixels * (256 - weight) + colours * weight) >> 8).astype(np.uint8)
    if outline:
        rim = outline_mask(labels, outline)
        for y0 in range(0, labels.shape[0], ROW_CHUNK):
            out[y0:y0 + ROW_CHUNK][rim[y0:y0 + ROW_CHUNK]] = OUTLINE_RGB
    return out


def display_factor(width: int, min_width: int = DISPLAY_MIN_WIDTH) -> int:
    """Integer enlargement that makes a ``width``-pixel scan at least ``min_width`` wide (1 if it is)."""
    return max(1, -(-min_width // max(1, width)))


def enlarge(picture: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (pixels stay crisp, labels unmixed)."""
    return picture if factor == 1 else np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


@dataclass(frozen=True)
class LegendItem:
    class_id: int
    name: str
    colour: tuple[int, int, int] | None  # None: untinted (Clean, Background)

    @property
    def label(self) -> str:
        return f"{self.name} (untinted)" if self.colour is None else self.name


def legend_items(class_ids: Iterable[int]) -> list[LegendItem]:
    """Legend entries for the class ids shown, in id order (Background last)."""
    items = []
    for class_id in sorted({int(c) for c in class_ids}):
        if class_id == taxonomy.IGNORE_INDEX:
            items.append(LegendItem(class_id, taxonomy.BACKGROUND_NAME, None))
        elif class_id == taxonomy.CLASS_IDS["Clean"]:
            items.append(LegendItem(class_id, "Clean", None))
        elif 0 <= class_id < taxonomy.NUM_CLASSES:
            items.append(LegendItem(class_id, taxonomy.CLASS_NAMES[class_id], taxonomy.PALETTE[class_id]))
        else:
            raise errors.InputError(f"legend: {class_id} is not an ARTeFACT class id")
    return items


LEGEND_CSS = (f".legend {{ list-style: none; padding: 0; columns: 4; }}\n"
              f".swatch {{ display: inline-block; width: 1em; height: 1em; margin-right: 0.4em; "
              f"vertical-align: middle; border: 2px solid {OUTLINE_HEX}; }}\n"
              ".swatch.untinted { border: 1px dashed #777; background: transparent; }\n")


def legend_html(class_ids: Iterable[int]) -> str:
    """``<ul class="legend">`` of the classes shown (style: :data:`LEGEND_CSS`)."""
    entries = []
    for item in legend_items(class_ids):
        swatch = ('<span class="swatch untinted"></span>' if item.colour is None else
                  f'<span class="swatch" style="background:rgb{item.colour}"></span>')
        entries.append(f"<li>{swatch}{html.escape(item.label)}</li>")
    return f'<ul class="legend">{"".join(entries) or "<li>no class found</li>"}</ul>'


def legend_handles(class_ids: Iterable[int]) -> list:
    """matplotlib legend handles of the classes shown (dark-edged swatches, untinted ones hollow)."""
    from matplotlib.patches import Patch

    edge = np.asarray(OUTLINE_RGB) / 255
    return [Patch(facecolor="none", edgecolor="grey", linestyle="--", label=item.label) if item.colour is None
            else Patch(facecolor=np.asarray(item.colour) / 255, edgecolor=edge, linewidth=1.5, label=item.label)
            for item in legend_items(class_ids)]
