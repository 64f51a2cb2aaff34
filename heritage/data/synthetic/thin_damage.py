"""Thin damage painters: dust, scratches, hairs and cracks.

These classes are a few pixels wide and have the sizes measured on real scans, scaled from a 512 px
image to the render size; they are kept together because they share that sizing rule. Dust, hairs and
film scratches lie on the film (or the scanner glass) and have the look they have in real scans: sharp,
high-contrast marks, bright on scanned negatives (``canvas.negative``: what blocked the light comes out
white in the positive) and dark on slides, prints and artworks; film scratches run along the strip.
"""

from __future__ import annotations

import math

import numpy as np

from heritage.data.synthetic.canvas import _Canvas, _contrasting, _recolour, _shift_tone
from heritage.data.synthetic.drawing import _blob, _boundaries, _noise, _random_point, _thin_lines, _voronoi

# Dust speck sizes in pixels at 512 px and how often each occurs: real specks are mostly 1-2 px and
# 79-88 % are <= 4 px (measured on real scans); a speck is its centre plus distinct 8-neighbours, so it is one
# irregular 8-connected cluster within 3x3 px, never a round dot.
_SPECK_PIXELS = np.array([1, 2, 3, 4, 5, 6])
_SPECK_SHARES = np.array([0.35, 0.25, 0.15, 0.1, 0.08, 0.07])
_NEIGHBOURS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])


def _dust(canvas: _Canvas) -> np.ndarray:
    """Dust: dozens to hundreds of sharp irregular 1-3 px specks, bright on negatives, dark otherwise.

    Sizes are for 512 px; smaller renders shrink specks (to 1 px at least) and draw more of them,
    so the pixel share stays that of 512 px.
    """
    rng, (h, w), area = canvas.rng, canvas.shape, canvas.scale ** 2
    pixels = np.clip(np.round(_SPECK_PIXELS * area), 1, 1 + len(_NEIGHBOURS)).astype(int)
    specks_at_512 = math.exp(rng.uniform(math.log(30), math.log(250))) * area
    count = max(1, round(specks_at_512 * (_SPECK_SHARES @ _SPECK_PIXELS) / (_SPECK_SHARES @ pixels)))
    sizes = pixels[rng.choice(len(_SPECK_PIXELS), count, p=_SPECK_SHARES)]
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    order = rng.random((count, len(_NEIGHBOURS))).argsort(axis=1)  # a random neighbour order per speck
    grown = np.arange(len(_NEIGHBOURS))[None, :] < (sizes - 1)[:, None]
    speck_y = np.concatenate([ys, (ys[:, None] + _NEIGHBOURS[order, 0])[grown]])
    speck_x = np.concatenate([xs, (xs[:, None] + _NEIGHBOURS[order, 1])[grown]])
    # opaque specks: most come out near white (negatives) or near black, some fainter (out of focus, thin)
    contrast = rng.uniform(0.4, 0.8) * rng.uniform(0.6, 1.25, count)
    speck_contrast = np.concatenate([contrast, np.repeat(contrast, sizes - 1)])
    inside = (speck_y >= 0) & (speck_y < h) & (speck_x >= 0) & (speck_x < w)
    shift = np.zeros((h, w), np.float32)
    shift[speck_y[inside], speck_x[inside]] = speck_contrast[inside]
    mask = (shift > 0) & canvas.artwork
    _shift_tone(canvas, mask, shift[mask], bright=canvas.negative)
    return mask


def _scratch(canvas: _Canvas) -> np.ndarray:
    """Scratches: long near-straight 1-3 px lines; on film, one or two hairlines along the strip (the
    frame's long side, the transport direction) with the polarity of dust, elsewhere in any direction."""
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    diagonal = math.hypot(h, w)
    lines = []
    film = canvas.material == "Film emulsion"
    for _ in range(int(rng.integers(1, 3 if film else 7))):  # a frame shows one or two
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        if film:  # transport scratches: parallel to the strip, over most of the frame
            angle = (0.0 if w >= h else math.pi / 2) + rng.normal(0, 0.01)
            length = rng.uniform(0.5, 1.2) * max(h, w)
        else:
            angle = rng.uniform(0, math.pi)
            length = rng.uniform(0.15, 0.8) * diagonal
        t = np.linspace(-0.5, 0.5, 12) * length
        bend = np.cumsum(rng.normal(0, (0.001 if film else 0.004) * length, 12))
        points = np.stack([x0 + t * math.cos(angle) - bend * math.sin(angle),
                           y0 + t * math.sin(angle) + bend * math.cos(angle)], 1)
        lines.append(points)
    # 1-3 px wide at 512 px (hairline in the emulsion of a film frame), 1 px in small renders
    width = 1 if film else int(rng.choice([1, 1, 1, 2, 2, 3]))
    mask = _thin_lines((h, w), lines, max(1, round(width * scale))) & canvas.artwork
    if film:
        _shift_tone(canvas, mask, rng.uniform(0.35, 0.7), bright=canvas.negative)
    else:
        _recolour(canvas, mask, _contrasting(canvas, mask, 0.6), rng.uniform(0.7, 0.9))
    return mask


def _hair(canvas: _Canvas) -> np.ndarray:
    """Hairs and fibres: smooth curved 1-3 px strokes (a curvature that changes slowly along the hair, so
    arcs, S-bends and the odd loop), sharp and high-contrast with the polarity of dust."""
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    curves = []
    for _ in range(int(rng.integers(1, 4))):
        steps = int(rng.uniform(60, 220) * scale) + 10  # length in px, one px a step
        along = np.arange(steps, dtype=np.float64)
        curvature = sum(rng.uniform(-0.03, 0.03) / max(scale, 0.25)
                        * np.sin(2 * math.pi * along / (rng.uniform(40, 200) * scale + 10) + rng.uniform(0, 2 * math.pi))
                        for _ in range(2))
        turn = np.cumsum(curvature) + rng.uniform(0, 2 * math.pi)
        y0, x0 = _random_point(rng, canvas.artwork)
        curves.append(np.stack([x0 + np.cumsum(np.cos(turn)), y0 + np.cumsum(np.sin(turn))], 1))
    width = int(rng.choice([1, 1, 2, 2, 3]))  # a fibre 1-3 px wide at 512 px
    mask = _thin_lines((h, w), curves, max(1, round(width * scale))) & canvas.artwork
    _shift_tone(canvas, mask, rng.uniform(0.5, 0.85), bright=canvas.negative)
    return mask


def _cracks(canvas: _Canvas) -> np.ndarray:
    """Hairline cracks at 512 px: a craquelure network of 1 px cell edges, or 1-2 px branching lines."""
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    network = canvas.material in ("Canvas", "Wood", "Ceramic", "Parchment") or rng.random() < 0.3
    if network:  # craquelure: polygonal network of fine cracks over part of the surface
        region = _blob(rng, canvas.artwork, rng.uniform(0.15, 0.7), 1.1, 60 * scale + 4)
        labels = _voronoi(rng, h, w, rng.uniform(10, 24) * scale + 3)
        lines = _boundaries(labels) & (_noise(rng, h, w, 12 * scale + 2) > -0.7)
        mask = lines & region
    else:  # a few long branching cracks (plaster, glass, panels)
        paths: list[np.ndarray] = []
        for _ in range(int(rng.integers(1, 4))):
            y0, x0 = _random_point(rng, canvas.artwork)
            length = rng.uniform(0.3, 0.9) * max(h, w)
            _branch(rng, paths, (x0, y0), rng.uniform(0, 2 * math.pi), length, 0, scale)
        mask = _thin_lines((h, w), paths, max(1, round(rng.choice([1, 2]) * scale)))  # hairline at 512 px
    mask &= canvas.artwork
    _recolour(canvas, mask, (0.08, 0.06, 0.05), rng.uniform(0.6, 0.85))
    return mask


def _branch(rng: np.random.Generator, paths: list[np.ndarray], start: tuple[float, float], heading: float,
            length: float, depth: int, scale: float) -> None:
    """A jagged random walk from ``start`` (x, y) that spawns shorter side branches."""
    x, y = start
    step = 3.0 * scale + 1
    steps = max(2, int(length / step))
    # slow drift plus step-to-step jitter: jagged but going somewhere
    headings = heading + np.cumsum(rng.normal(0, 0.06, steps)) + rng.normal(0, 0.45, steps)
    xs = x + np.cumsum(np.cos(headings) * step)
    ys = y + np.cumsum(np.sin(headings) * step)
    paths.append(np.stack([np.r_[x, xs], np.r_[y, ys]], 1))
    if depth >= 3:
        return
    for i in np.nonzero(rng.random(steps) < 0.04)[0]:
        side = rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)
        child = length * rng.uniform(0.2, 0.5)
        _branch(rng, paths, (xs[i], ys[i]), headings[i] + side, child, depth + 1, scale)
