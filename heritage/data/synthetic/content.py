"""What an artwork depicts: the pictures for the four ARTeFACT content types.

Artistic and photographic depictions, line art, geometric patterns and script, painted as float RGB
(or ink masks) before any material look is applied; the material modules lay them on a support.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from heritage.data.synthetic.drawing import _blur, _grid, _lines_mask, _lum, _noise

_COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
# (not scikit-image's "clock": a motion-blurred close-up, enlarged it reads as smooth grey)
_GREY_PHOTOS = _COLOUR_PHOTOS + ("camera", "coins")
_PALETTES: tuple[tuple[tuple[float, float, float], ...], ...] = (
    ((0.93, 0.91, 0.84), (0.13, 0.22, 0.52), (0.36, 0.52, 0.78)),  # cobalt on white
    ((0.72, 0.33, 0.18), (0.91, 0.80, 0.58), (0.14, 0.11, 0.09), (0.84, 0.60, 0.24)),  # terracotta
    ((0.58, 0.10, 0.10), (0.85, 0.70, 0.30), (0.15, 0.30, 0.20), (0.90, 0.85, 0.70)),  # red/gold/green
    ((0.20, 0.28, 0.48), (0.86, 0.80, 0.68), (0.66, 0.20, 0.18), (0.30, 0.48, 0.30)),
    ((0.10, 0.10, 0.10), (0.90, 0.88, 0.80), (0.58, 0.54, 0.45)),  # black and white marble
    ((0.25, 0.45, 0.45), (0.92, 0.88, 0.75), (0.75, 0.55, 0.20), (0.45, 0.20, 0.30)),
)


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """A photograph shipped with scikit-image, as float32 RGB in [0, 1]."""
    from skimage import data  # imported lazily: only rendering needs it

    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return (image[..., :3].astype(np.float32) / 255.0).copy()


def _photo_crop(rng: np.random.Generator, names: Sequence[str], h: int, w: int) -> np.ndarray:
    source = _photo(names[int(rng.integers(len(names)))])
    sh, sw = source.shape[:2]
    full_h = min(sh, sw * h / w)
    # zoom in at most until the photo would be upsampled ~1.4x (beyond that it is only blur)
    crop_h = full_h * rng.uniform(min(1.0, 0.7 * h / full_h), 1.0)
    crop_w = crop_h * w / h
    y0, x0 = rng.uniform(0, sh - crop_h), rng.uniform(0, sw - crop_w)
    crop = source[int(y0):int(y0 + crop_h), int(x0):int(x0 + crop_w)]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interpolation = cv2.INTER_AREA if crop.shape[1] > w else cv2.INTER_CUBIC
    return np.clip(cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=interpolation), 0, 1)


def _strokes(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Brush-stroke texture: noise smeared along two directions, mixed by region."""
    length = max(3, int(round(rng.uniform(7, 15) * scale)))
    layers = []
    for angle in rng.uniform(0, math.pi, 2):
        kernel = np.zeros((2 * length + 1, 2 * length + 1), np.float32)
        dx, dy = math.cos(angle) * length, math.sin(angle) * length
        cv2.line(kernel, (int(length - dx), int(length - dy)), (int(length + dx), int(length + dy)), 1.0, 1)
        kernel /= kernel.sum()
        smeared = cv2.filter2D(rng.standard_normal((h, w), dtype=np.float32), -1, kernel)
        smeared = _blur(smeared, 0.8 * scale + 0.2)
        layers.append(smeared / (smeared.std() + 1e-6))
    mix = (_noise(rng, h, w, 40 * scale + 4) > 0)
    return np.where(mix, layers[0], layers[1])


def _painterly(rng: np.random.Generator, rgb: np.ndarray, scale: float) -> np.ndarray:
    """Repaint a photograph: simplified colour fields whose edges follow brush strokes."""
    h, w = rgb.shape[:2]
    factor = rng.uniform(3, 6) * max(scale, 0.3)
    small = cv2.resize(rgb, (max(4, int(w / factor)), max(4, int(h / factor))), interpolation=cv2.INTER_AREA)
    small = cv2.bilateralFilter(small, 5, 0.15, 3)
    smooth = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    strokes = _strokes(rng, h, w, scale)
    levels = float(rng.integers(5, 9))
    # posterise after adding the stroke texture: colour boundaries become ragged brush edges
    painted = np.round((smooth + 0.15 / levels * strokes[..., None]) * levels) / levels
    painted = _blur(painted, 0.6 * scale + 0.3) * (1 + rng.uniform(0.03, 0.06) * strokes[..., None])
    palette = rng.random()
    if palette < 0.25:  # old-master tonality: muted, brown-toned
        grey = painted.mean(2, keepdims=True)
        painted = (grey + 0.4 * (painted - grey)) * np.array([1.05, 0.92, 0.7], np.float32)
    elif palette < 0.5:  # repainted in a period palette (luminance mapped onto its colours)
        colours = np.array(sorted(_PALETTES[int(rng.integers(len(_PALETTES)))], key=sum), np.float32)
        lum = _lum(painted)
        stops = np.linspace(0, 1, len(colours))
        mapped = np.stack([np.interp(lum, stops, colours[:, c]) for c in range(3)], -1)
        painted = 0.35 * painted + 0.65 * mapped
    warm = np.array([1.0, 0.96, 0.84], np.float32)  # aged varnish
    return np.clip(painted * (0.75 + 0.25 * warm), 0, 1).astype(np.float32)


def _landscape(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """A painted landscape: sky gradient, layered hills, dark tree masses."""
    yy, xx = _grid(h, w)
    sky_top = np.array(rng.choice([(0.35, 0.5, 0.75), (0.55, 0.62, 0.7), (0.75, 0.6, 0.45)]), np.float32)
    sky_low = np.array((0.92, 0.86, 0.7), np.float32)
    t = (yy / h)[..., None]
    image = sky_top + (sky_low - sky_top) * np.clip(t * 1.8, 0, 1)
    hills = [(0.35, 0.45, 0.35), (0.45, 0.42, 0.25), (0.28, 0.35, 0.2), (0.5, 0.38, 0.22)]
    horizon = rng.uniform(0.35, 0.6)
    for layer in range(int(rng.integers(2, 4))):
        ridge = horizon + 0.12 * layer + 0.06 * _noise(rng, 1, w, 80 * scale + 4, octaves=3)[0]
        below = yy / h > ridge[None, :]
        colour = np.array(hills[int(rng.integers(len(hills)))], np.float32) * rng.uniform(0.8, 1.1)
        shade = 1 + 0.1 * _noise(rng, h, w, 20 * scale + 2, octaves=2)
        image = np.where(below[..., None], colour * shade[..., None], image)
    trees = (_noise(rng, h, w, 25 * scale + 2, octaves=3) > 1.2) & (yy / h > horizon - 0.1)
    image[trees] = image[trees] * 0.45 + np.array((0.05, 0.12, 0.05), np.float32)
    return _painterly(rng, np.clip(image, 0, 1).astype(np.float32), scale)


def _artistic(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    if rng.random() < 0.65:
        return _painterly(rng, _photo_crop(rng, _COLOUR_PHOTOS, h, w), scale)
    return _landscape(rng, h, w, scale)


def _photographic(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """A grey photograph with a soft lens, tonal curve and vignette (toned by the material)."""
    grey = _lum(_photo_crop(rng, _GREY_PHOTOS, h, w))
    # A soft lens, at most ~1 px: above 512 px the source photographs are already enlarged (soft), and a
    # blur growing with the size flattened large renders into grey noise.
    grey = _blur(grey, rng.uniform(0.3, 1.0) * min(scale, 1.0))
    contrast = rng.uniform(4, 8)
    grey = 1 / (1 + np.exp(-contrast * (grey - 0.5)))
    grey = (grey - grey.min()) / (grey.max() - grey.min() + 1e-6)
    yy, xx = _grid(h, w)
    vignette = 1 - 0.35 * (((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) * 2) ** 1.5
    return np.clip(grey * vignette, 0, 1).astype(np.float32)


def _line_art(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Ink coverage [0, 1] of an engraving-like drawing: contours plus hatching in the shadows."""
    grey = _blur(_lum(_photo_crop(rng, _GREY_PHOTOS, h, w)), 1.2 * scale + 0.5)
    edges = cv2.Canny((grey * 255).astype(np.uint8), 30, 80) > 0
    yy, xx = _grid(h, w)
    period = max(3.0, rng.uniform(4, 7) * scale)
    angle = rng.uniform(0, math.pi)
    hatch1 = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0.6
    hatch2 = np.sin((xx * math.cos(angle + 1.2) + yy * math.sin(angle + 1.2)) * 2 * math.pi / period) > 0.6
    ink = edges | (hatch1 & (grey < 0.45)) | (hatch2 & (grey < 0.25))
    return ink.astype(np.float32) * rng.uniform(0.75, 0.95)


def _geometric(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Decorative pattern: rosettes, chequered motifs, concentric bands or plaid stripes."""
    palette = np.array(_PALETTES[int(rng.integers(len(_PALETTES)))], np.float32)
    palette = palette[rng.permutation(len(palette))]
    m = len(palette)
    yy, xx = _grid(h, w)
    wobble = 2.0 * scale + 0.5  # hand-made irregularity
    yy = yy + wobble * _noise(rng, h, w, 30 * scale + 2)
    xx = xx + wobble * _noise(rng, h, w, 30 * scale + 2)
    period = rng.uniform(40, 90) * scale + 6
    kind = int(rng.integers(4))
    if kind == 0:  # rosettes: sum of plane waves in n directions
        directions = int(rng.choice([4, 6, 8]))
        phases = rng.uniform(0, 2 * math.pi, directions)
        wave = sum(np.cos(2 * math.pi / period * (xx * math.cos(a) + yy * math.sin(a)) + p)
                   for a, p in zip(np.arange(directions) * math.pi / directions, phases))
        index = np.digitize(wave, np.quantile(wave, np.linspace(0, 1, m + 1)[1:-1]))
    elif kind == 1:  # chequered tiles with round or diamond motifs
        theta = rng.choice([0.0, math.pi / 4])
        u = (xx * math.cos(theta) + yy * math.sin(theta)) / period
        v = (-xx * math.sin(theta) + yy * math.cos(theta)) / period
        parity = (np.floor(u) + np.floor(v)).astype(np.int64) % 2
        fu, fv = u - np.floor(u) - 0.5, v - np.floor(v) - 0.5
        motif = (np.abs(fu) + np.abs(fv) < 0.3) if rng.random() < 0.5 else (np.hypot(fu, fv) < 0.3)
        index = (parity + 2 * motif) % m
    elif kind == 2:  # concentric bands with petals (plates, rosette windows)
        cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
        r = np.hypot(yy - cy, xx - cx)
        theta = np.arctan2(yy - cy, xx - cx)
        ring = (r / (period * 0.4)).astype(np.int64)
        petals = np.cos(int(rng.integers(6, 16)) * theta) > 0
        index = (ring + (petals & (ring % 2 == 1))) % m
    else:  # plaid stripes
        widths = rng.integers(2, 8, size=8) * max(1.0, 3 * scale)
        edges = np.cumsum(widths)
        sx = np.searchsorted(edges, xx % edges[-1]) % m
        sy = np.searchsorted(edges, yy % edges[-1]) % m
        return (palette[sx] + palette[sy]) / 2
    return palette[index]


def _script(rng: np.random.Generator, h: int, w: int, scale: float, box: tuple[int, int, int, int],
            ) -> np.ndarray:
    """Ink of regular book-hand script (rows of minims) filling ``box`` = (y0, x0, y1, x1)."""
    y0, x0, y1, x1 = box
    pitch = max(4.0, rng.uniform(9, 14) * scale)
    glyph = max(2.0, pitch * 0.45)
    segments = []
    y = y0 + pitch
    while y < y1:
        x = x0 + rng.uniform(0, glyph)
        while x < x1:
            for _ in range(int(rng.integers(2, 7))):  # one word of minims
                if x >= x1:
                    break
                top = y - glyph * (1.6 if rng.random() < 0.1 else 1.0)
                segments.append(np.array([[x, y], [x + glyph * 0.15, top]]))
                x += glyph * 0.55
            x += glyph * rng.uniform(0.9, 1.6)
        y += pitch
    return _lines_mask((h, w), segments, max(1, round(scale * 1.3)))
