"""Damage maps for whole artworks: tiled full-resolution inference with a trained run.

``python -m heritage predict --run RUN_DIR --input PATH --out DIR`` reads one image, a folder of
images, a data folder (``<data>/images/``) or HF parquet shards (:mod:`heritage.inference.scans`), and
writes for each image ``<out>/<name>/``: ``mask.png`` (class ids, 255 where the input is transparent),
``overlay.png`` (damage in the ARTeFACT palette over the scan), ``areas.csv`` (pixels, % of the artwork
and, with ``--dpi``, mm² per class) and ``report.html`` (:mod:`heritage.inference.damage_report`);
``<out>/summary.csv`` has one row per image. This module is the model side and the command.

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
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
from PIL import Image

from heritage import errors, fileio
from heritage.data import taxonomy
from heritage.inference import damage_report, scans
from heritage.modeling import registry, thin_prior
from heritage.modeling.tiling import WINDOWS, SlidingWindow, predict_labels
from heritage.training import runs

if TYPE_CHECKING:  # torch is imported lazily so that `--help` stays fast
    import torch


# -- the model -------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``--device`` (auto, cpu, cuda) as training chooses it (:func:`heritage.training.devices.choose_device`)."""
    from heritage.training import devices

    return devices.choose_device(name)


def run_dtype(config: dict, device: torch.device) -> torch.dtype | None:
    """The autocast dtype the run trained with on ``device`` (:func:`heritage.training.devices.autocast_dtype` of its
    ``amp``; ``auto`` for runs that recorded none): a bf16-trained run is predicted in bf16."""
    from heritage.training import devices

    return devices.autocast_dtype(config.get("amp", "auto"), device)


def load_model(run_dir: str | Path, device: str | torch.device) -> tuple[torch.nn.Module, dict]:
    """The best checkpoint of a run folder (:func:`heritage.training.runs.load_best_checkpoint`), rebuilt with
    ``heritage.modeling.models`` and set to eval mode."""
    from heritage.modeling.models import build_run_model

    checkpoint = runs.load_best_checkpoint(run_dir)
    path, config = Path(run_dir) / runs.BEST_CHECKPOINT, checkpoint["config"]
    model = build_run_model(config)
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


def run_thin_factor(run_dir: str | Path) -> float:
    """The thin factor a run's test part was scored with (:mod:`heritage.modeling.thin_prior`, chosen on
    validation, from ``metrics.json``): 1 for a run that chose none or has no metrics."""
    metrics_path = Path(run_dir) / runs.METRICS_FILE
    return thin_prior.recorded_factor(fileio.read_json(metrics_path) if metrics_path.is_file() else {})


def run_scale(run_dir: str | Path | None, config: dict) -> dict:
    """The run's scale, as :class:`PredictOptions`' keyword arguments: ``working_resolution`` (patch runs;
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


def predict_scan(model: torch.nn.Module, scan: scans.Scan, options: SlidingWindow, device: torch.device,
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

# -- command line ----------------------------------------------------------------------------------


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
    parser.add_argument("--tta", choices=registry.TTA_MODES, default="none",
                        help="test-time augmentation: flip averages horizontal and vertical flips")
    parser.add_argument("--scale", type=_scale_arg, default="auto",
                        help="resize factor applied to each scan before tiling; 'auto' (default) is the "
                             "scale the model was trained at: a letterbox run's image_size as the longest "
                             "side, a patch run's working resolution; 1 = native resolution")
    parser.add_argument("--dpi", type=float, default=None,
                        help="scan resolution, to report areas in mm² (px * (25.4/dpi)²)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--window", choices=WINDOWS, default="hann", help="tile blending window")


@dataclass(frozen=True)
class PredictOptions:
    """How :func:`predict_inputs` treats each scan, beyond the tiling (:class:`SlidingWindow`).

    ``scale``: ``auto`` or a resize factor (:func:`resolve_scale`); ``dpi``, ``settings`` and
    ``provenance``: what each report says (:class:`heritage.inference.damage_report.ReportOptions`);
    ``progress``: a progress bar per scan; ``working_resolution`` and ``training_components``: the
    run's (:func:`run_scale`): ``auto``'s scale for a patch run, and the warning when ``scale`` shrinks
    a class's median training component below a pixel.
    """

    scale: float | str = "auto"
    dpi: float | None = None
    settings: dict = field(default_factory=dict)
    progress: bool = True
    provenance: str = ""
    working_resolution: str | int | None = None
    training_components: dict | None = None


def predict_inputs(model: torch.nn.Module, image_size: int, inputs: str | Path, out_dir: str | Path,
                   window: SlidingWindow, device: torch.device,
                   options: PredictOptions = PredictOptions()) -> list[tuple[str, str]]:
    """Predict every scan under ``inputs`` into ``out_dir``; returns the (input, error) failures.

    A scan that cannot be read is reported and skipped, the others are still predicted;
    ``out_dir/summary.csv`` gets one row per input, failed ones with their error.
    """
    return predict_sources(model, image_size, scans.iter_sources(inputs), out_dir, window, device, options)


def predict_sources(model: torch.nn.Module, image_size: int, sources: Iterable[scans.ScanSource],
                    out_dir: str | Path, window: SlidingWindow, device: torch.device,
                    options: PredictOptions = PredictOptions()) -> list[tuple[str, str]]:
    """:func:`predict_inputs` for given sources (e.g. chosen samples of a data folder)."""
    import pandas as pd

    for message in scale_warnings(options.scale, options.training_components):
        print(f"predict: warning: {message}", file=sys.stderr)
    out_dir = Path(out_dir)
    rows: list[dict] = []
    failures: list[tuple[str, str]] = []
    used: dict[str, str] = {}
    try:
        for source in sources:
            try:
                if source.name in used:
                    raise errors.InputError(f"{source.label}: output folder {source.name!r} is already used by "
                                     f"{used[source.name]}; rename one of them")
                used[source.name] = source.label
                scan = source.load()
                factor = resolve_scale(options.scale, image_size, scan.height, scan.width,
                                       options.working_resolution)
                labels = predict_scan(model, scan, window, device, factor, progress=options.progress,
                                      desc=source.name)
                report = damage_report.ReportOptions(
                    options.dpi, {**options.settings, "scale factor used": f"{factor:.4g}"}, options.provenance)
                try:
                    rows.append(damage_report.write_outputs(out_dir / source.name, source.name, source.label, scan,
                                                            labels, report))
                except errors.HeritageError:
                    raise
                except OSError as err:  # e.g. <out>/<name> is a file: this scan fails, not the others
                    raise fileio.write_error(out_dir / source.name, err) if fileio.is_machine_fault(err) \
                        else errors.OutputError(_write_error(out_dir / source.name, err)) from None
            except (OSError, ValueError) as err:  # a bad input must not stop the rest of the folder
                if isinstance(err, errors.MachineError) or fileio.is_machine_fault(err):
                    raise  # a full disk is not this scan's fault: the next ones would fail the same way
                message = _naming(source.label, err)
                failures.append((source.label, message))
                rows.append({"image": source.name, "source": source.label, "error": message})
                print(f"predict: skipped {message}", file=sys.stderr)
    except BaseException:  # stopped (a full disk, Ctrl-C): summary.csv still lists what was done
        with contextlib.suppress(OSError):  # the error on its way out says why it stopped
            damage_report.write_csv(out_dir / "summary.csv", pd.DataFrame(rows))
        raise
    try:
        damage_report.write_csv(out_dir / "summary.csv", pd.DataFrame(rows))
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
        sources = scans.iter_sources(path)
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
        elif suffix in scans.TIFF_SUFFIXES:
            with tifffile.TiffFile(path):
                pass
        else:
            fileio.open_lazy(path).close()  # the header only: decoding waits until the model is loaded
    except PermissionError as err:
        raise errors.InputError(f"{path}: cannot be read ({err.strerror})") from None
    except (OSError, SyntaxError, ValueError, pa.ArrowException) as err:  # TiffFileError is a ValueError
        kind = {".parquet": "parquet shard"}.get(suffix, "TIFF" if suffix in scans.TIFF_SUFFIXES else "image")
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
        # a read-only or full file system is the machine's (exit 74), a folder without permission the user's
        kind = errors.MachineError if fileio.is_machine_fault(err) else errors.OutputError
        raise kind(f"--out {out}: {where} ({err.strerror or err})") from None


def check_tile(encoder: str, tile: int, image_size: int) -> None:
    """Refuse a tile the run's encoder cannot take (fixed-size attention encoders need image_size)."""
    if registry.encoder_spec(encoder).fixed_input_size and tile != image_size:
        raise errors.InputError(f"tile {tile}: encoder {encoder!r} was built for {image_size} px inputs "
                         f"(fixed attention windows); use --tile {image_size}")
    registry.check_image_size(encoder, tile)


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
    thin_factor = run_thin_factor(args.run)
    window = SlidingWindow(tile=image_size if args.tile is None else args.tile, overlap=args.overlap,
                           window=args.window, batch_size=args.batch, tta=args.tta == "flip",
                           dtype=run_dtype(config, device), class_scale=thin_prior.class_scale(thin_factor))
    check_tile(config["encoder"], window.tile, image_size)
    settings = {"run": args.run, "architecture": config["architecture"], "encoder": config["encoder"],
                "training image_size": image_size, "scale": args.scale, "tile": window.tile,
                "overlap": window.overlap, "window": window.window, "tta": args.tta,
                "dpi": args.dpi or "not given", "device": device.type,
                "precision": str(window.dtype).removeprefix("torch.") if window.dtype else "float32",
                "thin factor": f"{thin_factor:g}" + (" (the run's, chosen on validation)" if thin_factor != 1 else "")}
    failures = predict_inputs(model, image_size, args.input, args.out, window, device,
                              PredictOptions(scale=args.scale, dpi=args.dpi, settings=settings,
                                             provenance=damage_report.provenance_html(args.run),
                                             **run_scale(args.run, config)))
    print(f"predict: damage maps in {args.out}; summary in {args.out / 'summary.csv'}", file=sys.stderr)
    if failures:  # each was reported when skipped; the last line says how many
        named = ", ".join(label for label, _ in failures[:3]) + (", ..." if len(failures) > 3 else "")
        raise errors.CommandFailed(f"{len(failures)} input(s) failed ({named}); the others were "
                                   f"predicted; errors in {args.out / 'summary.csv'}")
    return 0
