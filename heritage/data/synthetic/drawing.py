"""Drawing primitives shared by the content, material and damage painters.

Smooth noise, random blobs of a given area, polylines rasterised thick or hairline, jittered Voronoi
cells: the building blocks every other module of the package paints with, kept apart so that
no painter depends on another painter's module for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np


def _noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 1,
           stretch: float = 1.0) -> np.ndarray:
    """Smooth fractal noise, zero mean and unit std; ``cell`` is the feature size in pixels,
    ``stretch`` elongates features vertically (wood grain, fibres)."""
    total = np.zeros((h, w), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        cx = max(cell / 2**octave, 1.0)
        cy = max(cx * stretch, 1.0)
        gh, gw = int(h / cy) + 3, int(w / cx) + 3
        grid = rng.standard_normal((gh, gw), dtype=np.float32)
        up = cv2.resize(grid, (int(gw * cx), int(gh * cy)), interpolation=cv2.INTER_CUBIC)
        oy, ox = int(rng.integers(0, int(cy) + 1)), int(rng.integers(0, int(cx) + 1))
        total += amplitude * up[oy:oy + h, ox:ox + w]
        amplitude *= 0.5
    total -= total.mean()
    return total / (total.std() + 1e-6)


def _lum(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], np.float32)


@lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column coordinates (float32, read-only: shared between calls)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _tone(grey: np.ndarray, dark: Sequence[float], light: Sequence[float]) -> np.ndarray:
    """Map a [0, 1] grey image onto the ramp dark -> light (sepia, cyanotype, ...)."""
    dark_a, light_a = np.asarray(dark, np.float32), np.asarray(light, np.float32)
    return dark_a + grey[..., None] * (light_a - dark_a)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0.3 else image


def _blob_field(rng: np.random.Generator, allowed: np.ndarray, area: float, spread: float,
                cell: float, centre: tuple[float, float] | None = None) -> np.ndarray:
    """Noise minus a radial falloff around ``centre``: high where a blob of ``area`` should be."""
    h, w = allowed.shape
    if centre is None:
        centre = _random_point(rng, allowed)
    yy, xx = _grid(h, w)
    radius = max(math.sqrt(area * h * w / math.pi), 2.0) * spread
    falloff = np.hypot(yy - centre[0], xx - centre[1]) / radius
    field_ = _noise(rng, h, w, cell, octaves=3) - 2.5 * falloff
    field_[~allowed] = -np.inf
    return field_


def _top_pixels(field_: np.ndarray, area: float) -> np.ndarray:
    """The ``area`` fraction of pixels where ``field_`` is highest (quantile threshold)."""
    count = int(round(area * field_.size))
    if count <= 0:
        return np.zeros(field_.shape, bool)
    threshold = np.partition(field_.ravel(), -count)[-count]
    return (field_ >= threshold) & np.isfinite(field_)


def _blob(rng: np.random.Generator, allowed: np.ndarray, area: float, spread: float,
          cell: float, centre: tuple[float, float] | None = None) -> np.ndarray:
    """An irregular region of about ``area`` (fraction of the image) around ``centre``:
    ragged edges, sometimes satellite islands, always the requested size."""
    return _top_pixels(_blob_field(rng, allowed, area, spread, cell, centre), area)


def _random_point(rng: np.random.Generator, allowed: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(allowed)
    i = int(rng.integers(len(ys)))
    return float(ys[i]), float(xs[i])


def _lines_mask(shape: tuple[int, int], polylines: list[np.ndarray], thickness: int) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    curves = [np.round(p).astype(np.int32).reshape(-1, 1, 2) for p in polylines if len(p) > 1]
    if curves:
        cv2.polylines(canvas, curves, False, 1, thickness=max(1, thickness), lineType=cv2.LINE_8)
    return canvas.astype(bool)


def _thin_lines(shape: tuple[int, int], polylines: list[np.ndarray], width: int) -> np.ndarray:
    """Polylines exactly ``width`` px wide (1 px lines dilated by a width x width square); cv2's own
    thickness only gives odd widths from 3 px up."""
    lines = _lines_mask(shape, polylines, 1)
    if width <= 1:
        return lines
    return cv2.dilate(lines.astype(np.uint8), np.ones((width, width), np.uint8)).astype(bool)


def _voronoi(rng: np.random.Generator, h: int, w: int, spacing: float) -> np.ndarray:
    """Cell labels of a jittered-grid Voronoi diagram with wavy (noise-warped) edges.

    Each pixel takes the nearest seed among the 3x3 grid cells around it, which is the exact
    nearest seed for this jitter and far cheaper than a k-d tree query.
    """
    rows, cols = int(h / spacing) + 3, int(w / spacing) + 3
    centres = np.stack(np.mgrid[-1:rows - 1, -1:cols - 1], -1) + 0.5
    seeds = ((centres + rng.uniform(-0.4, 0.4, (rows, cols, 2))) * spacing).astype(np.float32)
    yy, xx = _grid(h, w)
    warp = 0.25 * spacing
    qy = yy + warp * _noise(rng, h, w, spacing)
    qx = xx + warp * _noise(rng, h, w, spacing)
    cy = np.clip(np.floor(qy / spacing).astype(np.int64) + 1, 1, rows - 2)
    cx = np.clip(np.floor(qx / spacing).astype(np.int64) + 1, 1, cols - 2)
    best = np.full((h, w), np.inf, np.float32)
    labels = np.zeros((h, w), np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ny, nx = cy + dy, cx + dx
            distance = (qy - seeds[ny, nx, 0]) ** 2 + (qx - seeds[ny, nx, 1]) ** 2
            closer = distance < best
            best[closer] = distance[closer]
            labels[closer] = (ny * cols + nx)[closer]
    return labels


def _boundaries(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    return edge
