"""What per-image scores cost: the per-image confusion beside the dataset matrix, and the artwork bootstrap.

    python bench/per_image_bench.py

For label maps of a few sizes (random truth with Background, random prediction), it times
``heritage.training.evaluation._confusion`` (the per-image bincount that ``evaluate_images`` adds) against
``metrics.ConfusionMatrix.update`` (the dataset matrix it already accumulated) on the same pixels, on CPU,
median of ``--repeats``; then ``resampling.bootstrap_difference`` on ``--sources`` one-image artworks with
``resampling.RESAMPLES`` draws. Writes ``bench/results/per-image-<cpu>-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from heritage.training import evaluation, runs
from heritage import fileio
from heritage.modeling import metrics
from heritage.report import resampling
from heritage.data import taxonomy
from train_bench import result_path  # bench/ is on sys.path when this runs as a script

SHAPES = ((512, 512), (1365, 2048), (4000, 6000))


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def label_maps(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    truth = rng.integers(0, taxonomy.NUM_CLASSES, size=shape, dtype=np.uint8)
    truth[rng.random(shape) < 0.1] = taxonomy.IGNORE_INDEX
    return truth, rng.integers(0, taxonomy.NUM_CLASSES, size=shape, dtype=np.uint8)


def bench_confusion(shape: tuple[int, int], repeats: int) -> dict:
    truth, prediction = label_maps(shape, np.random.default_rng(0))
    matrix = metrics.ConfusionMatrix()
    target, predicted = torch.from_numpy(truth)[None], torch.from_numpy(prediction)[None]
    per_image = median_seconds(lambda: evaluation._confusion(truth, prediction), repeats)
    dataset = median_seconds(lambda: matrix.update(predicted, target), repeats)
    return {"height": shape[0], "width": shape[1], "per_image_confusion_s": per_image,
            "dataset_matrix_update_s": dataset, "ratio": per_image / dataset}


def bench_bootstrap(n_sources: int, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    confusions = rng.integers(0, 500, size=(2, n_sources, taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES))
    ids = [f"s{i:05d}" for i in range(n_sources)]
    a, b = (runs.per_image_table(ids, ids, c) for c in confusions)
    seconds = median_seconds(lambda: resampling.bootstrap_difference(a, b), repeats)
    return {"n_sources": n_sources, "n_resamples": resampling.RESAMPLES, "seconds": seconds}


def main() -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sources", type=int, nargs="+", default=[139, 700])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    cpu = runs.cpu_name()
    commit = runs.git_commit()
    record = {
        "benchmark": "per_image", "cpu": cpu, "torch_threads": torch.get_num_threads(), "git_commit": commit,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "repeats": args.repeats,
        "confusion": [bench_confusion(shape, args.repeats) for shape in SHAPES],
        "bootstrap": [bench_bootstrap(n, args.repeats) for n in args.sources],
    }
    path = result_path(args.out, cpu, dt.date.today().isoformat(), prefix="per-image-")
    fileio.write_json(path, record)
    print(json.dumps(record, indent=2))
    print(f"written: {path}")
    return path


if __name__ == "__main__":
    main()
