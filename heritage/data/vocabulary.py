"""ARTeFACT's material and content names: the one home of the vocabulary (ingest checks, synth draws).

The names are those of the released dataset (``metadata.csv`` of the 417 annotated images). Splits
stratify by these strings and loco/lomo hold out one value per fold, so a spelling outside the
vocabulary (``film``, ``Photographic``) would silently become a stratum of its own; ingest warns about
such names (suggesting the closest one) and refuses them under ``--strict``.
"""

from __future__ import annotations

import difflib

from heritage import errors

MATERIALS: tuple[str, ...] = (
    "Canvas", "Ceramic", "Film emulsion", "Glass", "Lime plaster",
    "Paper", "Parchment", "Tesserae", "Textile", "Wood",
)
CONTENTS: tuple[str, ...] = (
    "Artistic depiction", "Geometric patterns", "Line art", "Photographic depiction",
)
VOCABULARIES: dict[str, tuple[str, ...]] = {"material": MATERIALS, "content": CONTENTS}


class VocabularyWarning(UserWarning):
    """A material or content name outside ARTeFACT's vocabulary (ingest; an error with --strict)."""


def suggest(value: str, names: tuple[str, ...]) -> str | None:
    """The vocabulary name ``value`` most likely means, or None when nothing is close."""
    lowered = {name.lower(): name for name in names}
    key = value.strip().lower()
    if key in lowered:
        return lowered[key]
    # a unique name containing the value (or contained in it): "film" -> "Film emulsion"
    containing = [name for low, name in lowered.items() if key and (key in low or low in key)]
    if len(containing) == 1:
        return containing[0]
    close = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.5)
    return lowered[close[0]] if close else None


def unknown_name_message(column: str, value: str) -> str | None:
    """None when ``value`` is in the vocabulary of ``column`` ("material"/"content"), else why not."""
    names = VOCABULARIES[column]
    if value in names:
        return None
    nearest = suggest(value, names)
    hint = f"did you mean {nearest!r}?" if nearest else f"ARTeFACT's names are {list(names)}"
    return (f"{column} {value!r} is not in ARTeFACT's vocabulary ({hint}); it would become a stratum of its "
            f"own in every split")


def check_name(column: str, value: str, where: str) -> None:
    """Raise InputError naming ``where`` when ``value`` is outside the vocabulary (ingest --strict)."""
    message = unknown_name_message(column, value)
    if message:
        raise errors.InputError(f"{where}: {message} (fix the metadata, or drop --strict to only warn)")
