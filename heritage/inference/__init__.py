"""The inference stage: a trained run applied to whole scans.

``scans`` reads the inputs (image files, folders, data folders, parquet shards), ``predict`` is the
model side and the ``python -m heritage predict`` command (over the sliding window of
``heritage.modeling.tiling``, shared with training's evaluation), ``damage_report`` what is written
per scan (mask, overlay, area table, HTML report) and ``overlays`` the one damage overlay and legend.
"""
