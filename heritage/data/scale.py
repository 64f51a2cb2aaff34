"""How large damage is at a given scale: connected components per class, and when they vanish.

Real damage is tiny (most defects on film scans are a few pixels), and every downscaling (ingest's
``--longest-side``, a letterbox to ``image_size``, predict's ``--scale``) shrinks it further. This
module measures the damage components of masks (8-connected, per damage class, Clean and Background
excluded) and summarises their areas at a scale factor, so ingest, train, ``data stats`` and predict
can say, naming the classes, when a chosen scale shrinks a class's median component below a pixel.
It works on mask arrays; reading a data folder's masks is :mod:`heritage.data.stats`'
(``read_component_areas``), so that ingest, which warns with this module, is not imported back.

A *factor* is a linear resize factor (0.25: a quarter of the width and of the height), always from
the masks that were measured to the resolution asked about; areas scale by factor**2. Measuring a
mask is one labelling pass per class, inside that class's bounding box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from heritage.data import taxonomy

# "Share <= 2 px": the components a model can barely resolve at that scale.
SMALL_AREA_PX = 2.0
# A class whose median component is below this area (px) at a scale is mostly gone at that scale.
VANISHING_AREA_PX = 1.0
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

ComponentAreas = dict[int, np.ndarray]  # damage class id -> pixel areas of its components in one mask


class ScaleWarning(UserWarning):
    """A chosen scale shrinks some class's median damage component below VANISHING_AREA_PX."""


def component_areas(mask: np.ndarray) -> ComponentAreas:
    """Pixel areas (int64) of the 8-connected components of each damage class present in ``mask``.

    ``mask`` is (H, W) class ids; Clean (0), Background (255) and any other value are not damage.
    Each class is labelled only inside its bounding box (``ndimage.find_objects`` treats the class
    ids as labels), so a class confined to a corner of a 100 MP scan costs that corner.
    """
    areas: ComponentAreas = {}
    boxes = ndimage.find_objects(mask, max_label=taxonomy.NUM_CLASSES - 1)  # 255 and others: not searched
    for class_id, box in enumerate(boxes, start=1):
        if box is None:
            continue
        labels, n = ndimage.label(mask[box] == class_id, structure=_EIGHT_CONNECTED)
        areas[class_id] = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64)
    return areas


def areas_at(areas: np.ndarray, factor: float) -> np.ndarray:
    """Areas in pixels after a resize by ``factor``: ``areas * factor**2``.

    An estimate: it is the expected number of output pixels whose centre falls in a component under
    nearest-neighbour resampling, but a real resize rounds each component to whole pixels (a 1 px
    speck at 0.25 is kept whole or dropped, by where the sampling grid falls), breaks thin ones (a
    hair can survive as dots) and can merge close ones. As a summary of "how big is this class at that
    scale" it is right on average; it is not what a particular resized mask holds.
    """
    return np.asarray(areas, dtype=np.float64) * float(factor) ** 2


def summarise(per_image: Sequence[ComponentAreas], factors: float | Sequence[float] = 1.0
              ) -> dict[str, dict[str, float | int]]:
    """Per damage class present: ``n_components``, ``median_area_px`` and ``share_le_2px`` (the share of
    components of at most SMALL_AREA_PX) after resizing image i by ``factors[i]`` (one float: all).

    Keys are class names in class-id order; classes without a component are left out. Areas are
    :func:`areas_at` estimates, pooled over the images (every component counts once).
    """
    if np.ndim(factors) == 0:
        factors = [float(factors)] * len(per_image)
    if len(factors) != len(per_image):
        raise ValueError(f"{len(factors)} factors for {len(per_image)} images")
    pooled: dict[int, list[np.ndarray]] = {}
    for areas, factor in zip(per_image, factors):
        for class_id, class_areas in areas.items():
            pooled.setdefault(class_id, []).append(areas_at(class_areas, factor))
    summary: dict[str, dict[str, float | int]] = {}
    for class_id in sorted(pooled):
        scaled = np.concatenate(pooled[class_id])
        summary[taxonomy.CLASS_NAMES[class_id]] = {
            "n_components": int(scaled.size),
            "median_area_px": float(f"{np.median(scaled):.6g}"),
            "share_le_2px": float(f"{np.mean(scaled <= SMALL_AREA_PX):.6g}"),
        }
    return summary


def rescaled(summary: Mapping[str, Mapping[str, float]], factor: float) -> dict[str, dict[str, float]]:
    """A summary's medians after one more uniform resize by ``factor`` (the share <= 2 px cannot be
    rescaled without the areas, so it is left out)."""
    return {name: {"n_components": row["n_components"],
                   "median_area_px": float(f"{row['median_area_px'] * float(factor) ** 2:.6g}")}
            for name, row in summary.items()}


def vanishing_messages(summary: Mapping[str, Mapping[str, float]], where: str) -> list[str]:
    """One message per class whose median component is below VANISHING_AREA_PX in ``summary``,
    naming the class and its median; ``where`` says at which scale (it starts each message)."""
    messages = []
    for name, row in summary.items():
        median = row["median_area_px"]
        if median < VANISHING_AREA_PX:
            small = (f", {row['share_le_2px']:.0%} of its {row['n_components']} components <= {SMALL_AREA_PX:g} px"
                     if "share_le_2px" in row else f" ({row['n_components']} components)")
            messages.append(f"{where}: {name}: median damage component {median:.3g} px "
                            f"(< {VANISHING_AREA_PX:g} px{small}): at this scale most of it is lost")
    return messages


def working_factor(longest_side: np.ndarray | float, working_resolution: str | int) -> np.ndarray:
    """The resize factor from the stored size to a working resolution (``native``: 1; N: the longest
    side at most N px, never enlarged), per longest side."""
    longest = np.asarray(longest_side, dtype=np.float64)
    if working_resolution == "native":
        return np.ones_like(longest)
    return np.minimum(longest, float(working_resolution)) / longest


def table(summary: Mapping[str, Mapping[str, float]]) -> str:
    """The summary as aligned text lines (``data stats``)."""
    lines = [f"{'class':>14s} {'components':>10s} {'median px':>10s} {'<= 2 px':>8s}"]
    for name, row in summary.items():
        lines.append(f"{name:>14s} {row['n_components']:10d} {row['median_area_px']:10.3g} "
                     f"{100 * row['share_le_2px']:7.1f}%")
    return "\n".join(lines)
