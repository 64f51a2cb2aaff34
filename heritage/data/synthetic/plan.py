"""The dataset plan: what each synthetic image will be, decided before any pixel is painted.

Material x content pairs and aspect ratios are dealt from ARTeFACT's reference counts, and each damage
class goes to a share of the images weighted by material, so the plan alone fixes the proportions
the painters then fill in. The measures of how close a dataset comes (class pixel shares) live here
too, next to the shares they are compared with.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from heritage import errors
from heritage.data import reference, stats, taxonomy, vocabulary

# ARTeFACT's published counts have one home, heritage.data.reference; synth matches them.
REFERENCE_PAIR_COUNTS = reference.REFERENCE_PAIR_COUNTS
REFERENCE_CLASS_PIXEL_COUNTS = reference.REFERENCE_CLASS_PIXEL_COUNTS
_LOG_ASPECT_QUANTILES = reference.LOG_ASPECT_QUANTILES
# The vocabulary has one home (heritage.data.vocabulary, also what ingest checks names against).
MATERIALS: tuple[str, ...] = vocabulary.MATERIALS
CONTENTS: tuple[str, ...] = vocabulary.CONTENTS

SHARE_KEYS: tuple[str, ...] = taxonomy.CLASS_NAMES + (taxonomy.BACKGROUND_NAME,)


def reference_class_shares() -> dict[str, float]:
    """Pixel share of each class (and Background) in the real dataset."""
    return reference.class_shares()


def class_pixel_shares(masks: Iterable[np.ndarray]) -> dict[str, float]:
    """Pixel share of each class name (and "Background") over a collection of id masks."""
    counts = sum((stats.mask_histogram(mask) for mask in masks), np.zeros(256, dtype=np.int64))
    total = counts.sum()
    if total == 0:
        raise errors.InputError("class_pixel_shares: no pixels (empty mask collection)")
    ids = list(range(taxonomy.NUM_CLASSES)) + [taxonomy.IGNORE_INDEX]
    return {name: float(counts[i] / total) for name, i in zip(SHARE_KEYS, ids)}


@dataclass(frozen=True)
class DamageProfile:
    """How often a damage class appears and on which materials.

    ``image_share`` is the fraction of images showing the class; ``affinity`` weighs materials
    (default 1) when choosing those images, so e.g. light leaks land on film.
    ``photographic`` classes are three times likelier on photographs and half as likely elsewhere.
    """

    image_share: float
    affinity: dict[str, float] = field(default_factory=dict)
    photographic: bool = False

    def weight(self, material: str, content: str) -> float:
        weight = self.affinity.get(material, 1.0)
        if self.photographic:
            weight *= 3.0 if content == "Photographic depiction" else 0.5
        return weight


_RIGID = {"Glass": 0.05, "Tesserae": 0.05, "Ceramic": 0.05, "Wood": 0.05, "Lime plaster": 0.05}
# Film frames carry thin damage only (real frames are 0.05-0.23 % damaged, by specks, hairs
# and scratches); area damage is kept possible (weights stay positive) but practically never lands there.
_FILM_RARE = {"Film emulsion": 0.002}
# Image shares (here) and damage sizes (in the painters) were tuned so that a default dataset
# (417 images, 512 px) reproduces every reference class pixel share within a factor of 1.6; the thin
# classes (Dust, Hair, Scratch, Cracks) get their share from many realistic 1-3 px marks rather than
# from fewer, thicker ones, and Lightleak mostly from broad fog on plates and prints, since on film it
# is a small flare in a minority of frames (see surface_damage._lightleak).
DAMAGE_PROFILES: dict[str, DamageProfile] = {
    "Material loss": DamageProfile(0.30, {"Tesserae": 3, "Lime plaster": 3, "Ceramic": 2,
                                          "Parchment": 1.5, "Wood": 1.5, **_FILM_RARE}),
    "Peel": DamageProfile(0.27, {"Canvas": 3, "Wood": 3, "Lime plaster": 3, "Glass": 2,
                                 "Ceramic": 2, "Parchment": 1.5, "Paper": 0.6, "Tesserae": 0.2,
                                 "Textile": 0.1, **_FILM_RARE}),
    "Dust": DamageProfile(0.22, {"Film emulsion": 4, "Glass": 3}, photographic=True),
    "Scratch": DamageProfile(0.28, {"Film emulsion": 0.25, "Glass": 3, "Textile": 0.2},
                             photographic=True),
    "Hair": DamageProfile(0.04, {"Film emulsion": 5, "Glass": 3}, photographic=True),
    "Dirt": DamageProfile(0.25, {"Textile": 2, "Paper": 1.5, "Parchment": 1.5, **_FILM_RARE}),
    "Fold": DamageProfile(0.15, {"Paper": 4, "Parchment": 3, "Textile": 2, "Canvas": 0.3, **_RIGID,
                                 **_FILM_RARE}),
    "Writing": DamageProfile(0.09, {"Paper": 4, "Parchment": 1, "Glass": 0.5, "Tesserae": 0.05,
                                    "Textile": 0.1, "Ceramic": 0.1, **_FILM_RARE}),
    "Cracks": DamageProfile(0.20, {"Lime plaster": 4, "Canvas": 4, "Ceramic": 4, "Wood": 3,
                                   "Glass": 2, "Paper": 0.3, "Textile": 0.05, **_FILM_RARE}),
    "Staining": DamageProfile(0.12, {"Paper": 2, "Parchment": 2, "Textile": 2, "Lime plaster": 1.5,
                                     "Glass": 0.5, "Ceramic": 0.3, **_FILM_RARE}),
    "Stamp": DamageProfile(0.04, {"Paper": 4, "Parchment": 1, "Textile": 0.1, **_RIGID,
                                  "Canvas": 0.05, **_FILM_RARE}),
    "Sticker": DamageProfile(0.04, {"Paper": 2, "Glass": 2, "Tesserae": 0.05,
                                    "Lime plaster": 0.05, "Textile": 0.2, **_FILM_RARE}),
    "Puncture": DamageProfile(0.08, {"Paper": 2, "Parchment": 2, "Canvas": 1.5, "Textile": 1.5,
                                     **_RIGID, **_FILM_RARE}),
    "Burn marks": DamageProfile(0.01, {"Paper": 2, "Parchment": 2, "Glass": 0.3, "Tesserae": 0.1,
                                       "Ceramic": 0.1, **_FILM_RARE}),
    "Lightleak": DamageProfile(0.05, {"Film emulsion": 2.5, "Glass": 2, "Paper": 1,
                                      "Parchment": 0.01, "Tesserae": 0.01, "Canvas": 0.01,
                                      "Lime plaster": 0.01, "Textile": 0.01, "Ceramic": 0.01,
                                      "Wood": 0.01}, photographic=True),
}
DAMAGE_CLASSES: tuple[str, ...] = tuple(taxonomy.CLASS_NAMES[1:])


def sample_damages(rng: np.random.Generator, material: str, content: str) -> tuple[str, ...]:
    """Draw the damage classes of one image independently (used outside a planned dataset)."""
    chosen = []
    for name in DAMAGE_CLASSES:
        profile = DAMAGE_PROFILES[name]
        mean_weight = _mean_reference_weight(name)
        if rng.random() < min(1.0, profile.image_share * profile.weight(material, content) / mean_weight):
            chosen.append(name)
    if not chosen:
        chosen.append(_fallback_damage(rng, material, content))
    return tuple(chosen)


@lru_cache(maxsize=None)
def _mean_reference_weight(name: str) -> float:
    profile = DAMAGE_PROFILES[name]
    total = sum(REFERENCE_PAIR_COUNTS.values())
    return sum(n * profile.weight(m, c) for (m, c), n in REFERENCE_PAIR_COUNTS.items()) / total


def _fallback_damage(rng: np.random.Generator, material: str, content: str) -> str:
    """Every real image carries some damage; pick one by how common and how plausible it is."""
    weights = np.array([DAMAGE_PROFILES[n].image_share * DAMAGE_PROFILES[n].weight(material, content)
                        for n in DAMAGE_CLASSES])
    return DAMAGE_CLASSES[int(rng.choice(len(DAMAGE_CLASSES), p=weights / weights.sum()))]


@dataclass(frozen=True)
class SamplePlan:
    """Everything that decides one image, fixed before any pixel is painted."""

    index: int
    id: str
    material: str
    content: str
    height: int
    width: int
    damages: tuple[str, ...]


def sample_id(seed: int, index: int) -> str:
    """A 25-character id like the real cuids: 'syn' + 22 base-36 digits hashed from (seed, index)."""
    digest = int.from_bytes(hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=16).digest(), "big")
    digits = []
    for _ in range(22):
        digest, digit = divmod(digest, 36)
        digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[digit])
    return "syn" + "".join(digits)


def plan_dataset(n_images: int, seed: int = 0, longest_side: int = 512) -> list[SamplePlan]:
    """Material/content pairs, sizes and damage classes of every image, deterministic in ``seed``.

    Pairs are dealt from shuffled copies of the 417 reference pairs, so the first 417 images match
    the reference proportions exactly. Each damage class goes to ``max(1, round(share * n))``
    images chosen by material affinity: every class is present in any dataset.
    """
    _check_positive(n_images=n_images, longest_side=longest_side)
    rng = np.random.default_rng(seed)
    reference = [pair for pair, count in REFERENCE_PAIR_COUNTS.items() for _ in range(count)]
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n_images:
        pairs.extend(reference[i] for i in rng.permutation(len(reference)))
    pairs = pairs[:n_images]
    sizes = [_size(float(u), longest_side) for u in rng.random(n_images)]

    damages: list[list[str]] = [[] for _ in range(n_images)]
    for name in DAMAGE_CLASSES:
        profile = DAMAGE_PROFILES[name]
        weights = np.array([profile.weight(m, c) for m, c in pairs])
        count = min(n_images, max(1, round(profile.image_share * n_images)))
        for i in rng.choice(n_images, size=count, replace=False, p=weights / weights.sum()):
            damages[i].append(name)
    for i, (material, content) in enumerate(pairs):
        if not damages[i]:
            damages[i].append(_fallback_damage(rng, material, content))
    return [
        SamplePlan(i, sample_id(seed, i), m, c, h, w, tuple(d))
        for i, ((m, c), (h, w), d) in enumerate(zip(pairs, sizes, damages))
    ]


def _size(u: float, longest_side: int) -> tuple[int, int]:
    """(height, width) with the reference aspect-ratio distribution (inverse CDF at ``u``)."""
    grid = np.linspace(0.0, 1.0, len(_LOG_ASPECT_QUANTILES))
    aspect = math.exp(float(np.interp(u, grid, _LOG_ASPECT_QUANTILES)))
    if aspect >= 1:
        return max(8, round(longest_side / aspect)), longest_side
    return longest_side, max(8, round(longest_side * aspect))


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise errors.InputError(f"{name} must be a positive integer, got {value!r}")
