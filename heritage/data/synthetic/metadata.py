"""The text columns of a synthetic row: the object ``type`` and its ``damage_description``.

Kept apart from the pixels: the text is derived from the material, content and the classes present.
"""

from __future__ import annotations

from collections.abc import Sequence

from heritage.data.synthetic.plan import DAMAGE_CLASSES

_DAMAGE_PHRASES = {
    "Material loss": "material loss", "Peel": "peeling", "Dust": "dust spots", "Scratch": "scratches",
    "Hair": "hairs", "Dirt": "dirt", "Fold": "folds", "Writing": "handwriting", "Cracks": "cracks",
    "Staining": "stains", "Stamp": "a stamp", "Sticker": "a sticker", "Puncture": "punctures",
    "Burn marks": "burn marks", "Lightleak": "a light leak",
}


def object_type(material: str, content: str) -> str:
    """A short name of the kind of object, for the ``type`` column."""
    if content == "Photographic depiction":
        return {"Film emulsion": "film", "Glass": "glass plate"}.get(material, "photo")
    if material == "Glass":
        return "stained glass"
    if material in ("Paper", "Parchment"):
        return {"Line art": "drawing", "Geometric patterns": "print"}.get(
            content, "manuscript" if material == "Parchment" else "painting")
    return {"Tesserae": "mosaic", "Lime plaster": "fresco", "Textile": "textile",
            "Ceramic": "ceramic", "Canvas": "painting", "Wood": "panel painting"}[material]


def damage_description(kind: str, classes: Sequence[str]) -> str:
    """E.g. "The photo has scratches and dust spots." (classes in taxonomy order)."""
    phrases = [_DAMAGE_PHRASES[c] for c in DAMAGE_CLASSES if c in classes]
    if not phrases:
        return f"The {kind} shows no damage."
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"The {kind} has {listed}."
