"""How much room does ``make test``'s thin-damage guard have? Its training over seeds and precisions.

The guard (tests/test_train.py) trains the flagship's ``thin`` variant (the recipe, its thin factor chosen on
validation) on the smoke stand-in at ``OVERRIDES``' budget and asserts that its test thin-damage IoU exceeds
``MARGIN`` x the residual filter's. This trains that configuration at each seed and ``amp`` given (bf16 where the
CPU has it natively, float32 on the others: CI machines differ) and records, per run, the thin factor, the
thin-damage IoU of the model and of the filter, their ratio, the thin classes' strict IoU and the wall time,
and whether every run clears the margin. Writes ``bench/results/thin-guard-<cpu>-<date>.json``::

    python bench/thin_guard.py                                  # seeds 42, 1, 2 at amp auto, seed 42 at amp off
    python bench/thin_guard.py --seeds 42 7 --amp auto off      # every seed at every amp given
    python bench/thin_guard.py --seeds 1 2 --set residual_input=true --tag with-residual-input   # an alternative
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from heritage import config, fileio
from heritage.data import taxonomy
from heritage.pipeline import preparation
from heritage.report import design
from heritage.training import devices, runs, train
from train_bench import result_path  # bench/ is on sys.path when this runs as a script

RESULTS_DIR = Path(__file__).resolve().parent / "results"
POC, ENCODER = "poc59v2_flagship", "convnext_tiny"
# 5 epochs over every training sample of the first fold (372 on the smoke stand-in; batch 8: 230 steps), about
# 1.5 min on 2 cores in bf16
OVERRIDES = {"epochs": 5, "max_train_samples": None, "fold": "fold0"}
MARGIN = 1.2  # the guard's: model thin-damage IoU > MARGIN x the filter's (measured: 1.45x-2.17x)
DEFAULT_RUNS = ((42, "auto"), (1, "auto"), (2, "auto"), (42, "off"))


def guard_config(data_dir: Path, runs_root: Path, **fields: Any) -> config.RunConfig:
    """The guard's run: the thin variant of POC at OVERRIDES' budget (and ``fields``, e.g. seed or amp)."""
    return config.load_run_config(POC, "smoke", encoder=ENCODER, variant=design.THIN_VARIANT, overrides={
        "data_dir": str(data_dir), "runs_root": str(runs_root), **OVERRIDES, **fields})


def guard_run(data_dir: Path, runs_root: Path, seed: int, amp: str, changes: dict[str, Any]) -> dict[str, Any]:
    run = guard_config(data_dir, runs_root / f"seed{seed}-{amp}", **{**changes, "seed": seed, "amp": amp})
    start = time.perf_counter()
    metrics = train.run_training(run, progress=False)
    thin = metrics["test"]["thin"]
    ratio = thin["model_iou"] / thin["filter_iou"] if thin["model_iou"] is not None and thin["filter_iou"] else None
    return {"seed": seed, "amp": amp, "autocast_dtype": metrics["autocast_dtype"],
            "thin_factor": metrics["thin_factor"]["factor"], "thin_damage_iou": thin["model_iou"],
            "filter_thin_damage_iou": thin["filter_iou"], "ratio_to_filter": ratio,
            "precision": thin["model"]["precision"], "recall": thin["model"]["recall"],
            "thin_damage_cliou": thin["model"]["cliou"], "filter_thin_damage_cliou": thin["filter"]["cliou"],
            "thin_damage_iou_val_at_factor_1": metrics["thin_factor"]["val_iou"][0],
            "strict_iou": {name: entry["model_iou"] for name, entry in thin["per_class"].items()},
            "filter_iou_per_class": {name: entry["filter_iou"] for name, entry in thin["per_class"].items()},
            "test_miou": metrics["test"]["miou"], "all_clean_miou": metrics["test"]["all_clean_miou"],
            "clears_margin": ratio is not None and ratio > MARGIN, "wall_time_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", help="with --amp: every seed at every amp (default: "
                        f"{', '.join(f'{seed} {amp}' for seed, amp in DEFAULT_RUNS)})")
    parser.add_argument("--amp", nargs="+", choices=config.AMP_MODES, default=["auto"])
    parser.add_argument("--data", type=Path, help="the smoke stand-in's data folder (default: made here)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="RunConfig fields changed against the recipe (an alternative's margin)")
    parser.add_argument("--tag", help="appended to the file name (thin-guard-<cpu>-<date>-<tag>.json)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    changes = config.parse_overrides(args.set)
    plan = DEFAULT_RUNS if args.seeds is None else tuple((seed, amp) for seed in args.seeds for amp in args.amp)
    load_before, start = os.getloadavg(), time.perf_counter()
    device = runs.cpu_name()
    path = result_path(args.out, device, date.today().isoformat(), prefix="thin-guard-")
    if args.tag:
        path = path.with_name(f"{path.stem}-{args.tag}{path.suffix}")
    with tempfile.TemporaryDirectory(prefix="thin-guard-") as scratch:
        data_dir = preparation.prepare_data("smoke", args.data, Path(scratch) / "data")
        results = [guard_run(data_dir, Path(scratch) / "runs", seed, amp, changes) for seed, amp in plan]
    ratios = [row["ratio_to_filter"] for row in results]
    record = {
        "device": device, "date": date.today().isoformat(), "git_commit": runs.git_commit(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "native_bf16": devices.cpu_has_native_bf16(),
        "what": (f"the thin guard's training ({POC} {design.THIN_VARIANT} variant, {ENCODER}, smoke stand-in, "
                 f"{OVERRIDES}) at each seed and amp: test thin-damage IoU of the model (at its thin factor chosen on "
                 f"validation) against the residual filter's; the guard asserts a ratio above {MARGIN}"),
        "changed_against_the_recipe": changes, "thin_classes": list(taxonomy.THIN_CLASSES), "margin": MARGIN,
        "results": results,
        "min_ratio_to_filter": min((r for r in ratios if r is not None), default=None),
        "all_clear_margin": all(row["clears_margin"] for row in results),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "wall_time_s": time.perf_counter() - start,
        "note": "a stand-in's numbers say nothing about real artworks; wall times on a possibly shared CPU",
    }
    fileio.write_json(path, record)
    for row in results:
        print(f"seed {row['seed']} amp {row['amp']} ({row['autocast_dtype']}): thin-damage IoU "
              f"{row['thin_damage_iou']:.4f} vs filter {row['filter_thin_damage_iou']:.4f} "
              f"({row['ratio_to_filter']:.2f}x, factor {row['thin_factor']:g}), {row['wall_time_s']:.0f} s")
    print(f"all clear the margin {MARGIN}: {record['all_clear_margin']} -> {path}")
    return path


if __name__ == "__main__":
    main()
