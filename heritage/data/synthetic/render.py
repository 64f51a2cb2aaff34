"""One damaged artwork: the clean render, the damage painters in their fixed order, the mask.

This is where a plan entry becomes an image and its label mask; the painting order (``PAINTERS``)
has its one home here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from heritage import errors
from heritage.data import taxonomy
from heritage.data.synthetic.additions import _stamp, _sticker, _writing
from heritage.data.synthetic.canvas import _Canvas
from heritage.data.synthetic.loss_damage import _burn, _material_loss, _peel, _puncture
from heritage.data.synthetic.materials import _BACKDROPS, _GROUNDS, _artwork_region, _render_artwork
from heritage.data.synthetic.plan import (
    CONTENTS, DAMAGE_CLASSES, MATERIALS, SamplePlan, _check_positive, sample_damages,
)
from heritage.data.synthetic.surface_damage import _dirt, _fold, _lightleak, _staining
from heritage.data.synthetic.thin_damage import _cracks, _dust, _hair, _scratch

# Painting order: surface changes first, then mechanical damage, then losses (which remove the
# paint with whatever was on it), then later additions, then holes through everything.
PAINTERS: dict[str, Callable[[_Canvas], np.ndarray]] = {
    "Lightleak": _lightleak,
    "Staining": _staining,
    "Cracks": _cracks,
    "Fold": _fold,
    "Scratch": _scratch,
    "Peel": _peel,
    "Material loss": _material_loss,
    "Writing": _writing,
    "Stamp": _stamp,
    "Sticker": _sticker,
    "Dirt": _dirt,
    "Dust": _dust,
    "Hair": _hair,
    "Puncture": _puncture,
    "Burn marks": _burn,
}


def render_sample(rng: np.random.Generator, material: str, content: str, height: int, width: int,
                  damages: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paint one damaged artwork: (image uint8 (H, W, 3), mask uint8 (H, W) of class ids / 255).

    ``damages`` lists the damage classes to paint (default: drawn by :func:`sample_damages`).
    The clean artwork consumes the random stream first, so the same generator state with
    ``damages=[]`` gives the undamaged picture.
    """
    if material not in MATERIALS:
        raise errors.InputError(f"unknown material {material!r} (expected one of {MATERIALS})")
    if content not in CONTENTS:
        raise errors.InputError(f"unknown content {content!r} (expected one of {CONTENTS})")
    _check_positive(height=height, width=width)
    if min(height, width) < 8:
        raise errors.InputError(f"image size {height}x{width} is too small (at least 8 px per side)")
    unknown = [d for d in damages or () if d not in PAINTERS]
    if unknown:
        raise errors.InputError(f"unknown damage class(es) {unknown} (expected names from {DAMAGE_CLASSES})")

    scale = max(height, width) / 512.0
    image, tiles = _render_artwork(rng, material, content, height, width, scale)
    artwork = _artwork_region(rng, material, height, width, scale)
    backdrop = np.array(_BACKDROPS[int(rng.integers(len(_BACKDROPS)))], np.float32)
    sensor = 0.012 * rng.standard_normal((height, width, 1), dtype=np.float32)
    canvas = _Canvas(rng, material, content, np.clip(image + sensor, 0, 1).astype(np.float32), artwork,
                     np.asarray(_GROUNDS[material], np.float32), tiles)
    if content == "Photographic depiction":  # drawn whatever the damages: damages=[] stays the clean picture
        canvas.negative = material == "Glass" or (material == "Film emulsion" and rng.random() < 0.5)
    if damages is None:
        damages = sample_damages(rng, material, content)
    mask = np.zeros((height, width), np.uint8)
    for name in PAINTERS:  # fixed order, whatever the order asked for
        if name in damages:
            painted = PAINTERS[name](canvas)
            mask[painted] = taxonomy.CLASS_IDS[name]
    canvas.image[~artwork] = backdrop + sensor[~artwork]
    mask[~artwork] = taxonomy.IGNORE_INDEX
    return (np.clip(canvas.image, 0, 1) * 255 + 0.5).astype(np.uint8), mask


def render_plan(plan: SamplePlan, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask of one planned sample (its own random stream: order-independent)."""
    rng = np.random.default_rng([seed, plan.index])
    return render_sample(rng, plan.material, plan.content, plan.height, plan.width, plan.damages)
