"""Where does a trained run's thin-damage prediction sit against its best operating point, at every thin factor?

The residual filter's threshold ``k`` is chosen on the validation part for the highest thin-damage IoU; a model's
argmax is not: balanced class weights, crops centred on rare classes and a recall term all push it towards
predicting thin damage too often (high recall, low precision). A run with ``calibrate_thin`` (the thin recipe)
chooses a thin factor on validation itself (:mod:`heritage.modeling.thin_prior`); this re-scores a finished run's
best checkpoint on its validation and test images at every factor of ``thin_prior.FACTORS`` (the thin classes'
probabilities divided by it), from its raw probabilities whatever it chose, and reports the test thin-damage IoU
at the factor validation chooses beside the plain argmax's and the filter's (its ``k`` from the run's own
``metrics.json``): what the choice is worth, and how far from the best factor on test it lands.

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
from heritage.modeling import residual, thin_prior, tiling
from heritage.training import devices, runs, train

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


def sweeps(run: TrainedRun, ids: list[str]) -> tuple[thin_prior.FactorSweep, residual.ThresholdSweep]:
    """The model's thin-damage counts at every factor of ``thin_prior.FACTORS`` over ``ids`` (its raw probabilities,
    whatever factor the run chose), and the filter's at the run's k."""
    settings = run.settings
    images = working.EvaluationSet(settings.data_dir, ids, settings.image_size, settings.working_resolution,
                                   "working", settings.cache_dir, progress=False)
    window = tiling.SlidingWindow(tile=settings.image_size, batch_size=settings.batch_size,
                                  tta=settings.tta == "flip",
                                  dtype=devices.autocast_dtype(settings.amp, torch.device("cpu")))
    model_sweep, filter_sweep = thin_prior.FactorSweep(), residual.ThresholdSweep([run.thin["filter"]["k"]])
    for index in range(len(images)):
        picture, mask = (np.asarray(a) for a in images.scored(index))
        probabilities = torch.cat([bands for _, bands in tiling.iter_probability_bands(
            run.model, np.asarray(images[index].model_input), window, torch.device("cpu"), progress=False)], dim=1)
        model_sweep.add_scores(thin_prior.thin_odds(probabilities), mask)
        filter_sweep.update(picture, mask)
    return model_sweep, filter_sweep


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


def ratio(numerator: np.ndarray, denominator: np.ndarray | int) -> list[float | None]:
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    return [float(n / d) if d else None for n, d in zip(numerator, denominator)]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    start, load_before = time.perf_counter(), os.getloadavg()
    run = read_run(args.run_dir)
    parts: dict[str, Any] = {}
    for part, ids in (("val", run.ids.val), ("test", run.ids.test)):
        model_sweep, filter_sweep = sweeps(run, ids)
        counts = model_sweep.counts
        parts[part] = {"model_iou": [float(v) for v in model_sweep.ious()], "filter_iou": float(filter_sweep.ious()[0]),
                       "model_precision": ratio(counts["hits"], counts["detected"]),
                       "model_recall": ratio(counts["hits"], counts["thin"])}
        if part == "val":
            choice = model_sweep.choice()
    chosen = thin_prior.FACTORS.index(choice.factor)
    record = {
        "run": str(args.run_dir), **describe_run(run), "device": runs.cpu_name(),
        "git_commit": runs.git_commit(),
        "what": ("thin-damage IoU of the run's best checkpoint with its thin classes' probabilities divided by each "
                 "factor (argmax after), val and test; the factor chosen on val (highest IoU), as the filter's k"),
        "factors": list(thin_prior.FACTORS), **parts, "chosen_factor": choice.factor,
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
