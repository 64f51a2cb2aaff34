"""Run folders and the plan as data frames: one row per run, one row per setting, and their labels.

The comparison's first step (reader: :mod:`heritage.report.comparison` and every table module):
:func:`load_runs` reads every ``metrics.json`` under a runs root, :func:`planned_runs` turns the
plan into rows, :func:`select_runs` keeps the runs the plan asks for, :func:`summarise` makes one
row per setting over its folds, and :func:`setting_label` names a setting the same way everywhere
(a leaky-split run is always labelled so).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from heritage.config import RunConfig
from heritage.training.runs import CONFIG_FILE, METRICS_FILE
from heritage.training.provenance import RUN_COLUMNS, _pretrained, beats_filter, load_metrics, run_row

# A setting is one configuration evaluated on several folds; its runs differ only in the fold.
SETTING = ["poc", "variant", "encoder", "protocol"]
# Fields a paired comparison reports as "also differs" when they differ besides the factor tested.
CONFIG_FIELDS = ["architecture", "loss", "class_weights", "image_size", "batch_size", "lr", "epochs",
                 "sampling", "working_resolution"]  # the last two: a patch arm is no loss variant
ALL_SAMPLES = "all"  # max_train_samples of a run that trained on every sample (None in its config)
FAMILY_ORDER = ["CNN", "ViT", "hybrid"]
_MEANS = ["seeds_miou", "seeds_all_clean_miou", "per_image_miou", "all_clean_miou", "binary_miou", "coarse_miou", "fine_miou", "train_images_per_s", "eval_images_per_s",
          "wall_time_s", "peak_memory_mb", "params_m", "thin_iou", "filter_thin_iou", "thin_cliou", "filter_thin_cliou"]


def load_runs(runs_root: str | Path) -> pd.DataFrame:
    """One row per finished run under ``runs_root`` (every ``**/metrics.json``), columns RUN_COLUMNS.

    ``run_dir`` is relative to ``runs_root``; ``variant`` is "" for a POC's main configuration;
    ``per_class`` maps class name -> test IoU (None for a class absent from the run's test set).
    """
    root = Path(runs_root)
    rows = [run_row(load_metrics(path), path.parent.relative_to(root).as_posix())
            for path in sorted(root.glob(f"**/{METRICS_FILE}"))]
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    frame["pretrained"] = [_pretrained(root / d, p) for d, p in zip(frame["run_dir"], frame["pretrained"])]
    frame["max_train_samples"] = [_max_train_samples(root / d) for d in frame["run_dir"]]
    frame["per_image"] = [_per_image(root / d) for d in frame["run_dir"]]
    return frame


def _per_image(run_dir: Path) -> pd.DataFrame | None:
    """The run's ``per_image.csv`` (:func:`heritage.training.runs.read_per_image`), None for runs made before it existed."""
    from heritage.training import runs

    return runs.read_per_image(run_dir) if (run_dir / runs.PER_IMAGE_FILE).is_file() else None


def _max_train_samples(run_dir: Path) -> int | str | None:
    """``max_train_samples`` from the run's config.yaml (metrics.json lacks it): an int, ALL_SAMPLES for
    None, or None when config.yaml does not record it."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    import yaml

    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "max_train_samples" not in config:
        return None
    value = config["max_train_samples"]
    return ALL_SAMPLES if value is None else int(value)


def planned_runs(configs: Iterable[RunConfig]) -> pd.DataFrame:
    """The plan (``heritage.config.plan``) as rows: SETTING + fold, config_hash, family, CONFIG_FIELDS."""
    from heritage.modeling import registry

    rows = [{"poc": c.poc, "variant": c.variant or "", "encoder": c.encoder, "protocol": c.protocol,
             "fold": c.fold, "config_hash": c.config_hash(), "family": registry.ENCODERS[c.encoder].family,
             **{name: getattr(c, name) for name in CONFIG_FIELDS}, "pretrained": c.pretrained} for c in configs]
    return pd.DataFrame(rows, columns=[*SETTING, "fold", "config_hash", "family", *CONFIG_FIELDS, "pretrained"])


def select_runs(runs: pd.DataFrame, planned: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``runs`` into those the plan asks for (same cell, same config hash) and the others.

    Returns ``(used, ignored)``; ``ignored`` has a ``reason`` column (a run of an older
    configuration, or a cell the plan does not hold). Without a plan every run is used.
    """
    if planned is None:
        return runs.reset_index(drop=True), runs.iloc[0:0].assign(reason=[])
    cell = [*SETTING, "fold"]
    merged = runs.merge(planned[[*cell, "config_hash"]].rename(columns={"config_hash": "planned_hash"}),
                        on=cell, how="left")
    matches = merged["planned_hash"] == merged["config_hash"]
    reason = np.where(merged["planned_hash"].isna(), "not in the plan",
                      "config hash differs from the plan's (an older configuration)")
    ignored = merged[~matches].assign(reason=reason[~matches.to_numpy()]).drop(columns="planned_hash")
    return merged[matches].drop(columns="planned_hash").reset_index(drop=True), ignored.reset_index(drop=True)


def summarise(runs: pd.DataFrame, planned: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per setting (SETTING) over its folds: mIoU mean and sample std, means of the rest.

    Settings come from the plan when given (a planned setting without runs has ``n_runs == 0`` and
    NaN numbers), else from the runs. ``run_dirs``/``config_hashes`` list the runs behind each row.
    """
    keys = planned if planned is not None else runs
    settings = keys[SETTING].drop_duplicates().itertuples(index=False, name=None)
    rows = []
    for setting in settings:
        mine = runs[_matches(runs, setting)]
        plan_rows = keys[_matches(keys, setting)]
        row: dict[str, Any] = dict(zip(SETTING, setting))
        first = mine.iloc[0] if len(mine) else plan_rows.iloc[0]
        row.update({name: first.get(name) for name in ["family", *CONFIG_FIELDS]})
        row.update(
            n_runs=len(mine), n_planned=plan_rows["fold"].nunique(),
            miou_mean=mine["miou"].mean() if len(mine) else math.nan,
            miou_std=mine["miou"].std(ddof=1) if len(mine) > 1 else math.nan,
            wall_time_total_s=mine["wall_time_s"].sum(min_count=1) if len(mine) else math.nan,
            run_dirs=list(mine["run_dir"]), config_hashes=list(mine["config_hash"]),
            thin_iou_std=mine["thin_iou"].std(ddof=1) if mine["thin_iou"].notna().sum() > 1 else math.nan,
            **_against_filter(mine),
        )
        row.update({f"{name}_mean": mine[name].mean() if len(mine) else math.nan for name in _MEANS})
        rows.append(row)
    return pd.DataFrame(rows)


def _against_filter(runs: pd.DataFrame) -> dict[str, int]:
    """Of a setting's runs: how many recorded thin damage (``n_thin_recorded``), how many of them have both the
    model's and the residual filter's thin-damage IoU (``n_with_filter``), and in how many the model's is above."""
    against = [beats_filter(a, b) for a, b in zip(runs["thin_iou"], runs["filter_thin_iou"])]
    return {"n_thin_recorded": int(runs["thin_recorded"].sum()), "n_with_filter": sum(v is not None for v in against),
            "n_above_filter": sum(v is True for v in against)}


def _matches(frame: pd.DataFrame, setting: Sequence[Any]) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for name, value in zip(SETTING, setting):
        mask &= frame[name] == value
    return mask


# -- labels ----------------------------------------------------------------------------------------


def poc_label(poc: str) -> str:
    """``poc59v2_flagship`` -> ``POC-5.9-v2``: the seeds' names for the POCs."""
    found = re.fullmatch(r"poc(\d)(\d+)(v\d+)?(?:_.*)?", poc)
    if not found:
        return poc
    major, minor, version = found.groups()
    return f"POC-{major}.{minor}" + (f"-{version}" if version else "")


def poc_title(poc: str) -> str:
    """The one-line title of a POC (``title`` in its config file)."""
    from heritage import config

    return config.load_poc(poc).get("title") or poc_label(poc)


def encoder_label(encoder: str) -> str:
    from heritage.modeling import registry

    spec = registry.ENCODERS.get(encoder)
    return spec.display_name if spec is not None else encoder


def setting_label(row: Any) -> str:
    from heritage.data import splits

    label = f"{poc_label(row['poc'])} {encoder_label(row['encoder'])}"
    label += f" [{row['variant']}]" if row["variant"] else ""
    return label + (" (leaky split)" if row.get("protocol") == splits.LEAKY else "")  # never unlabelled


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y or (x is None and y is None)
