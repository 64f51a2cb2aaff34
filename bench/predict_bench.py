"""Time and peak memory of ``heritage.inference.predict`` on one large synthetic scan, on CPU.

    python bench/predict_bench.py --megapixels 50 --model small_cnn
    python bench/predict_bench.py --megapixels 12 --model unet_convnext_tiny
    python bench/predict_bench.py --mode orientation --shapes 50x2500 2500x50 50x20000 20000x50 \
        --compare-with /tmp/predict_before.py   # e.g. from `git show <rev>:heritage/inference/predict.py`

``--mode orientation`` times ``predict_scan`` at ``--scale 1`` on WxH and HxW scans of the same
pixels, interleaved (round-robin, the order rotating each round) so that a shared, noisy machine
slows every shape and implementation alike; with ``--compare-with`` an older ``heritage/inference/predict.py``
is timed in the same rounds (A/B). It counts the model's forward calls and tiles, and writes
``bench/results/predict-orientation-<cpu>-<date>.json``.

Each call predicts one scan at native resolution (``--scale 1``: the case where memory matters),
writes its outputs to a temporary folder, and appends one record to
``bench/results/predict-cpu-<date>.json``. Run one configuration per process: ``ru_maxrss`` is the
peak of the whole process. ``--shape 50x20000`` predicts a WIDTHxHEIGHT scan instead, and
``--compare-with`` an older ``heritage/inference/predict.py`` instead of the current one.

Memory is reported three ways: ``ru_maxrss`` (the process peak, torch included),
``tracemalloc`` (Python and numpy allocations only; torch's CPU allocator is invisible to it), and
the analytic sizes of the band accumulator versus the full-resolution 16-class float map that
tiled inference avoids.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heritage import fileio
from heritage.data import taxonomy
from heritage.inference import damage_report, predict
from heritage.inference.scans import Scan
from heritage.modeling import models, tiling
from heritage.training import runs
from train_bench import result_path  # bench/ is on sys.path when this runs as a script

RESULTS = Path(__file__).resolve().parent / "results"
MB = 1024 * 1024


class SmallCNN(nn.Module):
    """A 3-layer convolutional net (~3k parameters): isolates the tiling/blending overhead."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, taxonomy.NUM_CLASSES, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def build(name: str, tile: int) -> nn.Module:
    if name == "small_cnn":
        return SmallCNN().eval()
    return models.build_model("unet", "convnext_tiny", image_size=tile).eval()


def synthetic_scan(megapixels: float, seed: int = 0) -> Scan:
    """A smooth 3:2 RGB scan (gradients and rings with a little noise: PNG-compressible like a photo)."""
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    return Scan(synthetic_rgb(height, width, seed), None)


def synthetic_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    x = np.arange(width, dtype=np.float32)
    for y0 in range(0, height, 1024):  # row chunks keep the float temporaries small
        y = np.arange(y0, min(y0 + 1024, height), dtype=np.float32)[:, None]
        rings = np.sin(np.hypot(x - width / 2, y - height / 2) / 40.0)
        base = 128 + 60 * rings + 40 * np.cos(x / 300.0) * np.sin(y / 500.0)
        noise = rng.normal(0, 4, base.shape)
        for c, shift in enumerate((0, 20, -20)):
            rgb[y0:y0 + len(y), :, c] = np.clip(base + shift + noise, 0, 255).astype(np.uint8)
    return rgb


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("scan", "orientation"), default="scan")
    parser.add_argument("--megapixels", type=float, default=50.0, help="scan mode: the scan's size")
    parser.add_argument("--shape", type=shape_arg, default=None,
                        help="scan mode: WIDTHxHEIGHT instead of a 3:2 scan of --megapixels")
    parser.add_argument("--model", choices=("unet_convnext_tiny", "small_cnn"), default="small_cnn")
    parser.add_argument("--tile", type=int, default=384)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shapes", nargs="+", type=shape_arg, default=None,
                        help="orientation mode: WxH shapes; each is also timed as HxW "
                             "(default 50x2500 50x20000)")
    parser.add_argument("--rounds", type=int, default=3, help="orientation mode: interleaved rounds")
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="an older heritage/inference/predict.py: timed in the same rounds (orientation "
                             "mode) or instead of the current one (scan mode, one per process)")
    args = parser.parse_args()
    if args.mode == "orientation":
        return orientation(args)

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build(args.model, args.tile)
    scan = (synthetic_scan(args.megapixels) if args.shape is None
            else Scan(synthetic_rgb(args.shape[1], args.shape[0]), None))
    module = load_predict_module(args.compare_with) if args.compare_with else predict
    options = window_class(module)(tile=args.tile, overlap=args.overlap, batch_size=args.batch)
    tiles = (len(tiling.tile_starts(max(scan.height, args.tile), args.tile, options.stride))
             * len(tiling.tile_starts(max(scan.width, args.tile), args.tile, options.stride)))
    rss_before = peak_rss_mb()
    load_before = os.getloadavg()[0]

    tracemalloc.start()
    start = time.perf_counter()
    labels = module.predict_scan(model, scan, options, device, scale=1.0, desc="bench")
    predict_s = time.perf_counter() - start
    write_outputs = damage_report.write_outputs if module is predict else module.write_outputs  # older: its own
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        start = time.perf_counter()
        write_outputs(Path(tmp) / "scan", "scan", "synthetic", scan, labels)
        write_s = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    floats = 4
    record = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "model": args.model,
        "model_note": ("heritage.modeling.models UNet, ConvNeXt-Tiny encoder, random weights"
                       if args.model == "unet_convnext_tiny" else SmallCNN.__doc__),
        "parameters": models.count_parameters(model),
        "predict_module": str(args.compare_with) if args.compare_with else "current",
        "git_commit": runs.git_commit(),
        "height": scan.height, "width": scan.width, "megapixels": scan.height * scan.width / 1e6,
        "scale": 1.0, "tile": args.tile, "overlap": args.overlap, "batch": args.batch, "tiles": tiles,
        "predict_s": round(predict_s, 2), "tiles_per_s": round(tiles / predict_s, 3),
        "write_outputs_s": round(write_s, 2),
        "rss_before_predict_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "tracemalloc_peak_mb": round(traced_peak / MB, 1),
        "image_uint8_mb": round(scan.rgb.nbytes / MB, 1),
        "band_accumulator_mb": round((taxonomy.NUM_CLASSES + 1) * floats / MB * (  # before: padded width
            tiling.band_rows(scan.height, scan.width, args.tile, args.batch) * scan.width
            if module is predict else args.tile * max(scan.width, args.tile)), 1),
        "full_resolution_float_map_mb": round(taxonomy.NUM_CLASSES * scan.height * scan.width * floats / MB, 1),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_at_start": round(load_before, 2),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
    }
    append_record(RESULTS / f"predict-cpu-{dt.date.today().isoformat()}.json", record, shown=record)
    return 0


def append_record(path: Path, record: dict, shown: dict) -> None:
    """Add ``record`` to the JSON list at ``path`` (earlier measurements stay), print ``shown``."""
    records = fileio.read_json(path) if path.exists() else []
    fileio.write_json(path, [*records, record])
    print(json.dumps(shown, indent=2))
    print(f"appended to {path}", file=sys.stderr)


def shape_arg(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", value)
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r}: expected WIDTHxHEIGHT, e.g. 50x2500")
    return int(match[1]), int(match[2])


def load_predict_module(path: Path):
    """An older ``heritage/inference/predict.py`` imported under its own name, beside the current one."""
    spec = importlib.util.spec_from_file_location("predict_compared", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def window_class(module) -> type:
    """The ``SlidingWindow`` an implementation's ``predict_scan`` takes: the current one's lives in
    :mod:`heritage.modeling.tiling`; an older single-file ``predict.py`` carries its own."""
    return tiling.SlidingWindow if module is predict else module.SlidingWindow


def orientation(args: argparse.Namespace) -> int:
    """Time WxH against HxW at --scale 1, interleaved, for the current (and an older) predict."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build(args.model, args.tile)
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(int(inputs[0].shape[0])))
    implementations = {"current": predict}
    if args.compare_with:
        implementations["compared"] = load_predict_module(args.compare_with)
    pairs = args.shapes or [(50, 2500), (50, 20000)]
    shapes = [shape for w, h in pairs for shape in ((w, h), (h, w))]  # (width, height)
    scans = {shape: Scan(synthetic_rgb(shape[1], shape[0]), None) for shape in set(shapes)}
    options = {name: window_class(module)(tile=args.tile, overlap=args.overlap, batch_size=args.batch)
               for name, module in implementations.items()}
    for name, module in implementations.items():  # warm-up: first calls pay for imports and allocator
        module.predict_scan(model, Scan(synthetic_rgb(64, 64), None), options[name], device,
                            scale=1.0, progress=False)
    jobs = [(name, shape) for shape in shapes for name in implementations]
    load_before = os.getloadavg()[0]
    measurements = []
    for round_ in range(args.rounds):
        shift = round_ % len(jobs)  # rotate the order so no job always runs first or last
        for name, shape in jobs[shift:] + jobs[:shift]:
            calls.clear()
            start = time.perf_counter()
            implementations[name].predict_scan(model, scans[shape], options[name], device, scale=1.0,
                                               progress=False)
            seconds = time.perf_counter() - start
            measurements.append({"implementation": name, "width": shape[0], "height": shape[1],
                                 "round": round_, "predict_s": round(seconds, 3),
                                 "model_calls": len(calls), "tiles": sum(calls)})
            print(f"{name:>8s} {shape[0]}x{shape[1]}: {seconds:.2f} s, {len(calls)} model calls, "
                  f"{sum(calls)} tiles", file=sys.stderr, flush=True)
    summary = []
    for name in implementations:
        for w, h in pairs:
            median = {}
            for shape in ((w, h), (h, w)):
                times = [m["predict_s"] for m in measurements
                         if m["implementation"] == name and (m["width"], m["height"]) == shape]
                median[shape] = statistics.median(times)
            one = next(m for m in measurements if m["implementation"] == name
                       and (m["width"], m["height"]) == (w, h))
            other = next(m for m in measurements if m["implementation"] == name
                         and (m["width"], m["height"]) == (h, w))
            summary.append({
                "implementation": name, "shape": f"{w}x{h}", "transposed": f"{h}x{w}",
                "median_s": round(median[(w, h)], 3), "transposed_median_s": round(median[(h, w)], 3),
                "transposed_over_shape": round(median[(h, w)] / median[(w, h)], 3),
                "model_calls": one["model_calls"], "transposed_model_calls": other["model_calls"],
                "tiles": one["tiles"], "transposed_tiles": other["tiles"],
            })
    record = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "mode": "orientation", "model": args.model, "parameters": models.count_parameters(model),
        "shapes_note": "WIDTHxHEIGHT; each shape timed as given and transposed, predict_scan at scale 1 "
                       "(tiling, model, blending, argmax; no file writes)",
        "timing_note": ("interleaved: every round runs each implementation on each shape once, the "
                        "order rotating per round, on a machine shared with other CPU-heavy jobs: "
                        "compare medians within this record, not across records"),
        "implementations": {name: getattr(module, "__file__", None)
                            for name, module in implementations.items()},
        "git_commit": runs.git_commit(),  # "current" is this checkout's heritage/inference/predict.py
        "tile": args.tile, "overlap": args.overlap, "batch": args.batch, "rounds": args.rounds,
        "summary": summary, "measurements": measurements,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_at_start": round(load_before, 2), "load_average_at_end": round(os.getloadavg()[0], 2),
        "cpu": runs.cpu_name(), "torch": torch.__version__, "python": platform.python_version(),
    }
    path = result_path(RESULTS, runs.cpu_name(), dt.date.today().isoformat(), prefix="predict-orientation-")
    append_record(path, record, shown=summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
