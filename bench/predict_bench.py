"""Time and peak memory of ``heritage.predict`` on one large synthetic scan, on CPU.

    python bench/predict_bench.py --megapixels 50 --model small_cnn
    python bench/predict_bench.py --megapixels 12 --model unet_convnext_tiny

Each call predicts one scan at native resolution (``--scale 1``: the case where memory matters),
writes its outputs to a temporary folder, and appends one record to
``bench/results/predict-cpu-<date>.json``. Run one configuration per process: ``ru_maxrss`` is the
peak of the whole process.

Memory is reported three ways: ``ru_maxrss`` (the process peak, torch included),
``tracemalloc`` (Python and numpy allocations only; torch's CPU allocator is invisible to it), and
the analytic sizes of the band accumulator versus the full-resolution 16-class float map that
tiled inference avoids.
"""

from __future__ import annotations

import argparse
import json
import datetime as dt
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heritage import fileio, models, predict, taxonomy

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


def synthetic_scan(megapixels: float, seed: int = 0) -> predict.Scan:
    """A smooth 3:2 RGB scan (gradients and rings with a little noise: PNG-compressible like a photo)."""
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
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
    return predict.Scan(rgb, None)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=50.0)
    parser.add_argument("--model", choices=("unet_convnext_tiny", "small_cnn"), default="small_cnn")
    parser.add_argument("--tile", type=int, default=384)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build(args.model, args.tile)
    scan = synthetic_scan(args.megapixels)
    options = predict.SlidingWindow(tile=args.tile, overlap=args.overlap, batch_size=args.batch)
    tiles = (len(predict.tile_starts(max(scan.height, args.tile), args.tile, options.stride))
             * len(predict.tile_starts(max(scan.width, args.tile), args.tile, options.stride)))
    rss_before = peak_rss_mb()
    load_before = os.getloadavg()[0]

    tracemalloc.start()
    start = time.perf_counter()
    labels = predict.predict_scan(model, scan, options, device, scale=1.0, desc="bench")
    predict_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        start = time.perf_counter()
        predict.write_outputs(Path(tmp) / "scan", "scan", "synthetic", scan, labels)
        write_s = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    floats = 4
    record = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "model": args.model,
        "model_note": ("heritage.models UNet, ConvNeXt-Tiny encoder, random weights"
                       if args.model == "unet_convnext_tiny" else SmallCNN.__doc__),
        "parameters": models.count_parameters(model),
        "height": scan.height, "width": scan.width, "megapixels": scan.height * scan.width / 1e6,
        "scale": 1.0, "tile": args.tile, "overlap": args.overlap, "batch": args.batch, "tiles": tiles,
        "predict_s": round(predict_s, 2), "tiles_per_s": round(tiles / predict_s, 3),
        "write_outputs_s": round(write_s, 2),
        "rss_before_predict_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "tracemalloc_peak_mb": round(traced_peak / MB, 1),
        "image_uint8_mb": round(scan.rgb.nbytes / MB, 1),
        "band_accumulator_mb": round((taxonomy.NUM_CLASSES + 1) * args.tile * scan.width * floats / MB, 1),
        "full_resolution_float_map_mb": round(taxonomy.NUM_CLASSES * scan.height * scan.width * floats / MB, 1),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_at_start": round(load_before, 2),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
    }
    path = RESULTS / f"predict-cpu-{dt.date.today().isoformat()}.json"
    records = fileio.read_json(path) if path.exists() else []
    fileio.write_json(path, [*records, record])
    print(json.dumps(record, indent=2))
    print(f"appended to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
