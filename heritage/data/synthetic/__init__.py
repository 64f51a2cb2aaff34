"""Deterministic synthetic stand-in for ARTeFACT, written in the dataset's HF parquet schema.

The real dataset (HF ``danielaivanova/damaged-media``) cannot always be downloaded, so this package
paints look-alikes: artworks on the ten ARTeFACT materials with the four content types, damaged by
the fifteen damage classes. Every damage is *painted* onto the clean render and its pixels are
labelled exactly where the image was changed, so a model can learn the classes from appearance.

Proportions follow the real metadata: (material, content) pairs and aspect ratios are drawn from
the reference counts (``heritage.data.reference``), and the number of images showing each damage
class and the damage sizes are set so that the class pixel shares land near the real ones (Clean
~86%, rare classes under 0.01%). The same seed gives byte-identical shards.

Thin damage has the sizes measured on real scans, in pixels of a 512 px image, and the look
it has in them: dust is many sharp, high-contrast irregular specks of 1-6 px within 3x3 (median 2 px),
near white on scanned negatives and near black on slides, prints and artworks; hairs are smooth curved
1-3 px strokes with the same polarity; scratches are long near-straight 1-3 px lines (on film, hairlines
along the strip, the transport direction); cracks are 1-2 px networks or branching lines. Smaller renders shrink them
to 1 px at least (so at the smoke size they are relatively wider than real). Film frames carry thin
damage only, a few tenths of a percent of the frame, and a light leak in about a quarter of them (a
small flare at the frame edge). The class shares were matched by measuring the default dataset
(417 images, 512 px, seed 0) against ``REFERENCE_CLASS_PIXEL_COUNTS`` and tuning the image shares
and mark counts: each class lands within a factor of 1.6 of the reference; the thin classes reach
their (small) share through many small marks, and Lightleak mostly through broad fog on glass
plates and photographic prints instead of through every film frame.

Output: ``<out>/data/train-XXXXX-of-YYYYY.parquet`` with the columns of the HF dataset: ``id``,
``image``, ``annotation``, ``annotation_rgb`` (struct ``{bytes, path}`` of PNG bytes, how HF
``datasets`` stores ``Image`` features), ``material``, ``content``, ``type``,
``damage_description``.

One module per concern, in the order an image is made:

- :mod:`~heritage.data.synthetic.plan`: the reference proportions and the dataset plan (material x
  content draw, sizes, which damage classes each image shows);
- :mod:`~heritage.data.synthetic.drawing`: noise, blobs, lines and cells the painters share;
- :mod:`~heritage.data.synthetic.content` (what is depicted) and :mod:`~heritage.data.synthetic.materials`
  (what it is painted on: supports, backing, the object's outline on the scanner);
- :mod:`~heritage.data.synthetic.canvas`: the image being damaged and the recolouring the painters share;
- the damage painters by family: :mod:`~heritage.data.synthetic.thin_damage` (dust, scratches, hairs,
  cracks), :mod:`~heritage.data.synthetic.surface_damage` (dirt, stains, folds, light leaks),
  :mod:`~heritage.data.synthetic.loss_damage` (material loss, peeling, punctures, burns),
  :mod:`~heritage.data.synthetic.additions` (writing, stamps, stickers);
- :mod:`~heritage.data.synthetic.render`: one damaged image and its mask (the painting order);
- :mod:`~heritage.data.synthetic.metadata` (the ``type`` and ``damage_description`` text),
  :mod:`~heritage.data.synthetic.shards` (the parquet shards) and :mod:`~heritage.data.synthetic.command`
  (``python -m heritage data synth``).

This module re-exports the names used outside the package, so ``from heritage.data import synthetic as
synth; synth.X`` works (the command, :mod:`heritage.pipeline.preparation`, ``bench/*.py``, the tests).
"""

from heritage.data.synthetic.command import add_arguments, main
from heritage.data.synthetic.metadata import damage_description, object_type
from heritage.data.synthetic.plan import (
    CONTENTS, DAMAGE_CLASSES, DAMAGE_PROFILES, MATERIALS, REFERENCE_CLASS_PIXEL_COUNTS, REFERENCE_PAIR_COUNTS,
    SHARE_KEYS, DamageProfile, SamplePlan, class_pixel_shares, plan_dataset, reference_class_shares,
    sample_damages, sample_id,
)
from heritage.data.synthetic.render import PAINTERS, render_plan, render_sample
from heritage.data.synthetic.shards import PARQUET_SCHEMA, write_parquet

__all__ = [
    "CONTENTS", "DAMAGE_CLASSES", "DAMAGE_PROFILES", "MATERIALS", "PAINTERS", "PARQUET_SCHEMA",
    "REFERENCE_CLASS_PIXEL_COUNTS", "REFERENCE_PAIR_COUNTS", "SHARE_KEYS", "DamageProfile", "SamplePlan",
    "add_arguments", "class_pixel_shares", "damage_description", "main", "object_type", "plan_dataset",
    "reference_class_shares", "render_plan", "render_sample", "sample_damages", "sample_id", "write_parquet",
]
