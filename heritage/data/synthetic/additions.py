"""Addition damage painters: handwriting, stamps and stickers.

Marks added to the object after it was made, drawn as ink strokes, an inked stamp or a paper label
laid over the picture.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from heritage.data.synthetic.canvas import _Canvas, _recolour
from heritage.data.synthetic.drawing import _lines_mask, _noise, _random_point


def _writing(canvas: _Canvas) -> np.ndarray:
    """Cursive handwriting: one prolate-cycloid cycle per letter (a loop, an arch, an ascender or
    a descender), letters joined into words along a sloping, slanted line."""
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    size = rng.uniform(7, 14) * scale + 2
    y, x = _random_point(rng, canvas.artwork)
    x, y = min(x, 0.55 * w), min(y, h - 3 * size)  # room for the text to run right and down
    slope, slant = rng.normal(0, 0.05), rng.uniform(0.1, 0.45)
    phi = np.linspace(0, 2 * math.pi, 20)
    strokes = []
    for line in range(int(rng.integers(1, 5))):
        cursor = x + rng.uniform(-1, 1) * size
        base = y + line * size * 2.4
        for _ in range(int(rng.integers(1, 4))):
            word = []
            for _ in range(int(rng.integers(2, 8))):
                width = size * rng.uniform(0.07, 0.13)
                loop = width * rng.uniform(0.4, 2.2)  # > width draws a loop, < width an arch
                kind = rng.random()
                height = size * (1.9 if kind < 0.15 else -1.4 if kind < 0.25 else rng.uniform(0.7, 1.1))
                px = cursor + width * phi - loop * np.sin(phi)
                py = base + rng.normal(0, 0.05 * size) - height * 0.5 * (1 - np.cos(phi))
                word.append(np.stack([px + slant * (base - py), py + slope * (px - x)], 1))
                cursor = px[-1]
            strokes.append(np.concatenate(word))
            cursor += size * rng.uniform(0.8, 1.6)
    thickness = 2 if scale > 0.6 and rng.random() < 0.6 else 1
    mask = _lines_mask((h, w), strokes, thickness) & canvas.artwork
    inks = [(0.12, 0.16, 0.5), (0.08, 0.08, 0.1), (0.4, 0.4, 0.42), (0.55, 0.1, 0.1)]
    _recolour(canvas, mask, inks[int(rng.integers(len(inks)))], rng.uniform(0.7, 0.95))
    return mask


def _stamp(canvas: _Canvas) -> np.ndarray:
    """An ink stamp: a tinted footprint with a border, inner ring and text-like marks."""
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    radius = rng.uniform(16, 34) * scale + 3
    cy, cx = _random_point(rng, canvas.artwork)
    foot = np.zeros((h, w), np.uint8)
    marks = np.zeros((h, w), np.uint8)
    line = max(1, round(1.6 * scale))
    if rng.random() < 0.6:  # round stamp: rings and radial letters
        centre = (int(cx), int(cy))
        cv2.circle(foot, centre, int(radius), 1, -1)
        cv2.circle(marks, centre, int(radius) - line, 1, line)
        cv2.circle(marks, centre, int(radius * 0.62), 1, line)
        for angle in np.linspace(0, 2 * math.pi, int(rng.integers(10, 20)), endpoint=False):
            r0, r1 = radius * 0.7, radius * 0.85
            cv2.line(marks, (int(cx + r0 * math.cos(angle)), int(cy + r0 * math.sin(angle))),
                     (int(cx + r1 * math.cos(angle + 0.1)), int(cy + r1 * math.sin(angle + 0.1))), 1, line)
        for row in range(-1, 2):
            cv2.line(marks, (int(cx - radius * 0.35), int(cy + row * radius * 0.2)),
                     (int(cx + radius * 0.35), int(cy + row * radius * 0.2)), 1, line)
    else:  # rectangular stamp: double border and lines of text
        half_w, half_h = radius * 1.3, radius * 0.7
        corners = np.array([[cx - half_w, cy - half_h], [cx + half_w, cy + half_h]]).astype(int)
        cv2.rectangle(foot, tuple(corners[0]), tuple(corners[1]), 1, -1)
        cv2.rectangle(marks, tuple(corners[0]), tuple(corners[1]), 1, line)
        inner = corners + np.array([[1, 1], [-1, -1]]) * (line + 2)
        cv2.rectangle(marks, tuple(inner[0]), tuple(inner[1]), 1, 1)
        for row in np.linspace(-0.4, 0.4, 3):
            x = cx - half_w * 0.75
            while x < cx + half_w * 0.7:
                word = rng.uniform(0.1, 0.3) * half_w
                y = int(cy + row * half_h)
                cv2.line(marks, (int(x), y), (int(x + word), y), 1, line + 1)
                x += word + 0.1 * half_w
    footprint = foot.astype(bool) & canvas.artwork
    inked = marks.astype(bool) & footprint & (_noise(rng, h, w, 3 * scale + 1) > -0.9)  # uneven inking
    ink = np.array(rng.choice([(0.72, 0.12, 0.14), (0.18, 0.24, 0.62), (0.42, 0.18, 0.52)]), np.float32)
    _recolour(canvas, footprint, canvas.image * (0.75 + 0.25 * ink), 1.0)  # faint tint of the pad
    _recolour(canvas, inked, ink, rng.uniform(0.7, 0.9))
    return footprint


def _sticker(canvas: _Canvas) -> np.ndarray:
    """A paper label: flat colour, thin border, a few printed lines."""
    rng, (h, w), scale = canvas.rng, canvas.shape, canvas.scale
    width = rng.uniform(50, 120) * scale + 6
    height = width * rng.uniform(0.4, 0.8)
    cy, cx = _random_point(rng, canvas.artwork)
    box = cv2.boxPoints(((cx, cy), (width, height), rng.normal(0, 5)))
    shape = np.zeros((h, w), np.uint8)
    cv2.fillPoly(shape, [np.round(box).astype(np.int32)], 1)
    mask = shape.astype(bool) & canvas.artwork
    papers = [(0.95, 0.94, 0.9), (0.93, 0.88, 0.7), (0.85, 0.9, 0.95), (0.96, 0.92, 0.55)]
    paper = np.array(papers[int(rng.integers(len(papers)))], np.float32)
    _recolour(canvas, mask, paper * (1 + 0.03 * _noise(rng, h, w, 20 * scale + 2))[..., None], 1.0)
    marks = np.zeros((h, w), np.uint8)
    border = np.round(cv2.boxPoints(((cx, cy), (width * 0.88, height * 0.8), 0))).astype(np.int32)
    if rng.random() < 0.6:
        cv2.polylines(marks, [border], True, 1, max(1, round(scale)))
    for row in range(int(rng.integers(1, 4))):
        y = int(cy - height * 0.2 + row * height * 0.2)
        x_end = cx + width * rng.uniform(0.0, 0.3)
        cv2.line(marks, (int(cx - width * 0.3), y), (int(x_end), y), 1, max(1, round(2 * scale)))
    printed = marks.astype(bool) & mask
    _recolour(canvas, printed, (0.1, 0.1, 0.12), 0.85)
    edge = mask & ~cv2.erode(shape, np.ones((3, 3), np.uint8)).astype(bool)
    canvas.image[edge] *= 0.8
    return mask
