"""ARTeFACT's reference facts: what the published dataset holds, for comparing a data folder with it.

Embedded so the package works anywhere. Source: the published ARTeFACT dataset's metadata.csv
(crosstab of material x content over the 417 annotated images) and statistics.json
(class_pixel_counts, at longest side 512). Readers: the synthetic stand-in (``heritage.data.synthetic`` draws
its images to match them) and the dataset notebook (``heritage.report.dataset_views``: this data
folder's class shares beside ARTeFACT's). Names are ``heritage.data.taxonomy``'s and ``heritage.data.vocabulary``'s.
"""

from __future__ import annotations

from heritage.data import taxonomy

REFERENCE_PAIR_COUNTS: dict[tuple[str, str], int] = {
    ("Parchment", "Artistic depiction"): 40,
    ("Parchment", "Line art"): 2,
    ("Film emulsion", "Photographic depiction"): 22,
    ("Glass", "Artistic depiction"): 8,
    ("Glass", "Photographic depiction"): 31,
    ("Paper", "Artistic depiction"): 80,
    ("Paper", "Geometric patterns"): 8,
    ("Paper", "Line art"): 21,
    ("Paper", "Photographic depiction"): 77,
    ("Tesserae", "Artistic depiction"): 27,
    ("Tesserae", "Geometric patterns"): 3,
    ("Canvas", "Artistic depiction"): 23,
    ("Lime plaster", "Artistic depiction"): 23,
    ("Textile", "Artistic depiction"): 4,
    ("Textile", "Geometric patterns"): 12,
    ("Ceramic", "Artistic depiction"): 1,
    ("Ceramic", "Geometric patterns"): 9,
    ("Wood", "Artistic depiction"): 26,
}
REFERENCE_CLASS_PIXEL_COUNTS: dict[str, int] = {
    "Clean": 69751540, "Material loss": 2922531, "Peel": 3877364, "Dust": 23110,
    "Scratch": 171255, "Hair": 5407, "Dirt": 238265, "Fold": 661706, "Writing": 74397,
    "Cracks": 475478, "Staining": 804722, "Stamp": 38810, "Sticker": 93514, "Puncture": 18484,
    "Burn marks": 1124, "Lightleak": 560273, "Background": 1131052,
}
# Quantiles (0, 5, ..., 100%) of log(width / height) over the 417 reference images.
LOG_ASPECT_QUANTILES = (
    -1.057, -0.528, -0.442, -0.403, -0.371, -0.341, -0.309, -0.285, -0.266, -0.234, -0.191,
    -0.129, -0.023, 0.024, 0.134, 0.259, 0.3, 0.392, 0.434, 0.494, 0.93,
)


def class_shares() -> dict[str, float]:
    """Pixel share of each class and of Background among all of ARTeFACT's pixels."""
    total = sum(REFERENCE_CLASS_PIXEL_COUNTS.values())
    return {name: REFERENCE_CLASS_PIXEL_COUNTS[name] / total for name in (*taxonomy.CLASS_NAMES, taxonomy.BACKGROUND_NAME)}
