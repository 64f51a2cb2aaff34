"""The inference stage: a trained run applied to whole scans.

``tiling`` is the sliding window (shared with training's evaluation), ``overlays`` the one damage
overlay and legend, ``predict`` the ``python -m heritage predict`` command: damage maps, area tables
and HTML reports for full-resolution scans.
"""
