"""What scoring thin damage costs beside the model's evaluation: the residual filter, its k sweep, the clIoU.

    python bench/thin_scores_bench.py                    # a 1024 px and a 96 px (smoke-sized) stand-in, made here
    python bench/thin_scores_bench.py --data D --images 8

For each data folder and evaluation mode (the flagship's ConvNeXt-T UNet, randomly initialised: its cost does not
depend on its weights; the smoke-sized stand-in letterboxed at 64 px and on 64 px patches, the 1024 px one
letterboxed at 384 px, the cheapest model pass per scored pixel, so the largest share for the thin scores;
``--patch-on-large`` adds its 384 px patches), it times on the same images, interleaved in rounds:

- ``evaluate_images`` without and with :class:`heritage.modeling.thin.ThinDamageScores` (what ``train`` adds
  to the test evaluation), per image;
- its parts per image: ``residual.detect``, ``ThresholdSweep.update`` (the validation pass that chooses k),
  ``ThinDamageScores.update`` given the model's prediction and given the ground truth (a model that predicts
  thin damage as thin lines: the clIoU's thinning is cheap on lines and costly on large blobs).

Writes ``bench/results/thin-scores-<cpu>-<date>.json`` with the CPU, the commit and the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from heritage import fileio
from heritage.data import datafolder, taxonomy, working
from heritage.modeling import models, residual, thin, tiling
from heritage.training import evaluation, runs
from heritage.training.devices import Distributed
from train_bench import result_path  # bench/ is on sys.path when this runs as a script

# (name, model input, tile = the model's input size): the flagship's letterbox and patch evaluations.
MODES = {"letterbox": "letterbox", "patch": "working"}


def make_stand_in(folder: Path, n_images: int, longest_side: int) -> Path:
    """A synthetic stand-in of ``n_images`` stored at ``longest_side`` px (synth, then ingest at that size)."""
    raw, data = folder / f"raw-{longest_side}", folder / f"data-{longest_side}"
    python = [sys.executable, "-m", "heritage", "data"]
    subprocess.run([*python, "synth", "--out", str(raw), "--n-images", str(n_images), "--longest-side",
                    str(longest_side)], check=True, capture_output=True)
    subprocess.run([*python, "ingest", "--source", str(raw), "--out", str(data), "--longest-side", "0"],
                   check=True, capture_output=True)
    return data


class Predictions:
    """An ImageScore that keeps each image's prediction (to time the thin scores on it afterwards)."""

    def __init__(self) -> None:
        self.maps: list[np.ndarray] = []

    def update(self, image: working.EvaluationImage, prediction: np.ndarray) -> None:
        self.maps.append(prediction.copy())


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_mode(data: Path, ids: list[str], mode: str, image_size: int, rounds: int) -> dict:
    images = working.EvaluationSet(data, ids, image_size, "native", MODES[mode], progress=False)
    torch.manual_seed(0)
    model = models.build_model("unet", "convnext_tiny", num_classes=taxonomy.NUM_CLASSES, image_size=image_size)
    device = torch.device("cpu")
    k = residual.K_GRID[len(residual.K_GRID) // 2]
    predictions = Predictions()

    def evaluate(scores: list) -> None:
        evaluation.evaluate_images(model, images, Distributed(device=device),
                                   tiling.SlidingWindow(tile=image_size, batch_size=4),
                                   outputs=evaluation.Outputs(scores=scores))

    evaluate([predictions])  # warm-up; keeps the predictions
    plain, scored = [], []
    for _ in range(rounds):  # interleaved: the machine's load hits both arms alike
        plain.append(seconds(lambda: evaluate([])) / len(ids))
        scored.append(seconds(lambda: evaluate([thin.ThinDamageScores(k)])) / len(ids))
    parts: dict[str, list[float]] = {"detect": [], "sweep_update": [], "thin_update_model": [], "thin_update_truth": []}
    for _ in range(rounds):
        for index in range(len(ids)):
            picture, mask = (np.ascontiguousarray(a) for a in images.scored(index))
            image = working.EvaluationImage(ids[index], picture, picture, mask)
            parts["detect"].append(seconds(lambda: residual.detect(picture, k)))
            parts["sweep_update"].append(seconds(lambda: residual.ThresholdSweep().update(picture, mask)))
            parts["thin_update_model"].append(seconds(lambda: thin.ThinDamageScores(k).update(image, predictions.maps[index])))
            parts["thin_update_truth"].append(seconds(lambda: thin.ThinDamageScores(k).update(image, mask)))
    shapes = [images.scored(i)[1].shape for i in range(len(ids))]
    plain_s, scored_s = statistics.median(plain), statistics.median(scored)
    return {
        "mode": mode, "model": "unet/convnext_tiny (random init)", "model_input": MODES[mode], "image_size": image_size,
        "n_images": len(ids), "median_megapixels": float(np.median([h * w for h, w in shapes]) / 1e6),
        "evaluate_images_s_per_image": {"without_thin_scores": plain_s, "with_thin_scores": scored_s,
                                        "added_share": (scored_s - plain_s) / plain_s},
        "parts_median_s_per_image": {name: statistics.median(values) for name, values in parts.items()},
        # the same share from the parts timed alone: steadier than the difference of two noisy totals on small images
        "thin_update_model_share_of_evaluation": statistics.median(parts["thin_update_model"]) / plain_s,
        "parts_max_s_per_image": {name: max(values) for name, values in parts.items()},
    }


def main() -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="*", default=None,
                        help="data folders (default: stand-ins of --images images at 1024 and 96 px, made here)")
    parser.add_argument("--images", type=int, default=6, help="images timed per data folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patch-on-large", action="store_true",
                        help="also time the patch evaluation (tiles at 384 px) on the large stand-in (slow on a CPU)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        folders = args.data or [make_stand_in(Path(scratch), args.images, side) for side in (1024, 96)]
        results = []
        for data in folders:
            ids = list(datafolder.read_metadata(data)["id"])[: args.images]
            longest = max(max(datafolder.read_metadata(data).set_index("id").loc[i, ["width", "height"]]) for i in ids)
            # the full profile's 384 px on large scans; the smoke profile's 64 px on smoke-sized ones
            image_size = 384 if longest > 256 else 64
            # a large image letterboxed is the cheapest model pass per scored pixel: the thin scores' largest share
            for mode in MODES if image_size == 64 or args.patch_on_large else ("letterbox",):
                results.append({"data": str(data) if args.data else f"stand-in, longest side {longest} px",
                                **bench_mode(data, ids, mode, image_size, args.rounds)})
                print(json.dumps(results[-1], indent=2), flush=True)
    cpu = runs.cpu_name()
    record = {
        "benchmark": "thin_scores", "cpu": cpu, "torch_threads": torch.get_num_threads(), "git_commit": runs.git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "rounds": args.rounds,
        "load_average_1min_before": load_before[0], "load_average_1min_after": os.getloadavg()[0],
        "k_timed": residual.K_GRID[len(residual.K_GRID) // 2], "tolerance_px": thin.TOLERANCE_PX,
        "results": results,
    }
    path = result_path(args.out, cpu, dt.date.today().isoformat(), prefix="thin-scores-")
    fileio.write_json(path, record)
    print(f"written: {path}")
    return path


if __name__ == "__main__":
    main()
