"""Damage maps for whole artworks: tiled full-resolution inference with a trained run.

``python -m heritage predict --run RUN_DIR --input PATH --out DIR`` reads one image, a folder of
images, a data folder (``<data>/images/``) or HF parquet shards, and writes for each image
``<out>/<name>/``: ``mask.png`` (class ids, 255 where the input is transparent), ``overlay.png``
(damage in the ARTeFACT palette over the scan), ``areas.csv`` (pixels, % of the artwork and, with
``--dpi``, mm² per class) and ``report.html``; ``<out>/summary.csv`` has one row per image.

Scale. A run is trained on whole artworks letterboxed to ``image_size`` (384 px in the paper;
``heritage.data.datasets``): a damage class is learnt at the size it has when the artwork's longest side
spans ``image_size`` pixels. ``--scale auto`` (the default) therefore resizes each scan so its
longest side is the training ``image_size`` and pads the short side as training did: the model
sees the artwork exactly as in training, and the label map is resized back to the scan's full
resolution with nearest neighbour. A factor (``--scale 0.25``, ``--scale 1`` = native resolution)
gives finer boundaries, with damage then larger in pixels than anything seen in training: a
trade-off to check visually, not a free gain. A patch run (``sampling: patch``) was trained on crops
of its data folder at the working resolution, so ``auto`` keeps the scan at that resolution
(``native``: as given, N: longest side at most N px). When the chosen scale shrinks the median damage
component of a class of the run's training split below a pixel (the run's recorded
``metrics.json`` ``scale.components``, :mod:`heritage.data.scale`), a warning names the classes.

Memory. The sliding window (:mod:`heritage.modeling.tiling`) holds one band of rows across the image width,
never a full-resolution 16-class float map; what scales with the image is uint8: the scan, its label
map and the overlay.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from heritage import errors, fileio
from heritage.inference import overlays
from heritage.training import runs
from heritage.data import taxonomy
# The sliding window lives below predict and engine; its names stay importable from here.
from heritage.modeling.tiling import (WINDOWS, BandBlender, SlidingWindow, band_rows, iter_probability_bands,  # noqa: F401
                                      predict_labels, predict_tiles, tile_starts, tile_window)

if TYPE_CHECKING:  # torch is imported lazily so that `--help` stays fast
    import pandas as pd
    import torch

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
OVERLAY_ALPHA = overlays.ALPHA  # opacity of damage colours over the scan; Clean and Background stay untinted
PREVIEW_SIDE = 1600  # longest side of the scan and overlay previews embedded in report.html
ROW_CHUNK = 256  # rows converted/blended at a time: bounds temporaries on 100 MP scans


# ----------------------------------------------------------------------------- reading scans


@dataclass
class Scan:
    """A decoded scan: RGB pixels and, when the input had alpha, where the artwork is."""

    rgb: np.ndarray  # (H, W, 3) uint8
    artwork: np.ndarray | None  # (H, W) bool, False where alpha == 0; None without alpha

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def read_scan(path: str | Path) -> Scan:
    """Read an image file (PNG/JPEG/... via PIL, TIFF via tifffile); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: file not found")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _read_tiff(path)
    return scan_from_image(fileio.open_image(path))


def scan_from_image(image: Image.Image) -> Scan:
    """A :class:`Scan` from a decoded PIL image: RGB via ``fileio.to_rgb_array`` plus its alpha."""
    artwork = None
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        alpha = image if "A" in image.getbands() else image.convert("RGBA")
        artwork = np.asarray(alpha.getchannel("A")) > 0
    return Scan(fileio.to_rgb_array(image), artwork)


def _read_tiff(path: Path) -> Scan:
    import tifffile

    try:
        try:  # uncompressed, contiguous TIFFs are memory-mapped instead of read into RAM
            array = tifffile.memmap(path, mode="r")
        except ValueError:
            array = tifffile.imread(path)
    except (OSError, ValueError) as err:  # TiffFileError is a ValueError
        raise errors.InputError(f"{path}: cannot read TIFF ({err})") from None
    return tiff_array_to_scan(array, str(path))


def tiff_array_to_scan(array: np.ndarray, name: str) -> Scan:
    """Convert a TIFF sample array (grey, grey+alpha, RGB, RGBA; 8/16-bit or float) to a Scan.

    16-bit samples are scaled by their declared range (65535 -> 255), float samples are taken as
    0..1, and alpha is composited over white as ``fileio.to_rgb_array`` does for PIL images.
    """
    array = np.squeeze(array, axis=tuple(range(max(array.ndim - 3, 0))))  # drop leading page axes
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar-separate TIFF: samples first
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise errors.InputError(f"{name}: unsupported TIFF layout {array.shape}; "
                         "expected (H, W) or (H, W, 1-4 samples)")
    if not (array.dtype in (np.uint8, np.uint16) or np.issubdtype(array.dtype, np.floating)):
        raise errors.InputError(f"{name}: unsupported TIFF sample type {array.dtype}; "
                         "expected 8/16-bit unsigned or float")
    height, width, samples = array.shape
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    has_alpha = samples in (2, 4)
    artwork = np.empty((height, width), dtype=bool) if has_alpha else None
    for y0 in range(0, height, ROW_CHUNK):  # chunked: the source may be a memory map
        chunk = _to_unit_range(np.asarray(array[y0:y0 + ROW_CHUNK]))
        colour = chunk[..., :3] if samples >= 3 else np.repeat(chunk[..., :1], 3, axis=2)
        if has_alpha:
            alpha = chunk[..., -1:]
            colour = colour * alpha + (1.0 - alpha)
            artwork[y0:y0 + ROW_CHUNK] = alpha[..., 0] > 0
        rgb[y0:y0 + ROW_CHUNK] = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Scan(rgb, artwork)


def _to_unit_range(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.uint8:
        return samples.astype(np.float32) / 255.0
    if samples.dtype == np.uint16:
        return samples.astype(np.float32) / 65535.0
    return np.clip(samples.astype(np.float32), 0.0, 1.0)


@dataclass(frozen=True)
class ScanSource:
    """One input to predict: ``name`` is its output folder, ``label`` what errors call it."""

    name: str
    label: str
    load: Callable[[], Scan]


def iter_sources(path: str | Path) -> Iterator[ScanSource]:
    """The scans under ``path``: an image file, a folder of images, a data folder or parquet shards.

    A folder holding ``images/`` is a data folder (its ``images/`` are read); a folder holding
    ``*.parquet`` files (searched recursively, as HF snapshots nest them) or a ``.parquet`` file is
    read as HF shards (columns ``id`` and ``image``). Other folders contribute their files with an
    image suffix, not recursively. Nothing is decoded here: a source fails only when loaded.
    """
    path = Path(path)
    if not path.exists():
        raise errors.MissingInputError(f"{path}: input not found")
    if path.is_file():
        if path.suffix.lower() == ".parquet":
            yield from _parquet_sources(path)
        else:
            yield _file_source(path)
        return
    if (path / "images").is_dir():
        path = path / "images"
    shards = sorted(path.rglob("*.parquet"))
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not shards and not files:
        raise errors.InputError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                         "or parquet shards found")
    for shard in shards:
        yield from _parquet_sources(shard)
    for file in files:
        yield _file_source(file)


def file_source(path: Path, name: str | None = None) -> ScanSource:
    """One image file as a source (its output folder: ``name``, default the file's stem)."""
    return ScanSource(_safe_name(name or path.stem), str(path), lambda: read_scan(path))


def _file_source(path: Path) -> ScanSource:
    return ScanSource(_safe_name(path.stem), str(path), lambda: read_scan(path))


def _parquet_sources(shard: Path) -> Iterator[ScanSource]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(shard)
        missing = {"id", "image"} - set(parquet.schema_arrow.names)
        if missing:
            raise errors.InputError(f"missing column(s) {sorted(missing)}")
        for batch in parquet.iter_batches(batch_size=8, columns=["id", "image"]):
            for row in batch.to_pylist():
                label = f"{shard}:{row['id']}"
                data = (row["image"] or {}).get("bytes")
                yield ScanSource(_safe_name(str(row["id"])), label, _bytes_loader(data, label))
    except (OSError, ValueError, pa.ArrowException) as err:
        message = f"{shard}: cannot read parquet shard ({err})"
        yield ScanSource(_safe_name(shard.stem), str(shard), _failing_loader(message))


def _bytes_loader(data: bytes | None, label: str) -> Callable[[], Scan]:
    def load() -> Scan:
        if not data:
            raise errors.InputError(f"{label}: no image bytes")
        return scan_from_image(fileio.open_image(data, name=label))
    return load


def _failing_loader(message: str) -> Callable[[], Scan]:
    def load() -> Scan:
        raise errors.InputError(message)
    return load


def _safe_name(name: str) -> str:
    """A folder name from an image stem or dataset id (no path separators)."""
    return re.sub(r"[^\w.-]+", "_", name).strip(".") or "image"


# ----------------------------------------------------------------------------- the model


def resolve_device(name: str) -> torch.device:
    """``--device`` (auto, cpu, cuda) as training chooses it (:func:`heritage.training.engine.choose_device`)."""
    from heritage.training import engine

    return engine.choose_device(name)


def run_dtype(config: dict, device: torch.device) -> torch.dtype | None:
    """The autocast dtype the run trained with on ``device`` (:func:`heritage.training.engine.autocast_dtype` of its
    ``amp``; ``auto`` for runs that recorded none): a bf16-trained run is predicted in bf16."""
    from heritage.training import engine

    return engine.autocast_dtype(config.get("amp", "auto"), device)


def load_model(run_dir: str | Path, device: str | torch.device) -> tuple[torch.nn.Module, dict]:
    """The best checkpoint of a run folder (:func:`heritage.training.runs.load_best_checkpoint`), rebuilt with
    ``heritage.modeling.models`` and set to eval mode."""
    from heritage.modeling.models import build_model

    checkpoint = runs.load_best_checkpoint(run_dir)
    path, config = Path(run_dir) / runs.BEST_CHECKPOINT, checkpoint["config"]
    model = build_model(config["architecture"], config["encoder"], image_size=config["image_size"])
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        raise errors.InputError(f"{path}: its weights do not fit the {config['architecture']} / "
                                f"{config['encoder']} model its config names ({_first_line(err)})") from None
    return model.to(device).eval(), config


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]




def resolve_scale(scale: float | str, image_size: int, height: int, width: int,
                  working_resolution: str | int | None = None) -> float:
    """The resize factor for a scan. ``auto`` is the run's training scale: for a letterbox run
    (``working_resolution`` None) its longest side to the training ``image_size``; for a patch run the
    working resolution's (``native``: 1, N: longest side at most N px, as training cached the data)."""
    if scale == "auto":
        if working_resolution is None:
            return image_size / max(height, width)
        from heritage.data import scale as scales

        return float(scales.working_factor(max(height, width), working_resolution))
    factor = float(scale)
    if not factor > 0:
        raise errors.InputError(f"scale {scale!r}: must be 'auto' or a positive factor")
    return factor


def run_scale(run_dir: str | Path | None, config: dict) -> dict:
    """The run's scale, as :func:`predict_inputs`' keyword arguments: ``working_resolution`` (patch runs;
    None for letterbox ones, and runs from before sampling existed) and ``training_components``
    (``metrics.json``'s ``scale.components``, None when the run recorded none or there is no run)."""
    working = config.get("working_resolution", "native") if config.get("sampling") == "patch" else None
    metrics_path = None if run_dir is None else Path(run_dir) / runs.METRICS_FILE
    recorded = fileio.read_json(metrics_path).get("scale", {}) if metrics_path and metrics_path.is_file() else {}
    return {"working_resolution": working, "training_components": recorded.get("components")}


def scale_warnings(scale: float | str, training_components: dict | None) -> list[str]:
    """:func:`heritage.data.scale.vanishing_messages` for predicting at ``scale``, from the run's recorded
    training-split components (no data read): ``auto`` is the training scale, so its summary at the model's
    input; a factor rescales the stored-size summary, assuming scans at the run's data folder's resolution."""
    from heritage.data import scale as scales

    if not training_components:
        return []
    if scale == "auto":
        return scales.vanishing_messages(training_components["model_input"],
                                         "--scale auto (the run's training scale, its training split)")
    return scales.vanishing_messages(scales.rescaled(training_components["stored"], float(scale)),
                                     f"--scale {float(scale):g} (the run's training split, for scans at its data "
                                     "folder's resolution)")


def predict_scan(model: torch.nn.Module, scan: Scan, options: SlidingWindow, device: torch.device,
                 scale: float, progress: bool = True, desc: str | None = None) -> np.ndarray:
    """(H, W) uint8 label map of a scan at its full resolution, 255 where it is transparent.

    The scan is resized by ``scale`` for the model (area averaging when shrinking, bilinear when
    enlarging, as training's letterbox does) and the label map resized back with nearest
    neighbour, so class ids are never interpolated.
    """
    import cv2

    size = (max(1, round(scan.width * scale)), max(1, round(scan.height * scale)))
    image = scan.rgb
    if size != (scan.width, scan.height):  # as training's letterbox: area when shrinking
        image = cv2.resize(scan.rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    labels = predict_labels(model, image, options, device, progress=progress, desc=desc)
    if size != (scan.width, scan.height):
        labels = np.asarray(Image.fromarray(labels).resize((scan.width, scan.height),
                                                           Image.Resampling.NEAREST))
    if scan.artwork is not None:
        labels = np.where(scan.artwork, labels, np.uint8(taxonomy.IGNORE_INDEX))
    return labels


# ----------------------------------------------------------------------------- outputs


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


overlay = overlays.overlay  # one home for overlays: heritage.inference.overlays


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
                  dpi: float | None = None, settings: dict | None = None, provenance: str = "") -> dict:
    """Write mask.png, overlay.png, areas.csv and report.html for one scan; return its summary row.

    ``provenance`` is an HTML paragraph for the top of the report (:func:`provenance_html`).
    """
    out_dir = Path(out_dir)
    fileio.write_png(out_dir / "mask.png", labels)
    fileio.write_png(out_dir / "overlay.png", overlay(scan.rgb, labels))
    table = area_table(labels, dpi)
    write_csv(out_dir / "areas.csv", table)
    fileio.write_text(out_dir / "report.html",
                      render_report(name, source, scan.rgb, labels, table, settings or {}, provenance))
    return summary_row(name, source, labels.shape, table)


def write_csv(path: str | Path, table: pd.DataFrame) -> None:
    with fileio.atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def display_pair(rgb: np.ndarray, labels: np.ndarray,
                 max_side: int = PREVIEW_SIDE) -> tuple[np.ndarray, np.ndarray, int]:
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
    return rgb, overlay(rgb, labels, outline=1 + factor // 6), factor


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
Damage classes are blended at {OVERLAY_ALPHA:.0%} opacity with a dark outline; Clean and Background are
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


# ----------------------------------------------------------------------------- command line


def _scale_arg(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        factor = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected 'auto' or a positive number") from None
    if not factor > 0:
        raise argparse.ArgumentTypeError(f"{value!r}: the scale must be positive")
    return factor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path,
                        help=f"run folder holding {runs.BEST_CHECKPOINT}")
    parser.add_argument("--input", required=True, type=Path,
                        help="an image, a folder of images, a data folder (images/) or parquet shards")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--tile", type=int, default=None,
                        help="tile side in pixels (default: the run's image_size, 384 in the paper)")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction (default 0.25)")
    parser.add_argument("--batch", type=int, default=8, help="tiles per forward pass (default 8)")
    parser.add_argument("--tta", choices=("none", "flip"), default="none",
                        help="test-time augmentation: flip averages horizontal and vertical flips")
    parser.add_argument("--scale", type=_scale_arg, default="auto",
                        help="resize factor applied to each scan before tiling; 'auto' (default) is the "
                             "scale the model was trained at: a letterbox run's image_size as the longest "
                             "side, a patch run's working resolution; 1 = native resolution")
    parser.add_argument("--dpi", type=float, default=None,
                        help="scan resolution, to report areas in mm² (px * (25.4/dpi)²)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--window", choices=WINDOWS, default="hann", help="tile blending window")


def predict_inputs(model: torch.nn.Module, image_size: int, inputs: str | Path, out_dir: str | Path,
                   options: SlidingWindow, device: torch.device, scale: float | str = "auto",
                   dpi: float | None = None, settings: dict | None = None,
                   progress: bool = True, provenance: str = "", working_resolution: str | int | None = None,
                   training_components: dict | None = None) -> list[tuple[str, str]]:
    """Predict every scan under ``inputs`` into ``out_dir``; returns the (input, error) failures.

    A scan that cannot be read is reported and skipped, the others are still predicted;
    ``out_dir/summary.csv`` gets one row per input, failed ones with their error. ``working_resolution``
    and ``training_components`` are the run's (:func:`run_scale`): ``auto``'s scale for a patch run, and
    the warning when ``scale`` shrinks a class's median training component below a pixel.
    """
    return predict_sources(model, image_size, iter_sources(inputs), out_dir, options, device, scale, dpi,
                           settings, progress, provenance, working_resolution, training_components)


def predict_sources(model: torch.nn.Module, image_size: int, sources: Iterable[ScanSource],
                    out_dir: str | Path, options: SlidingWindow, device: torch.device,
                    scale: float | str = "auto", dpi: float | None = None, settings: dict | None = None,
                    progress: bool = True, provenance: str = "", working_resolution: str | int | None = None,
                    training_components: dict | None = None) -> list[tuple[str, str]]:
    """:func:`predict_inputs` for given sources (e.g. chosen samples of a data folder)."""
    import pandas as pd

    for message in scale_warnings(scale, training_components):
        print(f"predict: warning: {message}", file=sys.stderr)
    out_dir = Path(out_dir)
    rows: list[dict] = []
    failures: list[tuple[str, str]] = []
    used: dict[str, str] = {}
    for source in sources:
        try:
            if source.name in used:
                raise errors.InputError(f"{source.label}: output folder {source.name!r} is already used by "
                                 f"{used[source.name]}; rename one of them")
            used[source.name] = source.label
            scan = source.load()
            factor = resolve_scale(scale, image_size, scan.height, scan.width, working_resolution)
            labels = predict_scan(model, scan, options, device, factor, progress=progress,
                                  desc=source.name)
            try:
                rows.append(write_outputs(out_dir / source.name, source.name, source.label, scan, labels,
                                          dpi, {**(settings or {}), "scale factor used": f"{factor:.4g}"},
                                          provenance))
            except errors.HeritageError:
                raise
            except OSError as err:  # e.g. <out>/<name> is a file: this scan fails, not the others
                raise errors.OutputError(_write_error(out_dir / source.name, err)) from None
        except (OSError, ValueError) as err:  # a bad input must not stop the rest of the folder
            message = _naming(source.label, err)
            failures.append((source.label, message))
            rows.append({"image": source.name, "source": source.label, "error": message})
            print(f"predict: skipped {message}", file=sys.stderr)
    try:
        write_csv(out_dir / "summary.csv", pd.DataFrame(rows))
    except errors.HeritageError:
        raise
    except OSError as err:
        raise errors.OutputError(_write_error(out_dir / "summary.csv", err)) from None
    return failures


def _naming(label: str, err: BaseException) -> str:
    """``err`` as one line that names the input once (most messages already start with it)."""
    if isinstance(err, OSError) and not isinstance(err, errors.HeritageError):
        message = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    else:
        message = str(err)
    return message if message.startswith(label) else f"{label}: {message}"


def _write_error(path: Path, err: OSError) -> str:
    return f"{err.filename or path}: cannot write ({err.strerror or err})"


def check_run_folder(run: str | Path) -> None:
    """Refuse a missing run folder or checkpoint up front, naming the path (before the model loads)."""
    run = Path(run)
    if not run.exists():
        raise errors.MissingInputError(f"--run {run}: run folder not found")
    if not run.is_dir():
        raise errors.InputError(f"--run {run}: not a folder (give the run folder holding {runs.BEST_CHECKPOINT})")
    path = run / runs.BEST_CHECKPOINT
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: no best checkpoint (is {run} a finished run folder?)")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise errors.InputError(f"{path}: cannot read checkpoint ({err.strerror or err})") from None


def check_inputs(inputs: str | Path) -> None:
    """Refuse, up front, an input without scans and a single scan file that cannot be read.

    Only headers are read (free on large scans). The scans of a folder or shard are decoded one at a
    time later; one that fails then is skipped with one line naming it.
    """
    path = Path(inputs)
    try:
        sources = iter_sources(path)
        first = next(sources, None)
        sources.close()
    except PermissionError as err:
        raise errors.InputError(f"{err.filename or path}: cannot be read ({err.strerror})") from None
    if first is None:
        raise errors.InputError(f"{path}: no scans found (an empty parquet shard?)")
    if path.is_file():
        _check_header(path)


def _check_header(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tifffile

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            pq.ParquetFile(path).close()
        elif suffix in TIFF_SUFFIXES:
            with tifffile.TiffFile(path):
                pass
        else:
            with Image.open(path):  # the header only: decoding waits until the model is loaded
                pass
    except PermissionError as err:
        raise errors.InputError(f"{path}: cannot be read ({err.strerror})") from None
    except (OSError, SyntaxError, ValueError, pa.ArrowException) as err:  # TiffFileError is a ValueError
        kind = {".parquet": "parquet shard"}.get(suffix, "TIFF" if suffix in TIFF_SUFFIXES else "image")
        raise errors.InputError(f"{path}: cannot read {kind} ({err})") from None


def check_output_folder(out: str | Path) -> None:
    """Refuse, before any work, an ``--out`` that cannot hold the results: one line naming it.

    ``out`` must be a folder or creatable (its nearest existing parent is a folder), and writable:
    a temporary file is created and removed there, which also tells the truth for root, ACLs and
    read-only mounts. Nothing is created otherwise.
    """
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise errors.OutputError(f"--out {out}: exists and is not a folder")
    existing = out
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise errors.OutputError(f"--out {out}: cannot be created: {existing} is not a folder")
    if (out / "summary.csv").is_dir():
        raise errors.OutputError(f"--out {out}: {out / 'summary.csv'} is a folder; remove it or choose "
                                 "another --out")
    try:
        fd, probe = tempfile.mkstemp(prefix=".heritage-write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        where = "is not writable" if existing == out else f"cannot be created: {existing} is not writable"
        raise errors.OutputError(f"--out {out}: {where} ({err.strerror or err})") from None


def check_tile(encoder: str, tile: int, image_size: int) -> None:
    """Refuse a tile the run's encoder cannot take (fixed-size attention encoders need image_size)."""
    from heritage.modeling.models import check_image_size, encoder_spec

    if encoder_spec(encoder).fixed_input_size and tile != image_size:
        raise errors.InputError(f"tile {tile}: encoder {encoder!r} was built for {image_size} px inputs "
                         f"(fixed attention windows); use --tile {image_size}")
    check_image_size(encoder, tile)


def main(args: argparse.Namespace) -> int:
    if args.dpi is not None and not args.dpi > 0:
        raise errors.InputError(f"--dpi {args.dpi}: must be positive")
    # every input and the output first: a mistake is not reported after the model has loaded
    SlidingWindow(tile=1 if args.tile is None else args.tile, overlap=args.overlap, window=args.window,
                  batch_size=args.batch)  # the tiling settings (the default tile comes with the run)
    check_run_folder(args.run)
    check_inputs(args.input)
    check_output_folder(args.out)
    device = resolve_device(args.device)
    model, config = load_model(args.run, device)
    image_size = int(config["image_size"])
    options = SlidingWindow(tile=image_size if args.tile is None else args.tile, overlap=args.overlap,
                            window=args.window, batch_size=args.batch, tta=args.tta == "flip",
                            dtype=run_dtype(config, device))
    check_tile(config["encoder"], options.tile, image_size)
    settings = {"run": args.run, "architecture": config["architecture"], "encoder": config["encoder"],
                "training image_size": image_size, "scale": args.scale, "tile": options.tile,
                "overlap": options.overlap, "window": options.window, "tta": args.tta,
                "dpi": args.dpi or "not given", "device": device.type,
                "precision": str(options.dtype).removeprefix("torch.") if options.dtype else "float32"}
    failures = predict_inputs(model, image_size, args.input, args.out, options, device, args.scale,
                              args.dpi, settings, provenance=provenance_html(args.run), **run_scale(args.run, config))
    print(f"predict: damage maps in {args.out}; summary in {args.out / 'summary.csv'}", file=sys.stderr)
    if failures:  # each was reported when skipped; the last line says how many
        named = ", ".join(label for label, _ in failures[:3]) + (", ..." if len(failures) > 3 else "")
        raise errors.CommandFailed(f"{len(failures)} input(s) failed ({named}); the others were "
                                   f"predicted; errors in {args.out / 'summary.csv'}")
    return 0
