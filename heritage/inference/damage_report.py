"""What predict writes for one scan: the class-id mask, the overlay, the area table and report.html.

One home for the damage report of a scan (pixels, % of the artwork and mm² per class, the summary.csv
row, the self-contained HTML page with previews, legend and the run's provenance banner), apart from
the model that produces the label map: the gallery builds its pages from the same pieces.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from heritage import fileio
from heritage.data import taxonomy
from heritage.inference import overlays
from heritage.inference.scans import Scan
from heritage.training import runs

if TYPE_CHECKING:
    import pandas as pd

PREVIEW_SIDE = 1600  # longest side of the scan and overlay previews embedded in report.html


@dataclass(frozen=True)
class ReportOptions:
    """What a scan's report says beyond its label map: the scan's ``dpi`` (mm² in the area table, None:
    pixels and % only), the ``settings`` table of report.html and its ``provenance`` paragraph
    (:func:`provenance_html`)."""

    dpi: float | None = None
    settings: dict = field(default_factory=dict)
    provenance: str = ""


class DisplayPair(NamedTuple):
    """A scan and its overlay at display size (:func:`display_pair`), and the enlargement used."""

    scan: np.ndarray
    overlay: np.ndarray
    factor: int


def area_table(labels: np.ndarray, dpi: float | None = None) -> pd.DataFrame:
    """Pixels per class, % of the artwork (Background excluded) and, with ``dpi``, mm².

    One row per fine class, then a Background row (no percentage).
    """
    import pandas as pd

    from heritage.data import stats

    counts = stats.mask_histogram(labels)
    artwork = int(counts[:taxonomy.NUM_CLASSES].sum())
    ids = [*range(taxonomy.NUM_CLASSES), taxonomy.IGNORE_INDEX]
    table = pd.DataFrame({
        "class_id": ids,
        "class": [*taxonomy.CLASS_NAMES, taxonomy.BACKGROUND_NAME],
        "pixels": [int(counts[i]) for i in ids],
    })
    percent = table["pixels"] / artwork * 100.0 if artwork else float("nan")
    table["percent_of_artwork"] = np.where(table["class_id"] == taxonomy.IGNORE_INDEX, np.nan, percent)
    if dpi is not None:
        table["area_mm2"] = table["pixels"] * (25.4 / dpi) ** 2
    return table


def summary_row(name: str, source: str, shape: tuple[int, int], areas: pd.DataFrame) -> dict:
    """One summary.csv row from a scan's :func:`area_table`: size, artwork pixels, % per damage class."""
    table = areas.set_index("class")
    damage = [n for n in taxonomy.CLASS_NAMES if n != "Clean"]
    row = {"image": name, "source": source, "width": shape[1], "height": shape[0],
           "artwork_pixels": int(table.loc[list(taxonomy.CLASS_NAMES), "pixels"].sum()),
           "damage %": float(table.loc[damage, "percent_of_artwork"].sum())}
    if "area_mm2" in table:
        row["damage mm2"] = float(table.loc[damage, "area_mm2"].sum())
    row.update({f"{n} %": float(table.loc[n, "percent_of_artwork"]) for n in damage})
    row["error"] = ""
    return row


def write_outputs(out_dir: str | Path, name: str, source: str, scan: Scan, labels: np.ndarray,
                  options: ReportOptions = ReportOptions()) -> dict:
    """Write mask.png, overlay.png, areas.csv and report.html for one scan; return its summary row."""
    out_dir = Path(out_dir)
    fileio.write_png(out_dir / "mask.png", labels)
    fileio.write_png(out_dir / "overlay.png", overlays.overlay(scan.rgb, labels))
    table = area_table(labels, options.dpi)
    write_csv(out_dir / "areas.csv", table)
    fileio.write_text(out_dir / "report.html",
                      render_report(name, source, scan.rgb, labels, table, options.settings, options.provenance))
    return summary_row(name, source, labels.shape, table)


def write_csv(path: str | Path, table: pd.DataFrame) -> None:
    with fileio.atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def display_pair(rgb: np.ndarray, labels: np.ndarray,
                 max_side: int = PREVIEW_SIDE) -> DisplayPair:
    """The scan and its overlay at display size, and the enlargement used (1 when shrunk or kept).

    Large scans shrink to ``max_side`` (area averaging; labels nearest); small ones are enlarged by
    an integer factor with nearest neighbour to at least ``overlays.DISPLAY_MIN_WIDTH`` wide. The
    overlay is drawn at display size, so its outlines are visible whatever the scan's size.
    """
    import cv2

    height, width = labels.shape
    factor = 1
    if max(height, width) > max_side:  # shrink before PIL, which would copy the full-resolution array
        shrink = max_side / max(height, width)
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    else:
        factor = min(overlays.display_factor(width), max(1, max_side // max(height, width)))
        rgb, labels = overlays.enlarge(rgb, factor), overlays.enlarge(labels, factor)
    return DisplayPair(rgb, overlays.overlay(rgb, labels, outline=1 + factor // 6), factor)


def image_src(picture: np.ndarray, lossless: bool) -> str:
    """A data URI: PNG for enlarged small scans (crisp edges, small files), JPEG for photographs."""
    kind = "png" if lossless else "jpeg"
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=kind.upper(), **({} if lossless else {"quality": 92}))
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def provenance_html(run_dir: str | Path | None) -> str:
    """The run's provenance banner as an HTML paragraph, with a red warning when the run is below its
    all-Clean baseline (``test.miou`` and ``test.all_clean_miou`` of its ``metrics.json``)."""
    if run_dir is None:
        return "<p class='banner warning'>No trained run: these maps come from an untrained model.</p>"
    path = Path(run_dir) / runs.METRICS_FILE
    if not path.is_file():
        return (f"<p class='banner warning'>{html.escape(str(path))} not found: this run has not been "
                "evaluated, so nothing says whether its maps beat predicting Clean everywhere.</p>")
    from heritage.training import provenance

    banner = provenance.run_banner(run_dir)
    test = fileio.read_json(path).get("test") or {}
    miou, clean = test.get("miou"), test.get("all_clean_miou")
    paragraph = f"<p class='banner'>{html.escape(banner.text)}</p>"
    if miou is None or clean is None:
        return paragraph + "<p class='banner warning'>The run recorded no all-Clean baseline.</p>"
    if miou <= clean:
        return paragraph + (f"<p class='banner warning'>This run's test mIoU ({100 * miou:.2f}%) is not above "
                            f"its all-Clean baseline ({100 * clean:.2f}%, predicting Clean everywhere): "
                            "these maps show the pipeline, not damage the model has learnt to find.</p>")
    return paragraph + (f"<p class='banner'>Test mIoU {100 * miou:.2f}% against an all-Clean baseline of "
                        f"{100 * clean:.2f}%.</p>")


def render_report(name: str, source: str, rgb: np.ndarray, labels: np.ndarray, table: pd.DataFrame,
                  settings: dict, provenance: str = "") -> str:
    """A self-contained HTML page: scan and overlay side by side, legend, area table, settings."""
    scan_view, overlay_view, factor = display_pair(rgb, labels)
    present = table[(table["pixels"] > 0) & (table["class_id"] != taxonomy.IGNORE_INDEX)]
    legend = overlays.legend_html(present["class_id"])
    shown = table.assign(percent_of_artwork=table["percent_of_artwork"].map(
        lambda v: "" if math.isnan(v) else f"{v:.3f}"))
    if "area_mm2" in shown:
        shown["area_mm2"] = shown["area_mm2"].map(lambda v: f"{v:.2f}")
    settings_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                            for k, v in settings.items())
    height, width = labels.shape
    scaled = (f"shown enlarged {factor}&times; (nearest neighbour)" if factor > 1 else
              "shown reduced" if scan_view.shape[1] < width else "shown at full size")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Damage map: {html.escape(name)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1800px; }}
.pair {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.pair figure {{ margin: 0; flex: 1 1 0; min-width: 0; max-width: {scan_view.shape[1]}px; }}
.pair img {{ width: 100%; border: 1px solid #ccc; image-rendering: pixelated; }}
.banner {{ font-weight: bold; }} .warning {{ color: #b00000; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
{overlays.LEGEND_CSS}</style></head><body>
<h1>Damage map: {html.escape(name)}</h1>
{provenance}
<p>Source: <code>{html.escape(source)}</code>, {width} &times; {height} px, {scaled}.
Damage classes are blended at {overlays.ALPHA:.0%} opacity with a dark outline; Clean and Background are
untinted. Full resolution: <a href="overlay.png">overlay.png</a>, <a href="mask.png">mask.png</a>
(class ids, 255 = Background), <a href="areas.csv">areas.csv</a>.</p>
<div class="pair">
<figure><img src="{image_src(scan_view, factor > 1)}" alt="scan {html.escape(name)}"><figcaption>scan</figcaption></figure>
<figure><img src="{image_src(overlay_view, factor > 1)}" alt="damage overlay of {html.escape(name)}">
<figcaption>predicted damage</figcaption></figure>
</div>
<h2>Legend (classes found)</h2>
{legend}
<h2>Areas</h2>
{shown.to_html(index=False, escape=True, na_rep="")}
<h2>Settings</h2>
<table>{settings_rows}</table>
</body></html>
"""
