"""Does a smoke-sized training run learn? Each POC's smoke configuration against the all-Clean baseline.

Trains each POC's smoke encoder from scratch on the smoke profile's synthetic stand-in (generated
here by ``heritage.pipeline.preparation.prepare_data``, or ``--data``: a data folder, parquet shards or an
export) with a larger budget than the smoke profile (``--epochs`` over every training sample instead of 3
epochs over 32; the default 15 is what tests/test_train.py's learning test trains for POC-5.9),
evaluates once on the fold's test part and records the test mIoU beside the mIoU of predicting
Clean everywhere on the same pixels (``test.all_clean_miou``), their ratio, the per-class IoU, the
val mIoU and train loss per epoch and the wall time. A measurement, not a test: the numbers say how
far a from-scratch model gets in CPU minutes on this stand-in, whatever they are.

Writes ``bench/results/learning-<device>-<date>.json``, ``<device>`` the one the runs trained on (their
metrics.json's; the CPU's name is recorded as ``cpu``)::

    python bench/learning_check.py                          # the smoke stand-in, 15 epochs, every POC
    python bench/learning_check.py --pocs poc58_baseline --epochs 10
    python bench/learning_check.py --pocs poc58_baseline --seeds 1 2 --label seeds-poc58   # the spread over seeds
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from heritage import config, fileio, report
from heritage.pipeline import preparation
from heritage.training import runs, train
from train_bench import result_path, trained_on  # bench/ is on sys.path when this runs as a script

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def check_poc(poc: str, data_dir: Path, runs_root: Path, epochs: int, seed: int | None = None) -> dict:
    """Train the POC's first smoke-plan encoder on its first planned fold and compare with all-Clean.

    ``seed`` (default: the configuration's) changes the initial weights and the augmentation, not the split.
    """
    first = config.plan("smoke", [poc], data_dir)[0]  # the main configuration comes first
    overrides = {"data_dir": str(data_dir), "runs_root": str(runs_root), "epochs": epochs, "max_train_samples": None}
    if seed is not None:
        overrides["seed"] = seed
    run = config.load_run_config(poc, "smoke", encoder=first.encoder, fold=first.fold, overrides=overrides)
    start = time.perf_counter()
    metrics = train.run_training(run, progress=False)
    test = metrics["test"]
    history = report.read_history(config.run_dir(run)).to_dict("records")
    return {
        "poc": poc, "variant": run.variant, "encoder": run.encoder, "seed": run.seed, "loss": run.loss,
        "class_weights": run.class_weights, "split": run.split_name, "epochs": epochs,
        "image_size": run.image_size, "batch_size": run.batch_size, "lr": run.lr,
        "test_images": test["n_images"], "test_miou": test["miou"], "all_clean_miou": test["all_clean_miou"],
        "ratio_to_all_clean": test["miou"] / test["all_clean_miou"],
        "per_class_iou": {name: entry["iou"] for name, entry in test["per_class"].items()},
        "val_miou_per_epoch": [row["val_miou"] for row in history],
        "train_loss_per_epoch": [row["train_loss"] for row in history],
        "best_epoch": metrics["best_epoch"], "wall_time_s": time.perf_counter() - start,
        "device": metrics["device"],
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pocs", nargs="+", default=config.available_pocs(), choices=config.available_pocs())
    parser.add_argument("--epochs", type=int, default=15, help="epochs over every training sample")
    parser.add_argument("--seeds", nargs="+", type=int, default=[None],
                        help="train each POC once per seed (default: the configuration's seed)")
    parser.add_argument("--label", help="written into the file name: learning-<label>-<device>-<date>.json")
    parser.add_argument("--data", type=Path, help="data folder, parquet shards or export instead of the stand-in")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="learning-check-") as scratch:
        scratch = Path(scratch)
        data_dir = preparation.prepare_data("smoke", args.data, scratch / "data")
        results = [check_poc(poc, data_dir, scratch / "runs" / f"seed-{seed}", args.epochs, seed)
                   for poc in tqdm(args.pocs, desc="POCs") for seed in args.seeds]
    device = trained_on(row["device"] for row in results)
    record = {
        "device": device, "cpu": runs.cpu_name(), "date": date.today().isoformat(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "data": str(args.data) if args.data else {"synthetic": preparation.SYNTHETIC["smoke"]},
        "criterion": "test mIoU / all-Clean test mIoU (the learning test's 'clear margin': > 1.3)",
        "results": results,
    }
    prefix = f"learning-{args.label}-" if args.label else "learning-"
    path = result_path(args.out, device, record["date"], prefix=prefix)
    fileio.write_json(path, record)
    for row in results:
        print(f"{row['poc']:>18s} {row['encoder']} seed {row['seed']}: test mIoU {row['test_miou']:.4f} "
              f"vs all-Clean {row['all_clean_miou']:.4f} ({row['ratio_to_all_clean']:.2f}x), {row['wall_time_s']:.0f} s")
    print(f"-> {path}")
    return path


if __name__ == "__main__":
    main()
