"""Where does a trained run's thin-damage prediction sit against its best operating point?

The residual filter's threshold ``k`` is chosen on the validation part for the highest thin-damage IoU; a model's
argmax is not: balanced class weights, crops centred on rare classes and a recall term all push it towards
predicting thin damage too often (high recall, low precision). This re-scores a finished run's best checkpoint on
its validation and test images with the thin classes' probabilities divided by each factor of ``FACTORS`` (a
logit offset of ``-log(factor)`` on the thin classes only, the post-hoc logit adjustment of long-tail learning),
chooses the factor on validation as the filter's ``k`` is chosen, and reports the test thin-damage IoU at that
factor beside the plain argmax's and the filter's (its ``k`` from the run's own ``metrics.json``).

A measurement, not a test::

    python bench/thin_calibration.py RUN_DIR [--out bench/results/thin-calibration-<name>.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from heritage import config, fileio
from heritage.data import splits, working
from heritage.inference import predict
from heritage.modeling import residual, tiling
from heritage.training import devices, runs, train

FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)


class TrainedRun(NamedTuple):
    """A finished run read once: its settings, its split's ids, its best checkpoint's model, its metrics' thin block."""

    settings: config.RunConfig
    ids: splits.FoldIds
    model: torch.nn.Module
    thin: dict[str, Any]


def read_run(run_dir: Path) -> TrainedRun:
    settings = config.RunConfig.from_yaml(run_dir / runs.CONFIG_FILE)
    model, _ = predict.load_model(run_dir, "cpu")
    thin = json.loads((run_dir / runs.METRICS_FILE).read_text())["test"]["thin"]
    return TrainedRun(settings, train.check_inputs(settings), model, thin)


def thin_counts(run: TrainedRun, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per factor of FACTORS, [TP, truth, predicted] thin-damage pixels of ``ids``; and the filter's at the run's k."""
    settings = run.settings
    images = working.EvaluationSet(settings.data_dir, ids, settings.image_size, settings.working_resolution,
                                   "working", settings.cache_dir, progress=False)
    k = run.thin["filter"]["k"]
    window = tiling.SlidingWindow(tile=settings.image_size, batch_size=settings.batch_size,
                                  tta=settings.tta == "flip",
                                  dtype=devices.autocast_dtype(settings.amp, torch.device("cpu")))
    thin_ids = torch.tensor(residual.THIN_IDS)
    counts = np.zeros((len(FACTORS), 3), dtype=np.int64)
    filter_counts = np.zeros(3, dtype=np.int64)
    for index in range(len(images)):
        picture, mask = (np.asarray(a) for a in images.scored(index))
        labelled, truth = residual.thin_truth(mask)
        probabilities = torch.cat([bands for _, bands in tiling.iter_probability_bands(
            run.model, np.asarray(images[index].model_input), window, torch.device("cpu"), progress=False)], dim=1)
        for row, factor in enumerate(FACTORS):
            scaled = probabilities.clone()
            scaled[thin_ids] /= factor
            found = np.isin(scaled.argmax(0).numpy(), residual.THIN_IDS) & labelled
            counts[row] += [(truth & found).sum(), truth.sum(), found.sum()]
        detected = residual.detect(picture, k) & labelled
        filter_counts += [(truth & detected).sum(), truth.sum(), detected.sum()]
    return counts, filter_counts


def describe_run(run: TrainedRun) -> dict[str, Any]:
    """The run's settings and what its own metrics.json says about thin damage (at the argmax)."""
    settings, thin = run.settings, run.thin
    n_train = len(run.ids.train)
    if settings.max_train_samples is not None:
        n_train = min(n_train, settings.max_train_samples)
    return {"settings": {name: getattr(settings, name) for name in (
                "poc", "variant", "encoder", "fold", "image_size", "batch_size", "epochs", "max_train_samples", "lr",
                "sampling", "foreground_share", "full_resolution_skips", "residual_input", "loss", "loss_params",
                "class_weights", "tta", "amp", "seed")},
            "steps": settings.epochs * (n_train // settings.batch_size),
            "metrics_thin": {"model_iou": thin["model_iou"], "filter_iou": thin["filter_iou"], "model": thin["model"],
                             "filter_k": thin["filter"]["k"]}}


def iou(counts: np.ndarray) -> np.ndarray:
    counts = np.atleast_2d(counts).astype(np.float64)
    union = counts[:, 1] + counts[:, 2] - counts[:, 0]
    return np.where(union > 0, counts[:, 0] / np.maximum(union, 1), np.nan)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    start, load_before = time.perf_counter(), os.getloadavg()
    run = read_run(args.run_dir)
    parts: dict[str, Any] = {}
    for part, ids in (("val", run.ids.val), ("test", run.ids.test)):
        counts, filter_counts = thin_counts(run, ids)
        parts[part] = {"model_iou": [float(v) for v in iou(counts)], "filter_iou": float(iou(filter_counts)[0]),
                       "model_precision": [float(c[0] / c[2]) if c[2] else None for c in counts],
                       "model_recall": [float(c[0] / c[1]) if c[1] else None for c in counts]}
    chosen = int(np.nanargmax(parts["val"]["model_iou"]))
    record = {
        "run": str(args.run_dir), **describe_run(run), "device": runs.cpu_name(),
        "git_commit": runs.git_commit(),
        "what": ("thin-damage IoU of the run's best checkpoint with its thin classes' probabilities divided by each "
                 "factor (argmax after), val and test; the factor chosen on val (highest IoU), as the filter's k"),
        "factors": list(FACTORS), **parts, "chosen_factor": FACTORS[chosen],
        "test_at_chosen": parts["test"]["model_iou"][chosen], "test_at_argmax": parts["test"]["model_iou"][0],
        "test_filter": parts["test"]["filter_iou"],
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "wall_time_s": time.perf_counter() - start,
    }
    fileio.write_json(args.out, record)
    print(json.dumps({key: record[key]
                      for key in ("chosen_factor", "test_at_chosen", "test_at_argmax", "test_filter")}))
    return args.out


if __name__ == "__main__":
    main()
