"""Is thin damage learnt? The flagship's thin recipe against its letterbox and patch arms and the residual filter.

Trains the flagship (POC-5.9-v2) ConvNeXt-T from scratch on a synthetic stand-in stored at 768 px (generated
here by ``heritage.pipeline.preparation.prepare_data``, or ``--data``), at one step budget (``--epochs`` over
every training sample of the first fold, the same image size and batch size), in three arms: the main
configuration (``sampling: letterbox``), the ``patch`` variant and the ``thin`` variant (the recipe; see
heritage/configs/poc59v2_flagship.yaml). All are tested at the working resolution on the same test pixels, where
every run also scores the residual filter (its k chosen on the validation part; ``test.thin`` of metrics.json):
per-class strict IoU, the tolerant clIoU of the thin classes, thin-damage IoU (the thin classes as one) of each
arm and of the filter, all-Clean mIoU, steps, wall time and the autocast dtype.

``--ablation`` then measures what each ingredient of the recipe contributes: the recipe trained again at the same
budget without one of them (:func:`ablations`: the full-resolution skips, the loss, the Skeleton Recall term, each set
back to the main configuration's value) or with an alternative it left out (the residual input, two crops in three
centred on damage), the
recipe's own checkpoint tested without flip TTA and without its thin factor chosen on validation (no training), and
the recipe with half the steps. A step's cost,
recipe against the main configuration, is timed interleaved in one process (``step_cost``: float32 and bf16).
``--tag`` keeps several records of one day apart.

A measurement, not a test: it records what it got against the aim (thin-damage IoU at least ``AIM_RATIO`` x the
filter's, each thin class at strict IoU >= ``AIM_CLASS_IOU``). The machine may be shared: the JSON records the
load average before and after, and its wall times are only comparable within one file.

Writes ``bench/results/thin-<cpu>-<date>.json``::

    python bench/thin_check.py                        # three arms at the default budget (aimed at 30 min on 2 cores)
    python bench/thin_check.py --ablation             # and each ingredient's effect (about twice as long again)
    python bench/thin_check.py --epochs 2 --n-images 40 --longest-side 256    # a quick look
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from heritage import config, errors, fileio, report
from heritage.data import taxonomy
from heritage.modeling import thin_prior
from heritage.report import design
from heritage.pipeline import preparation
from heritage.training import devices, runs, train
from train_bench import result_path  # bench/ is on sys.path when this runs as a script

RESULTS_DIR = Path(__file__).resolve().parent / "results"
POC = report.ABLATION_POC
ENCODER = "convnext_tiny"
STAND_IN = {"n_images": 160, "longest_side": 768}  # ARTeFACT's number of images, stored at >= 768 px
AIM_RATIO = 1.5  # the recipe's thin-damage IoU against the filter's
AIM_CLASS_IOU = 0.10  # each thin class's strict IoU
BUDGET_MINUTES = 30  # the three arms on a 2-core CPU
ARM_ORDER = ("thin", "letterbox", "patch")  # the recipe first


def arm_configs(data_dir: Path, runs_root: Path, epochs: int, amp: str) -> dict[str, config.RunConfig]:
    """The letterbox (main), patch and thin arms on the first planned fold, at one budget (refused otherwise)."""
    fold = config.plan("smoke", [POC], data_dir)[0].fold
    # validate once, after the last epoch: every arm picks its last epoch, and val costs a pass over 768 px images
    overrides = {"data_dir": str(data_dir), "runs_root": str(runs_root), "epochs": epochs, "max_train_samples": None,
                 "eval_every": epochs, "amp": amp}
    arms = {arm: config.load_run_config(POC, "smoke", encoder=ENCODER, fold=fold, variant=variant, overrides=overrides)
            for arm, variant in (("letterbox", None), ("patch", "patch"), ("thin", design.THIN_VARIANT))}
    for arm, run in arms.items():
        differs = [f"{name} {getattr(arms['letterbox'], name)} vs {getattr(run, name)}"
                   for name in report.BUDGET_FIELDS if getattr(arms["letterbox"], name) != getattr(run, name)]
        if differs:
            raise errors.InputError(f"{config.poc_path(POC)}: the {arm} arm's training budget differs from the main "
                                    f"configuration's ({'; '.join(differs)}): no comparison")
    return arms


def ablations(arms: dict[str, config.RunConfig]) -> dict[str, dict[str, Any]]:
    """The recipe without one ingredient each (set back to the main configuration's value), and with each of two
    alternatives it measured and left out."""
    main, thin = arms["letterbox"], arms["thin"]
    return {
        # two alternatives the recipe measured and left out: the residual filter's evidence in the full-resolution
        # stem, and two crops in three centred on damage
        "thin with the residual input": {"residual_input": True},
        "thin with two thirds of the crops on damage": {"foreground_share": 0.67},
        "thin without full-resolution skips": {"full_resolution_skips": main.full_resolution_skips},
        "thin with the main loss": {"loss": main.loss, "loss_params": main.loss_params},
        "thin without Skeleton Recall": {"loss_params": {**thin.loss_params, "skeleton_recall": 0.0}},
        "thin with half the steps": {"epochs": max(1, thin.epochs // 2), "eval_every": max(1, thin.epochs // 2)},
    }


def train_arm(run: config.RunConfig) -> dict[str, Any]:
    """Train one arm and report what it scored on the test part (and the filter on the same pixels)."""
    n_train = len(train.check_inputs(run)[0])
    steps = run.epochs * (n_train // run.batch_size)  # the training loader drops a last partial batch
    start, cpu = time.perf_counter(), cpu_seconds()
    metrics = train.run_training(run, progress=False)
    return {**describe(run), "steps": steps, "training_samples": n_train,
            "training_pixels": steps * run.batch_size * run.image_size ** 2,
            **scores(metrics), "thin_factor": thin_prior.recorded_factor(metrics), "best_epoch": metrics["best_epoch"],
            "train_images_per_s": metrics["throughput"]["train_images_per_s"],
            "seconds_per_step": run.batch_size / metrics["throughput"]["train_images_per_s"],
            "wall_time_s": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu}


def train_arms(runs_by_name: dict[str, config.RunConfig], jobs: int) -> dict[str, dict[str, Any]]:
    """:func:`train_arm` of each, one after the other or ``jobs`` side by side (each process gets its share of
    the torch threads: on a machine shared with other jobs the arms then get more of it; scores do not change)."""
    if jobs <= 1:
        return {name: train_arm(run) for name, run in runs_by_name.items()}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        futures = {name: pool.submit(train_arm, run) for name, run in runs_by_name.items()}
        return {name: {**future.result(), "torch_threads": threads} for name, future in futures.items()}


def cpu_seconds(children: bool = False) -> float:
    """CPU time (user + system, every thread) this process has used, with ``children`` that of its finished
    worker processes too: what a shared machine's load does not inflate, unlike wall time; on a dedicated
    machine wall time is about this / the threads torch runs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    if children:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += usage.ru_utime + usage.ru_stime
    return total


def describe(run: config.RunConfig) -> dict[str, Any]:
    """The settings an arm is made of."""
    return {"variant": run.variant, "encoder": run.encoder, "split": run.split_name, "seed": run.seed,
            **{name: getattr(run, name) for name in (
                "sampling", "working_resolution", "foreground_share", "full_resolution_skips", "residual_input", "loss",
                "loss_params", "class_weights", "tta", "calibrate_thin", "amp", "lr", *report.BUDGET_FIELDS)},
            "dtype": devices.dtype_name(devices.autocast_dtype(run.amp, torch.device("cpu")))}


def scores(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a run's metrics.json says about thin damage: strict per-class IoU, thin-damage IoU of the model and
    the filter, clIoU, and the aim's two criteria."""
    test = metrics["test"]
    thin = test["thin"]
    per_class = {name: entry["iou"] for name, entry in test["per_class"].items()}
    present = [name for name in taxonomy.THIN_CLASSES if per_class.get(name) is not None]
    return {
        "evaluated_at": test["evaluated_at"], "test_images": test["n_images"], "test_miou": test["miou"],
        "all_clean_miou": test["all_clean_miou"], "per_class_iou": per_class,
        "thin_damage_iou": thin["model_iou"], "filter_thin_damage_iou": thin["filter_iou"], "filter_k": thin["filter"]["k"],
        "thin_damage_cliou": thin["model"]["cliou"], "filter_thin_damage_cliou": thin["filter"]["cliou"],
        "tolerant_score": thin["tolerant_score"]["label"],
        "thin_classes": {name: {"strict_iou": per_class.get(name), "cliou": entry["model_cliou"],
                                "filter_recall": entry["filter_recall"], "filter_iou": entry["filter_iou"],
                                "support": entry["support"]} for name, entry in thin["per_class"].items()},
        "ratio_to_filter": (None if not thin["filter_iou"] or thin["model_iou"] is None
                            else thin["model_iou"] / thin["filter_iou"]),
        "thin_classes_at_aim": sum(per_class[name] >= AIM_CLASS_IOU for name in present),
        "thin_classes_present": len(present),
    }


def rescored(run: config.RunConfig, tta: bool, thin_factor: float) -> dict[str, Any]:
    """The recipe's own best checkpoint tested again (no training) with or without flip TTA and at ``thin_factor``
    (1: the argmax as trained; the run's own is in its metrics.json)."""
    import dataclasses

    from heritage.data import working
    from heritage.inference import predict
    from heritage.modeling import residual, thin, thin_prior, tiling
    from heritage.training import evaluation

    start, cpu = time.perf_counter(), cpu_seconds()
    model, _ = predict.load_model(config.run_dir(run), "cpu")
    _, val_ids, test_ids = train.check_inputs(run)
    sets = {part: working.EvaluationSet(run.data_dir, ids, run.image_size, run.working_resolution, "working",
                                        run.cache_dir, progress=False)
            for part, ids in (("val", val_ids), ("test", test_ids))}
    k_choice = residual.choose_k(sets["val"].scored(i) for i in range(len(sets["val"])))
    thin_scores = thin.ThinDamageScores(k_choice.k)
    window = tiling.SlidingWindow(tile=run.image_size, batch_size=run.batch_size, tta=tta,
                                  dtype=devices.autocast_dtype(run.amp, torch.device("cpu")),
                                  class_scale=thin_prior.class_scale(thin_factor))
    test = evaluation.evaluate_images(model, sets["test"], devices.Distributed(), window, run.hierarchical,
                                      evaluation.Outputs(scores=[thin_scores])).metrics
    metrics = {"test": {**test, "thin": thin_scores.result(), "evaluated_at": run.working_resolution}}
    return {**describe(dataclasses.replace(run, tta="flip" if tta else "none")), "thin_factor": thin_factor,
            "steps": None, "trained": "no: the thin arm's checkpoint", **scores(metrics),
            "wall_time_s": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu}


def step_cost(arms: dict[str, config.RunConfig], rounds: int, steps: int) -> dict[str, Any]:
    """Seconds per training step (forward, loss, backward, AdamW) of the recipe's model and loss against the
    main configuration's, on the same random batch, interleaved in one process, in float32 and in bf16
    (where the CPU has it natively)."""
    from heritage.modeling import losses, models
    from heritage.training import engine

    results: dict[str, Any] = {}
    dtypes = [("float32", None)] + ([("bf16", torch.bfloat16)] if devices.cpu_has_native_bf16() else [])
    for dtype_label, dtype in dtypes:
        timings: dict[str, list[float]] = {"letterbox": [], "thin": []}
        setups = {}
        for arm in timings:
            run = arms[arm]
            torch.manual_seed(0)
            model = models.build_run_model(run.to_dict())
            model = model.to(memory_format=torch.channels_last)
            loss_fn = losses.build_loss(run.loss, class_weights=torch.ones(taxonomy.NUM_CLASSES), **run.loss_params)
            optimizer = engine.build_optimizer(model.parameters(), run.lr, run.weight_decay, torch.device("cpu"))
            setups[arm] = (model, loss_fn, optimizer)
        images = torch.randn(arms["thin"].batch_size, 3, arms["thin"].image_size, arms["thin"].image_size)
        images = images.to(memory_format=torch.channels_last)
        target = torch.randint(0, taxonomy.NUM_CLASSES, (arms["thin"].batch_size, *images.shape[2:]))
        for round_index in range(rounds + 1):  # the first round warms up and is left out
            for arm, (model, loss_fn, optimizer) in setups.items():
                start = time.perf_counter()
                for _ in range(steps):
                    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                        loss = loss_fn(model(images), target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                if round_index:
                    timings[arm].append((time.perf_counter() - start) / steps)
        medians = {arm: statistics.median(values) for arm, values in timings.items()}
        results[dtype_label] = {"seconds_per_step": medians, "rounds": timings,
                                "thin_over_main": medians["thin"] / medians["letterbox"]}
    return {"what": (f"one training step (batch {arms['thin'].batch_size}, {arms['thin'].image_size} px, forward, "
                     "loss, backward, fused AdamW), the recipe's model and loss against the main configuration's, "
                     f"{rounds} interleaved rounds of {steps} steps, medians; the data loading (letterbox or patch "
                     "crops) is not in it"), **results}


def aim(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    thin = results["thin"]
    ratio = thin["ratio_to_filter"]
    classes = {name: entry["strict_iou"] for name, entry in thin["thin_classes"].items()}
    return {
        "criterion": (f"the thin recipe's thin-damage IoU >= {AIM_RATIO} x the residual filter's on the same test "
                      f"pixels, and each of {', '.join(taxonomy.THIN_CLASSES)} at strict test IoU >= {AIM_CLASS_IOU}"),
        "thin_damage_iou": thin["thin_damage_iou"], "filter_thin_damage_iou": thin["filter_thin_damage_iou"],
        "ratio_to_filter": ratio, "ratio_met": ratio is not None and ratio >= AIM_RATIO,
        "strict_iou": classes,
        "classes_met": all(value is not None and value >= AIM_CLASS_IOU for value in classes.values()),
        "met": bool(ratio is not None and ratio >= AIM_RATIO
                    and all(value is not None and value >= AIM_CLASS_IOU for value in classes.values())),
    }


def contributions(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each ablation's thin-damage IoU and strict thin-class IoUs minus the full recipe's: what removing that
    ingredient cost (negative: the ingredient helped)."""
    thin = results["thin"]
    rows = {}
    for name, row in results.items():
        if not name.startswith("thin "):
            continue
        rows[name] = {
            "thin_damage_iou": row["thin_damage_iou"],
            "thin_damage_iou_minus_recipe": _difference(row["thin_damage_iou"], thin["thin_damage_iou"]),
            "strict_iou_minus_recipe": {c: _difference(row["thin_classes"][c]["strict_iou"],
                                                       thin["thin_classes"][c]["strict_iou"])
                                        for c in taxonomy.THIN_CLASSES},
            "test_miou_minus_recipe": _difference(row["test_miou"], thin["test_miou"])}
    return rows


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs over every training sample, the same in each arm")
    parser.add_argument("--amp", default="bf16" if devices.cpu_has_native_bf16() else "off",
                        choices=config.AMP_MODES, help="every arm's amp (default: bf16 where the CPU has it natively)")
    parser.add_argument("--ablation", action="store_true", help="also train the recipe without each ingredient")
    parser.add_argument("--n-images", type=int, default=STAND_IN["n_images"])
    parser.add_argument("--longest-side", type=int, default=STAND_IN["longest_side"])
    parser.add_argument("--data", type=Path, help="data folder, parquet shards or export instead of the stand-in")
    parser.add_argument("--step-rounds", type=int, default=5, help="interleaved rounds of the step-cost timing (0: none)")
    parser.add_argument("--jobs", type=int, default=1, choices=(1, 2, 3), help="train that many arms side by side")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", help="appended to the file name (thin-<cpu>-<date>-<tag>.json): runs of one day "
                        "kept apart")
    args = parser.parse_args(argv)
    commit = runs.git_commit()
    load_before = os.getloadavg()
    start, cpu = time.perf_counter(), cpu_seconds(children=True)
    stand_in = {"n_images": args.n_images, "longest_side": args.longest_side}
    device = runs.cpu_name()
    path = result_path(args.out, device, date.today().isoformat(), prefix="thin-")
    if args.tag:
        path = path.with_name(f"{path.stem}-{args.tag}{path.suffix}")
    results: dict[str, dict[str, Any]] = {}
    timing: dict[str, Any] = {}

    def write(stage: str) -> None:
        """The record so far (after each arm: a run cut short by its budget still says what it got)."""
        filters = {row["filter_thin_damage_iou"] for row in results.values()}
        if len(filters) > 1:
            raise errors.CommandFailed(f"the arms were not scored on the same test pixels: filter thin-damage IoUs "
                                       f"{filters}")
        record = {
            "device": device, "date": date.today().isoformat(), "git_commit": commit, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "native_bf16": devices.cpu_has_native_bf16(),
            "load_average_before": load_before, "load_average_now": os.getloadavg(), "stage": stage,
            "data": str(args.data) if args.data else {"synthetic": stand_in, "seed": 0},
            "poc": POC, "encoder": ENCODER, "thin_classes": list(taxonomy.THIN_CLASSES),
            "same_budget": {name: getattr(arms["letterbox"], name) for name in report.BUDGET_FIELDS},
            "filter_thin_damage_iou": next(iter(filters), None), "results": results,
            "aim": aim(results) if "thin" in results else None,
            "ablation": contributions(results) if args.ablation and "thin" in results else None,
            "step_cost": timing.get("step_cost"), "wall_time_s": {"total": time.perf_counter() - start, **timing.get(
                "wall", {})}, "jobs": args.jobs, "cpu_seconds_total": cpu_seconds(children=True) - cpu,
            # on a dedicated machine of this many cores the work takes at least its CPU time / the cores
            "cores": os.cpu_count(),
            "dedicated_minutes_lower_bound": (cpu_seconds(children=True) - cpu) / os.cpu_count() / 60,
            "budget_minutes": BUDGET_MINUTES,
            "arguments": {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()},
            "defaults_changed": {name: value for name, value in vars(args).items()
                                 if name != "out" and value != parser.get_default(name)},
            "note": ("wall times on a CPU shared with other jobs (see the load averages): compare scores, and timings "
                     "only within this file; a stand-in's numbers say nothing about real artworks"),
        }
        fileio.write_json(path, record)

    with tempfile.TemporaryDirectory(prefix="thin-check-") as scratch:
        scratch = Path(scratch)
        data_dir = preparation.prepare_data("smoke", args.data, scratch / "data", synthetic=stand_in)
        arms = arm_configs(data_dir, scratch / "runs", args.epochs, args.amp)
        ordered = {name: arms[name] for name in ARM_ORDER}
        if args.jobs <= 1:  # the recipe first: what a cut-short run must not lack
            for name, run in ordered.items():
                results[name] = train_arm(run)
                write(f"{len(results)} of {len(ordered)} arms")
        else:
            results.update(train_arms(ordered, args.jobs))
        timing["wall"] = {"three_arms": time.perf_counter() - start}
        write("three arms")
        if args.ablation:
            factor = results["thin"]["thin_factor"]
            results["thin without flip TTA"] = rescored(arms["thin"], tta=False, thin_factor=factor)
            results["thin without the val-chosen factor"] = rescored(arms["thin"], tta=True, thin_factor=1.0)
            results.update(train_arms({name: config.RunConfig.from_dict(
                {**arms["thin"].to_dict(), **overrides, "runs_root": str(scratch / "runs" / name.replace(" ", "-"))},
                source=name) for name, overrides in ablations(arms).items()}, args.jobs))
            write("three arms and the ablations")
        if args.step_rounds:
            timing["step_cost"] = step_cost(arms, args.step_rounds, steps=3)
        write("done")
    for name, row in results.items():
        ratio = row["ratio_to_filter"]
        print(f"{name:>44s}: thin-damage IoU {row['thin_damage_iou'] or 0:.4f} (filter {row['filter_thin_damage_iou']:.4f}, "
              f"{'n/a' if ratio is None else f'{ratio:.2f}x'}), {row['thin_classes_at_aim']} of "
              f"{row['thin_classes_present']} thin classes >= {AIM_CLASS_IOU}, mIoU {row['test_miou']:.4f}, "
              f"{row['wall_time_s']:.0f} s")
    print(f"aim met: {aim(results)['met']} -> {path}")
    return path

if __name__ == "__main__":
    main()
