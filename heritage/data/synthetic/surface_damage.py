"""Surface damage painters: dirt, water stains, folds and light leaks.

Changes to the look of the surface that leave the layer in place: deposits, discolouration, the
shading of a crease, fogging where light got in.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from heritage.data.synthetic.canvas import _Canvas, _recolour
from heritage.data.synthetic.drawing import _blob, _grid, _noise, _random_point, _top_pixels


def _dirt(canvas: _Canvas) -> np.ndarray:
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    spots = np.zeros((h, w), np.uint16)
    count = int(rng.integers(10, 60))
    centres = [_random_point(rng, canvas.artwork) for _ in range(int(rng.integers(1, 4)))]
    for i in range(count):
        cy, cx = centres[int(rng.integers(len(centres)))]
        cy, cx = cy + rng.normal(0, 0.08 * h), cx + rng.normal(0, 0.08 * w)
        radius = rng.uniform(1.8, 6.5) * scale + 0.7
        angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
        harmonics = rng.normal(0, [0.25, 0.15, 0.08], (1, 3)) * np.cos(
            np.outer(angles, [1, 2, 5]) + rng.uniform(0, 2 * math.pi, 3))
        radii = radius * np.clip(1 + harmonics.sum(1), 0.3, 2)  # a lumpy, rounded outline
        polygon = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(spots, [np.round(polygon).astype(np.int32)], i + 1)
    mask = (spots > 0) & canvas.artwork
    strength = rng.uniform(0.35, 0.8, count + 1)[spots]
    grime = np.array(rng.choice([(0.22, 0.18, 0.13), (0.3, 0.26, 0.2), (0.12, 0.1, 0.08)]), np.float32)
    _recolour(canvas, mask, grime, strength * (1 + 0.15 * _noise(rng, h, w, 1.5 * scale + 0.5)))
    return mask


def _fold(canvas: _Canvas) -> np.ndarray:
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    yy, xx = _grid(h, w)
    mask = np.zeros((h, w), bool)
    for fold in range(int(rng.integers(1, 3))):
        if fold == 0 and rng.random() < 0.25:  # dog-ear across a corner
            corner_y, corner_x = float(rng.choice([0, h])), float(rng.choice([0, w]))
            normal = np.array([1.0 if corner_y == 0 else -1.0, 1.0 if corner_x == 0 else -1.0]) / math.sqrt(2)
            point = np.array([corner_y, corner_x]) + normal * rng.uniform(0.1, 0.3) * min(h, w)
        else:  # folded in halves or thirds
            horizontal = rng.random() < 0.5
            angle = rng.normal(0, 0.04) + (0.0 if horizontal else math.pi / 2)
            normal = np.array([math.cos(angle), -math.sin(angle)])
            where = rng.choice([1 / 2, 1 / 3, 2 / 3]) + rng.normal(0, 0.02)
            point = np.array([h * where, w / 2]) if horizontal else np.array([h / 2, w * where])
        distance = (yy - point[0]) * normal[0] + (xx - point[1]) * normal[1]
        along = (xx - point[1]) * normal[0] - (yy - point[0]) * normal[1]
        knots = np.linspace(along.min(), along.max(), 64)
        distance = distance + 1.5 * scale * np.interp(along, knots, rng.normal(0, 1, 64).cumsum() / 4)
        half = rng.uniform(3, 9) * scale + 1
        band = (np.abs(distance) <= half) & canvas.artwork & ~mask
        side = distance[band] / half
        light = rng.uniform(0.12, 0.22)
        shading = 1 - np.sign(side) * light * (1 - 0.5 * np.abs(side))  # lit slope, shaded slope
        crease = np.exp(-(distance[band] / (0.8 * scale + 0.4)) ** 2)
        pixels = canvas.image[band] * shading[:, None]
        cracked = 0.25 * (rng.random() < 0.4)  # paint or emulsion broken along the crease
        canvas.image[band] = pixels * (1 - 0.45 * crease[:, None]) + cracked * crease[:, None]
        mask |= band
    return mask


def _staining(canvas: _Canvas) -> np.ndarray:
    """Water stains: soft discolouration, darker tide line at the rim."""
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 3))):
        area = math.exp(rng.uniform(math.log(0.015), math.log(0.13)))
        mask |= _blob(rng, canvas.artwork, area, 0.9, 50 * scale + 4)
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    tide = np.exp(-inside / (rng.uniform(1.5, 4) * scale + 0.7))
    mottling = 0.7 + 0.3 * _noise(rng, h, w, 15 * scale + 2, octaves=2)
    alpha = np.clip(rng.uniform(0.2, 0.4) * mottling + 0.45 * tide, 0.08, 0.9)
    stain = np.array(rng.choice([(0.62, 0.45, 0.22), (0.55, 0.42, 0.3), (0.7, 0.58, 0.3)]), np.float32)
    _recolour(canvas, mask, canvas.image * stain, alpha)
    return mask


def _lightleak(canvas: _Canvas) -> np.ndarray:
    """Fogging where light got in, a smooth warm glow, screen-blended.

    On film a flare at one edge of the frame over 0.4-3 % of it (frames are a few tenths of a percent
    damaged); on plates and prints (printed from a fogged negative) a broad fog from an edge,
    which carries most of the class's pixels as in the reference statistics.
    """
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    yy, xx = _grid(h, w)
    edge = int(rng.integers(4))
    distance = [yy / h, xx / w, 1 - yy / h, 1 - xx / w][edge]  # 0 at the edge the light came from
    warp = 0.08 * _noise(rng, h, w, 120 * scale + 6, octaves=2)
    if canvas.material == "Film emulsion":
        along = [xx / w, yy / h, xx / w, yy / h][edge]
        flare = np.hypot((along - rng.uniform(0.1, 0.9)) / rng.uniform(2, 5), distance) + 0.2 * warp * distance
        share = math.exp(rng.uniform(math.log(0.004), math.log(0.03)))
        mask = _top_pixels(np.where(canvas.artwork, -flare, -np.inf), share)
        reach = float(flare[mask].max()) if mask.any() else 1.0
        glow = 0.2 ** (flare / max(reach, 1e-6))  # 1 at the edge, 0.2 at the flare's rim
    else:
        reach = rng.uniform(0.12, 0.38)
        glow = np.exp(-np.maximum(distance + warp, 0) / reach * 2.5)
        mask = (glow > 0.2) & canvas.artwork
    hot = np.array(rng.choice([(1.0, 0.35, 0.1), (0.95, 0.2, 0.15), (1.0, 0.55, 0.15)]), np.float32)
    warm = np.array((1.0, 0.8, 0.35), np.float32)
    colour = hot + (warm - hot) * np.clip(1 - glow, 0, 1)[..., None]
    strength = np.clip(glow * rng.uniform(0.9, 1.3), 0.2, 1)[..., None] * colour
    screen = 1 - (1 - canvas.image) * (1 - strength)
    _recolour(canvas, mask, screen, 1.0)
    return mask
