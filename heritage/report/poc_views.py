"""What each POC notebook shows of its own, beside the run report the four share.

The POC notebooks are one template (train or read one run, then its results); each adds one view of
what its POC is about, read from run folders only:

- POC-5.5 (multi-task): the test mIoU of each head (binary, coarse, fine), :func:`hierarchical_scores`.
- POC-5.8 (encoder benchmark): its encoders side by side on the same split, :func:`encoders_side_by_side`.
- POC-5.9 (Dice + Focal): the class weights the run trained with, :func:`class_weights_used`.
- POC-5.9-v2 (flagship): its variants (the loss ablation and the other arms) side by side,
  :func:`variants_side_by_side`.

A sibling run that is missing or unfinished is listed as such, never left out silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from heritage import config as config_module
from heritage import fileio
from heritage.data import taxonomy
from heritage.config import RunConfig, run_dir
from heritage.training.runs import METRICS_FILE

CLASS_WEIGHTS_FILE = "class_weights.json"  # heritage.training.runs.CLASS_WEIGHTS_FILE
LEVELS = ("binary", "coarse", "fine")


def hierarchical_scores(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per level of the hierarchical model (binary, coarse, fine): its test mIoU (%), from
    ``metrics.json``'s ``hierarchical``; empty for a run without it (a single-head model)."""
    levels = metrics.get("hierarchical") or {}
    rows = [{"level": level, "test mIoU (%)": 100 * levels[f"{level}_miou"]}
            for level in LEVELS if levels.get(f"{level}_miou") is not None]
    return pd.DataFrame(rows, columns=["level", "test mIoU (%)"])


def _sibling(config: RunConfig, poc_key: str, encoder: str) -> Path:
    """``<runs_root>/<poc_key>/<encoder>/``: a sibling of ``config``'s run folder (run_dir's layout)."""
    return run_dir(config).parents[2] / poc_key / encoder


def _run_row(folder: Path) -> dict[str, Any]:
    path = folder / METRICS_FILE
    if not path.is_file():
        return {"state": "not finished"}
    metrics = fileio.read_json(path)
    test = metrics.get("test") or {}
    miou, clean = test.get("miou"), test.get("all_clean_miou")
    return {"state": "finished",
            "test mIoU (%)": None if miou is None else 100 * miou,
            "all-Clean mIoU (%)": None if clean is None else 100 * clean,
            "params (M)": metrics.get("params_m"),
            "train img/s": (metrics.get("throughput") or {}).get("train_images_per_s")}


def encoders_side_by_side(config: RunConfig, encoders: list[str] | None = None) -> pd.DataFrame:
    """The runs of ``config``'s POC and variant on its split, one row per encoder (``encoders``, default
    the POC's), read from their run folders beside this one."""
    encoders = config_module.poc_encoders(config.poc) if encoders is None else encoders
    rows = []
    for encoder in encoders:
        folder = _sibling(config, config.poc_key, encoder) / config.split_name
        rows.append({"encoder": encoder, "this run": encoder == config.encoder, **_run_row(folder)})
    return pd.DataFrame(rows)


def variants_side_by_side(config: RunConfig, variants: list[str] | None = None) -> pd.DataFrame:
    """The POC's main configuration and its variants (default: every variant of the POC file that runs
    on ``config``'s encoder), one row each, each at the split of its own runs that matches ``config``'s
    fold when it has one, else its first (the seeds-protocol arm has a split of its own)."""
    spec = config_module.load_poc(config.poc)
    if variants is None:
        variants = [name for name, body in (spec.get("variants") or {}).items()
                    if config.encoder in ((body or {}).get("encoders") or spec["encoders"])]
    rows = []
    for variant in [None, *variants]:
        key = config.poc if variant is None else f"{config.poc}-{variant}"
        encoder_folder = _sibling(config, key, config.encoder)
        splits = sorted(p.name for p in encoder_folder.iterdir() if p.is_dir()) if encoder_folder.is_dir() else []
        split = config.split_name if config.split_name in splits else (splits[0] if splits else None)
        row = {"variant": variant or spec.get("main_variant") or "main", "split": split,
               "this run": variant == config.variant}
        row.update(_run_row(encoder_folder / split) if split else {"state": "not run"})
        rows.append(row)
    return pd.DataFrame(rows)


def class_weights_used(run_folder: str | os.PathLike) -> pd.DataFrame:
    """The run's ``class_weights.json``: one row per class with its weight and its ratio to the
    smallest; empty when the run trained without class weights."""
    record = fileio.read_json(Path(run_folder) / CLASS_WEIGHTS_FILE)
    weights = record.get("weights") or {}
    if not weights:
        return pd.DataFrame(columns=["class", "weight", "x smallest"])
    smallest = min(weights.values())
    return pd.DataFrame([{"class": name, "weight": weights[name], "x smallest": weights[name] / smallest}
                         for name in taxonomy.CLASS_NAMES if name in weights])
