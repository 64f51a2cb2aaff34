"""The image being damaged, and the recolouring every damage painter uses.

A damage painter changes pixels of ``canvas.image`` inside the artwork and returns exactly the pixels
it changed; the caller labels them. This module holds that shared state and the blends, so that the
painter families do not import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from heritage.data.synthetic.drawing import _lum
from heritage.data.synthetic.materials import _backing


@dataclass
class _Canvas:
    """One image being painted: pixels, labels and what damage painters need to know."""

    rng: np.random.Generator
    material: str
    content: str
    image: np.ndarray  # float32 (H, W, 3) in [0, 1]
    artwork: np.ndarray  # bool (H, W): False on the Background margin
    ground: np.ndarray  # RGB of the layer under the paint/emulsion (seen through peels)
    tiles: np.ndarray | None = None  # tessera label map (mosaics)
    backing_cache: np.ndarray | None = None
    # A scanned negative shown as a positive (glass plates, colour negatives): what sat on it
    # during the scan (dust, hair) comes out bright; on slides, prints and artworks it is dark.
    negative: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]

    @property
    def scale(self) -> float:
        return max(self.shape) / 512.0

    def backing(self) -> np.ndarray:
        """What a hole shows: mount board, bare support, mortar bed..."""
        if self.backing_cache is None:
            self.backing_cache = _backing(self.rng, self.material, *self.shape, self.scale)
        return self.backing_cache


def _recolour(canvas: _Canvas, mask: np.ndarray, target: np.ndarray | Sequence[float],
              alpha: np.ndarray | float) -> None:
    """Blend masked pixels towards ``target`` (an RGB, or an image of the same size)."""
    target = np.asarray(target, np.float32)
    if target.ndim == 3:
        target = target[mask]
    if isinstance(alpha, np.ndarray) and alpha.ndim == 2:
        alpha = alpha[mask][:, None]
    pixels = canvas.image[mask]
    canvas.image[mask] = pixels + (target - pixels) * alpha


def _contrasting(canvas: _Canvas, mask: np.ndarray, strength: float) -> np.ndarray:
    """Per masked pixel, a grey that stands out: light on dark ground, dark on light ground."""
    lum = _lum(canvas.image[mask])
    return np.where(lum < 0.5, np.minimum(1, lum + strength), lum * (1 - strength))[:, None].repeat(3, 1)


# A mark moved towards its polarity by less than this (in luminance) would barely show: it goes the
# other way instead, so that every labelled pixel changes visibly.
_MIN_VISIBLE = 0.08


def _shift_tone(canvas: _Canvas, mask: np.ndarray, amount: np.ndarray | float, bright: bool) -> None:
    """Lighten (``bright``) or darken masked pixels by up to ``amount`` in every channel, stopping at white
    or black (a sharp, saturated mark, as dust and hair are in scans); where less than ``_MIN_VISIBLE`` is
    left that way (a bright speck on a highlight) the other way, so every masked pixel changes."""
    pixels = canvas.image[mask]
    amount = np.broadcast_to(np.asarray(amount, np.float32), pixels.shape[:1])
    lum = _lum(pixels)
    room = (1 - lum) if bright else lum
    sign = 1.0 if bright else -1.0
    delta = np.where(room >= _MIN_VISIBLE, sign * np.minimum(amount, room), -sign * amount)
    canvas.image[mask] = np.clip(pixels + delta[:, None], 0, 1)
