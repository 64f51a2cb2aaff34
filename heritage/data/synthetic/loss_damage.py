"""Loss damage painters: material loss, peeling, punctures and burn marks.

Damage that removes or destroys part of the layer or support, showing what lies beneath (the
backing, the ground, a through-hole, charred material).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from heritage.data.synthetic.canvas import _Canvas, _recolour
from heritage.data.synthetic.drawing import _blob, _blob_field, _noise, _random_point, _voronoi


def _material_loss(canvas: _Canvas) -> np.ndarray:
    rng, (h, w) = canvas.rng, canvas.shape
    area = math.exp(rng.uniform(math.log(0.025), math.log(0.3)))
    if canvas.tiles is not None:  # mosaics lose whole tesserae
        region = _blob(rng, canvas.artwork, area, 1.2, 40 * canvas.scale + 4)
        lost = np.unique(canvas.tiles[region & (canvas.tiles >= 0)])
        mask = np.isin(canvas.tiles, lost) | (region & (canvas.tiles < 0))
    else:
        mask = np.zeros((h, w), bool)
        pieces = int(rng.integers(1, 4))
        for _ in range(pieces):
            centre = None
            if rng.random() < 0.5:  # losses often start at an edge or corner
                centre = (float(rng.choice([0, h - 1])), rng.uniform(0, w)) if rng.random() < 0.5 \
                    else (rng.uniform(0, h), float(rng.choice([0, w - 1])))
            mask |= _blob(rng, canvas.artwork, area / pieces, 1.0, 25 * canvas.scale + 3, centre)
    mask &= canvas.artwork
    canvas.image[mask] = canvas.backing()[mask]
    # a thin shadow/broken edge where the remaining layer stands above the hole
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, round(canvas.scale)))
    rim = mask & ~inner.astype(bool)
    canvas.image[rim] *= 0.6
    return mask


def _peel(canvas: _Canvas) -> np.ndarray:
    """Flaking: polygonal flakes (cells of a crack network) gone, showing the lighter ground;
    the paint islands left around them cast a thin shadow."""
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    area = math.exp(rng.uniform(math.log(0.05), math.log(0.45)))
    field_ = _blob_field(rng, canvas.artwork, area, 1.2, 50 * scale + 4)
    flakes = _voronoi(rng, h, w, rng.uniform(5, 13) * scale + 2).ravel()
    counts = np.bincount(flakes)
    finite = np.where(np.isfinite(field_), field_, -50.0).ravel()
    score = np.bincount(flakes, finite) / np.maximum(counts, 1) + 0.7 * rng.standard_normal(len(counts))
    order = np.argsort(-score)
    chosen = order[: int(np.searchsorted(np.cumsum(counts[order]), area * h * w)) + 1]
    lost = np.zeros(len(counts), bool)
    lost[chosen] = True
    mask = lost[flakes].reshape(h, w) & canvas.artwork
    texture = 1 + 0.05 * _noise(rng, h, w, 2 * scale + 1)
    _recolour(canvas, mask, canvas.ground * texture[..., None], 0.85)
    shift = max(1, round(1.5 * scale))
    covered = np.zeros_like(mask)  # flake pixels with a flake also up-left of them are lit
    covered[shift:, shift:] = mask[:-shift, :-shift]
    shadow = mask & ~covered
    canvas.image[shadow] *= 0.5
    return mask


def _puncture(canvas: _Canvas) -> np.ndarray:
    """Small holes: dark through-hole, pushed-in torn rim."""
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    count = int(rng.integers(2, 14))
    pattern = rng.random()
    if pattern < 0.3:  # a row of binding/sewing holes
        y0, x0 = _random_point(rng, canvas.artwork)
        step = rng.uniform(10, 30) * scale + 2
        vertical = rng.random() < 0.5
        points = [(y0 + i * step * vertical, x0 + i * step * (not vertical)) for i in range(count)]
    elif pattern < 0.6:  # tack holes near the corners
        inset = rng.uniform(0.02, 0.06) * min(h, w)
        points = [(inset + rng.uniform(0, 4), inset + rng.uniform(0, 4)) if i % 4 == 0 else
                  (inset, w - inset) if i % 4 == 1 else (h - inset, inset) if i % 4 == 2 else
                  (h - inset, w - inset) for i in range(min(count, 4))]
    else:
        points = [_random_point(rng, canvas.artwork) for _ in range(count)]
    holes = np.zeros((h, w), np.uint8)
    cores = np.zeros((h, w), np.uint8)
    for y, x in points:
        radius = rng.uniform(2.5, 7) * scale + 0.5
        cv2.circle(holes, (int(x), int(y)), max(1, int(round(radius))), 1, -1)
        cv2.circle(cores, (int(x), int(y)), max(0, int(round(radius * 0.6))), 1, -1)
    mask = holes.astype(bool) & canvas.artwork
    core = cores.astype(bool) & mask
    _recolour(canvas, mask & ~core, canvas.image * 0.5 + 0.3, 1.0)
    _recolour(canvas, core, (0.04, 0.035, 0.03), 0.95)
    return mask


def _burn(canvas: _Canvas) -> np.ndarray:
    """Scorch: charred black core fading to a brown singed edge."""
    rng, (h, w) = canvas.rng, canvas.shape
    area = math.exp(rng.uniform(math.log(0.0006), math.log(0.004)))
    mask = _blob(rng, canvas.artwork, area, 0.8, math.sqrt(area * h * w) * 0.6 + 1)
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    char = np.clip(depth / (depth.max() + 1e-6) * 1.6, 0, 1)
    singed, charred = np.array((0.42, 0.24, 0.1), np.float32), np.array((0.05, 0.035, 0.03), np.float32)
    scorched = singed + (charred - singed) * char[..., None]
    _recolour(canvas, mask, scorched, 0.55 + 0.4 * char)
    return mask
