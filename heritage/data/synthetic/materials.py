"""What an artwork is made of: the ten materials' supports, grounds and backings.

Each material turns a depicted picture into the object (canvas weave, fresco, mosaic tesserae, film,
glass plate, paper print, manuscript page ...), says what a hole in it shows, and where the object
lies on the scanner backdrop (the Background margin).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from heritage.data.synthetic.content import (
    _COLOUR_PHOTOS, _artistic, _geometric, _line_art, _photo_crop, _photographic, _script,
)
from heritage.data.synthetic.drawing import _blob, _blur, _boundaries, _grid, _noise, _tone, _voronoi

_BACKDROPS = ((0.12, 0.12, 0.13), (0.05, 0.05, 0.05), (0.93, 0.93, 0.92), (0.45, 0.47, 0.5))


def _weave(rng: np.random.Generator, h: int, w: int, period: float, twill: bool) -> np.ndarray:
    """Thread texture in [-0.5, 0.5]: plain weave (canvas) or twill (textiles)."""
    yy, xx = _grid(h, w)
    xx = xx + 0.4 * period * _noise(rng, h, w, 20 * period)
    u, v = xx / period, yy / period
    cell = np.floor(u) + (np.floor(v) if not twill else -np.floor(v))
    over = (cell % (3 if twill else 2)) == 0
    profile = np.where(over, np.sin(math.pi * (u % 1)), np.sin(math.pi * (v % 1)))
    slub = 0.3 * _noise(rng, h, w, period * 6, stretch=4.0)
    return (profile - 0.5 + slub * 0.5).astype(np.float32)


def _wood_grain(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    yy, xx = _grid(h, w)
    distortion = 25 * scale * _noise(rng, h, w, 120 * scale + 4, octaves=2, stretch=3.0)
    rings = np.sin((xx + distortion) * 2 * math.pi / (rng.uniform(10, 22) * scale + 2))
    fibres = _noise(rng, h, w, 1.5 * scale + 1, stretch=12.0)
    return (0.7 * np.sign(rings) * np.abs(rings) ** 0.5 + 0.2 * fibres).astype(np.float32)


def _paper(rng: np.random.Generator, h: int, w: int, scale: float, base: Sequence[float],
           mottle: float) -> np.ndarray:
    colour = np.asarray(base, np.float32) * rng.uniform(0.95, 1.03)
    low = _noise(rng, h, w, 70 * scale + 4, octaves=3)
    fibre = _noise(rng, h, w, 1.2 * scale + 0.8, stretch=3.0)
    yellow = np.array([0.0, 0.02, 0.06], np.float32)
    return np.clip(colour * (1 + mottle * low[..., None] + 0.02 * fibre[..., None])
                   - yellow * np.clip(low, 0, None)[..., None] * mottle * 4, 0, 1)


def _backing(rng: np.random.Generator, material: str, h: int, w: int, scale: float) -> np.ndarray:
    if material == "Canvas":
        linen = np.array((0.62, 0.52, 0.36), np.float32)
        return np.clip(linen * (1 + 0.35 * _weave(rng, h, w, max(2.5, 4 * scale), False))[..., None], 0, 1)
    if material == "Wood":
        return np.clip(np.array((0.66, 0.48, 0.3), np.float32)
                       * (1 + 0.18 * _wood_grain(rng, h, w, scale))[..., None], 0, 1)
    if material in ("Lime plaster", "Tesserae"):  # rough plaster / mortar bed
        colour = np.array((0.72, 0.67, 0.57), np.float32)
        rough = _noise(rng, h, w, 1.5 * scale + 1, octaves=3)
        return np.clip(colour * (1 + 0.1 * rough + 0.05 * _noise(rng, h, w, 30 * scale + 2))[..., None], 0, 1)
    if material == "Ceramic":  # the fired body under the glaze
        colour = np.array(rng.choice([(0.78, 0.5, 0.36), (0.86, 0.82, 0.74)]), np.float32)
        return np.clip(colour * (1 + 0.06 * _noise(rng, h, w, 1.5 * scale + 1, octaves=2))[..., None], 0, 1)
    colour = np.array(_BACKDROPS[int(rng.integers(len(_BACKDROPS)))], np.float32)
    if rng.random() < 0.3:
        colour = np.array((0.78, 0.72, 0.6), np.float32)  # card mount
    return np.clip(colour + 0.015 * _noise(rng, h, w, 1.0)[..., None], 0, 1)


_GROUNDS = {  # colour under the paint layer (gesso, paper base, clear film base ...)
    "Canvas": (0.9, 0.87, 0.78), "Wood": (0.92, 0.9, 0.82), "Lime plaster": (0.88, 0.85, 0.77),
    "Glass": (0.8, 0.84, 0.86), "Film emulsion": (0.86, 0.78, 0.6), "Paper": (0.95, 0.94, 0.9),
    "Parchment": (0.9, 0.84, 0.7), "Ceramic": (0.84, 0.72, 0.62), "Tesserae": (0.75, 0.7, 0.6),
    "Textile": (0.8, 0.75, 0.65),
}


def _render_artwork(rng: np.random.Generator, material: str, content: str, h: int, w: int,
                    scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The undamaged artwork (float RGB) and, for mosaics, its tessera label map."""
    if material == "Parchment":
        page = _paper(rng, h, w, scale, (0.86, 0.77, 0.58), 0.06)
        if content == "Line art":
            ink_colour = np.array((0.25, 0.16, 0.08), np.float32)
            return _apply_ink(page, _line_art(rng, h, w, scale), ink_colour), None
        return _manuscript(rng, page, scale), None
    if material == "Paper":
        page = _paper(rng, h, w, scale, (0.94, 0.92, 0.86), 0.03)
        if content == "Photographic depiction":
            return _photo_print(rng, page, scale), None
        if content == "Line art":
            ink_colour = np.array(rng.choice([(0.08, 0.07, 0.07), (0.3, 0.18, 0.1)]), np.float32)
            return _apply_ink(page, _line_art(rng, h, w, scale), ink_colour), None
        paint = _artistic(rng, h, w, scale) if content == "Artistic depiction" else _geometric(rng, h, w, scale)
        return _inset(rng, page, page * (0.15 + 0.85 * paint), 0.4), None
    if material == "Film emulsion":
        return _film(rng, h, w, scale), None
    if material == "Glass":
        if content == "Photographic depiction":
            return _glass_plate(rng, h, w, scale), None
        return _stained_glass(rng, h, w, scale), None
    if material == "Tesserae":
        return _mosaic(rng, content, h, w, scale)
    paint = _geometric(rng, h, w, scale) if content == "Geometric patterns" else _artistic(rng, h, w, scale)
    return _PAINTED_SUPPORTS[material](rng, paint, scale), None


def _apply_ink(page: np.ndarray, ink: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return page * (1 - ink[..., None]) + colour * ink[..., None]


def _inset(rng: np.random.Generator, page: np.ndarray, picture: np.ndarray, chance: float) -> np.ndarray:
    """Show ``picture`` inside a paper margin (prints, photos with a white border) or full bleed."""
    if rng.random() >= chance:
        return picture
    h, w = page.shape[:2]
    margin = int(rng.uniform(0.04, 0.09) * min(h, w)) + 1
    out = page.copy()
    out[margin:h - margin, margin:w - margin] = picture[margin:h - margin, margin:w - margin]
    return out


def _manuscript(rng: np.random.Generator, page: np.ndarray, scale: float) -> np.ndarray:
    """An illuminated page: a framed miniature, with script blocks around it on most pages."""
    h, w = page.shape[:2]
    out = page.copy()
    frame = max(2, int(4 * scale))
    margin_y, margin_x = max(int(0.08 * h), frame), max(int(0.1 * w), frame)
    miniature_h = int(h * rng.uniform(0.35, 0.8))
    top = margin_y if rng.random() < 0.5 else h - margin_y - miniature_h
    box = (top, margin_x, top + miniature_h, w - margin_x)
    paint = _artistic(rng, box[2] - box[0], box[3] - box[1], scale)
    out[box[0]:box[2], box[1]:box[3]] = page[box[0]:box[2], box[1]:box[3]] * (0.2 + 0.8 * paint)
    gold, red = np.array((0.78, 0.6, 0.25), np.float32), np.array((0.62, 0.14, 0.1), np.float32)
    ring = np.zeros((h, w), bool)
    ring[box[0] - frame:box[2] + frame, box[1] - frame:box[3] + frame] = True
    ring[box[0]:box[2], box[1]:box[3]] = False
    out[ring] = rng.choice([gold, red]) * (1 + 0.08 * rng.standard_normal((int(ring.sum()), 1)))
    text_box = (box[2] + frame * 3, margin_x, h - margin_y, w - margin_x) if top == margin_y else \
        (margin_y, margin_x, box[0] - frame * 3, w - margin_x)
    if text_box[2] - text_box[0] > 10 * scale:
        ink = _script(rng, h, w, scale, text_box).astype(np.float32) * 0.85
        ink_colour = np.array((0.16, 0.1, 0.06), np.float32)
        out = _apply_ink(out, ink, ink_colour)
    return np.clip(out, 0, 1)


def _photo_print(rng: np.random.Generator, page: np.ndarray, scale: float) -> np.ndarray:
    h, w = page.shape[:2]
    grey = _photographic(rng, h, w, scale)
    style = int(rng.integers(3))
    if style == 0:  # sepia albumen print
        print_ = _tone(grey, (0.16, 0.09, 0.05), (0.96, 0.9, 0.76))
    elif style == 1:  # silver gelatin
        print_ = _tone(grey, (0.05, 0.05, 0.05), (0.95, 0.94, 0.92))
    else:  # faded colour print
        colour = _photo_crop(rng, _COLOUR_PHOTOS, h, w)
        print_ = np.clip(0.1 + 0.8 * colour * np.array((1.0, 0.88, 0.9), np.float32), 0, 1)
    return _inset(rng, page, print_, 0.5)


def _film(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    grey = _photographic(rng, h, w, scale)
    if rng.random() < 0.6:
        image = _tone(grey, (0.04, 0.04, 0.05), (0.92, 0.92, 0.9))
    else:  # faded colour transparency with a cast
        colour = _photo_crop(rng, _COLOUR_PHOTOS, h, w)
        cast = np.array(rng.choice([(1.0, 0.85, 0.95), (0.9, 1.0, 1.05), (1.05, 0.95, 0.8)]), np.float32)
        image = np.clip(0.08 + 0.85 * colour * cast, 0, 1)
    grain = _blur(rng.standard_normal((h, w), dtype=np.float32), 0.6)
    return np.clip(image + rng.uniform(0.03, 0.06) * grain[..., None], 0, 1)


def _glass_plate(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    grey = _photographic(rng, h, w, scale)
    image = _tone(grey, (0.05, 0.06, 0.07), (0.9, 0.91, 0.9))
    yy, xx = _grid(h, w)
    edge = np.minimum.reduce([yy, xx, h - 1 - yy, w - 1 - xx]) / min(h, w)
    patchy = np.clip(0.6 + 0.5 * _noise(rng, h, w, 15 * scale + 2, octaves=2), 0, 1)
    silvering = np.exp(-edge / 0.06) * patchy
    sheen = np.array((0.55, 0.6, 0.68), np.float32)
    image = image * (1 - 0.5 * silvering[..., None]) + sheen * 0.5 * silvering[..., None]
    return np.clip(image, 0, 1)


def _stained_glass(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Coloured glass panes (mean colour of a painted scene per Voronoi cell) in dark leading."""
    paint = _artistic(rng, h, w, scale)
    spacing = rng.uniform(25, 45) * scale + 4
    labels = _voronoi(rng, h, w, spacing)
    flat = labels.ravel()
    counts = np.bincount(flat)
    colours = np.stack([np.bincount(flat, paint[..., c].ravel()) / np.maximum(counts, 1) for c in range(3)], 1)
    grey = colours.mean(1, keepdims=True)
    colours = np.clip(grey + 1.8 * (colours - grey), 0.05, 1)  # saturated glass
    image = colours[labels].astype(np.float32)
    streaks = _noise(rng, h, w, 4 * scale + 1, octaves=2, stretch=5.0)
    image *= (1 + 0.08 * streaks)[..., None]
    lead = _boundaries(labels)
    lead = cv2.dilate(lead.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, round(scale))) > 0
    image[lead] = np.array((0.1, 0.1, 0.11), np.float32) * (1 + 0.3 * rng.random())
    return np.clip(image, 0, 1)


def _mosaic(rng: np.random.Generator, content: str, h: int, w: int,
            scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Tesserae in wavy rows (opus vermiculatum), each a flat stone colour, set in grey mortar."""
    design = _geometric(rng, h, w, scale) if content == "Geometric patterns" else _artistic(rng, h, w, scale)
    size = max(3.0, rng.uniform(7, 12) * scale)
    yy, xx = _grid(h, w)
    v = (yy + 0.8 * size * _noise(rng, h, w, 60 * scale + 4)) / size
    row = np.floor(v)
    u = (xx + 0.5 * size * (row % 2) + 0.15 * size * _noise(rng, h, w, size)) / (size * rng.uniform(0.9, 1.2))
    col = np.floor(u)
    tiles = np.unique((row * 4096 + col).astype(np.int64).ravel(), return_inverse=True)[1].reshape(h, w)
    flat = tiles.ravel()
    counts = np.bincount(flat)
    colours = np.stack([np.bincount(flat, design[..., c].ravel()) / counts for c in range(3)], 1)
    colours = np.round(colours * 6) / 6  # a limited set of stones
    colours *= rng.uniform(0.9, 1.1, (len(colours), 1))  # each stone differs a little
    tilt = rng.uniform(-0.08, 0.08, (len(colours), 2))
    shading = 1 + tilt[tiles, 0] * ((u % 1) - 0.5) * 2 + tilt[tiles, 1] * ((v % 1) - 0.5) * 2
    image = colours[tiles].astype(np.float32) * shading[..., None].astype(np.float32)
    gap = min(0.3, max(1.0, 1.3 * scale) / size)
    grout = ((v % 1) < gap) | ((u % 1) < gap)
    mortar = np.array((0.55, 0.52, 0.46), np.float32) * (1 + 0.1 * _noise(rng, h, w, 1.5))[..., None]
    image[grout] = mortar[grout]
    tiles[grout] = -1
    return np.clip(image, 0, 1), tiles


def _canvas(rng: np.random.Generator, paint: np.ndarray, scale: float) -> np.ndarray:
    """Oil on canvas: the plain weave shows through the paint."""
    h, w = paint.shape[:2]
    weave = _weave(rng, h, w, max(2.5, rng.uniform(3, 5) * scale), False)
    return np.clip(paint * (1 + 0.14 * weave)[..., None], 0, 1)


def _fresco(rng: np.random.Generator, paint: np.ndarray, scale: float) -> np.ndarray:
    """Pigment in lime: muted, chalky, lighter, on a rough plaster surface, often framed by bands."""
    h, w = paint.shape[:2]
    grey = paint.mean(2, keepdims=True)
    earth = np.array((0.78, 0.62, 0.45), np.float32)
    muted = 0.55 * (grey + 0.6 * (paint - grey)) + 0.2 * earth + 0.25
    rough = 0.06 * _noise(rng, h, w, 2 * scale + 1, octaves=3) + 0.05 * _noise(rng, h, w, 60 * scale + 4)
    image = muted * (1 + rough)[..., None]
    if rng.random() < 0.5:  # painted border in red ochre
        band = max(3, int(rng.uniform(0.03, 0.06) * min(h, w)))
        red = np.array((0.62, 0.28, 0.2), np.float32) * (1 + rough[..., None])
        frame = np.ones((h, w), bool)
        frame[band:h - band, band:w - band] = False
        image[frame] = red[frame]
    return np.clip(image, 0, 1)


def _textile(rng: np.random.Generator, paint: np.ndarray, scale: float) -> np.ndarray:
    """Woven design: colours sampled per thread crossing, twill texture and fibre fuzz."""
    h, w = paint.shape[:2]
    period = max(2.5, rng.uniform(3, 5) * scale)
    small = cv2.resize(paint, (max(2, int(w / period)), max(2, int(h / period))), interpolation=cv2.INTER_AREA)
    small = np.round(small * 5) / 5  # few dyes
    woven = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    weave = _weave(rng, h, w, period, True)
    fuzz = _noise(rng, h, w, 1.0)
    return np.clip(woven * (0.85 + 0.35 * weave + 0.04 * fuzz)[..., None], 0, 1)


def _glaze(rng: np.random.Generator, paint: np.ndarray, scale: float) -> np.ndarray:
    """Glazed ceramic: colours bleed slightly under a glossy glaze with a soft highlight."""
    h, w = paint.shape[:2]
    image = _blur(paint, 1.2 * scale + 0.4)
    yy, xx = _grid(h, w)
    cy, cx = h * rng.uniform(0.2, 0.5), w * rng.uniform(0.2, 0.8)
    highlight = np.exp(-(((yy - cy) / (0.12 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2))
    pooling = 0.04 * _noise(rng, h, w, 25 * scale + 2, octaves=2)
    image = image * (1 + pooling)[..., None] + 0.35 * highlight[..., None] * (1 - image)
    return np.clip(image, 0, 1)


def _panel(rng: np.random.Generator, paint: np.ndarray, scale: float) -> np.ndarray:
    """Tempera/oil on a wooden panel: the grain shows through the thin paint layer."""
    h, w = paint.shape[:2]
    image = paint * (1 + 0.09 * _wood_grain(rng, h, w, scale))[..., None]
    if rng.random() < 0.4:  # icon-style gilded border
        band = max(3, int(rng.uniform(0.05, 0.1) * min(h, w)))
        leaf = 1 + 0.12 * _noise(rng, h, w, 3 * scale + 1, octaves=2)
        gold = np.array((0.8, 0.63, 0.28), np.float32) * leaf[..., None]
        frame = np.ones((h, w), bool)
        frame[band:h - band, band:w - band] = False
        image[frame] = gold[frame]
    return np.clip(image, 0, 1)


# supports that carry a painted design: the design is rendered first, then laid on the support
_PAINTED_SUPPORTS: dict[str, Callable[[np.random.Generator, np.ndarray, float], np.ndarray]] = {
    "Canvas": _canvas, "Lime plaster": _fresco, "Textile": _textile, "Ceramic": _glaze, "Wood": _panel,
}


def _artwork_region(rng: np.random.Generator, material: str, h: int, w: int,
                    scale: float) -> np.ndarray:
    """Where the object is; outside lies the scanner backdrop (labelled Background, 255)."""
    chance = {"Ceramic": 0.5, "Parchment": 0.25, "Tesserae": 0.3, "Lime plaster": 0.2,
              "Textile": 0.25}.get(material, 0.04)
    region = np.ones((h, w), bool)
    if rng.random() >= chance:
        return region
    yy, xx = _grid(h, w)
    if material == "Ceramic":  # a plate or dish
        cy, cx = h / 2 + rng.uniform(-0.03, 0.03) * h, w / 2 + rng.uniform(-0.03, 0.03) * w
        ry, rx = h * rng.uniform(0.47, 0.56), w * rng.uniform(0.47, 0.56)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if material in ("Tesserae", "Lime plaster"):  # a fragment with a broken outline
        centre = (h / 2, w / 2)
        return _blob(rng, region, rng.uniform(0.72, 0.9), 1.3, 80 * scale + 4, centre)
    margin = rng.uniform(0.02, 0.08, 4) * np.array([h, w, h, w])
    if material in ("Paper", "Parchment", "Textile"):  # torn or frayed sheet edges
        ragged = 3 * scale * _noise(rng, h, w, 6 * scale + 1, octaves=3)
        return ((yy + ragged > margin[0]) & (xx + ragged > margin[1])
                & (yy - ragged < h - margin[2]) & (xx - ragged < w - margin[3]))
    # a rigid object (plate, panel, film frame) laid slightly askew on the scanner
    centre = ((margin[1] + w - margin[3]) / 2, (margin[0] + h - margin[2]) / 2)
    size = (w - margin[1] - margin[3], h - margin[0] - margin[2])
    corners = cv2.boxPoints((centre, size, rng.normal(0, 1.5)))
    outline = np.zeros((h, w), np.uint8)
    cv2.fillPoly(outline, [np.round(corners).astype(np.int32)], 1)
    return outline.astype(bool)
