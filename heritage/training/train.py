"""``python -m heritage train``: one RunConfig -> one finished run folder.

:func:`run_training` assembles a run: the fold's ids from the split manifest, class weights counted
on the fold's training ids (saved as ``class_weights.json``), datasets (optionally preloaded into
RAM or /dev/shm), the model and the loss; :func:`heritage.training.engine.fit` trains it with model selection
on validation mIoU; the best checkpoint is then evaluated once on the test part, prediction panels
are drawn for a few test images, and ``metrics.json`` is written last.

Everything is validated before anything is written (:func:`check_inputs`): a run that cannot start
leaves no run folder behind.

Exit codes of the command: 0 done, 2 bad configuration or data (or the run folder held by another
``train``: :mod:`heritage.locks`), 74 (:data:`heritage.errors.EXIT_MACHINE`) a fault of the machine (a full
disk, the data folder removed meanwhile; the checkpoints written so far are kept, run it again to resume),
75 (:data:`heritage.errors.EXIT_REQUEUE`) stopped by SIGTERM/SIGUSR1 after writing ``checkpoint_last.pt``
(run it again to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heritage import errors, fileio, locks
from heritage.config import ConfigError, RunConfig, load_run_config, parse_overrides, run_dir

if TYPE_CHECKING:  # the data stage is imported when a run starts, not for `--help`
    from heritage.data import splits


def check_inputs(config: RunConfig) -> splits.FoldIds:
    """The fold's (train, val, test) ids, after checking the data folder, its ``metadata.csv``, the
    protocol's split manifest and the fold; raises an expected error naming what is missing."""
    from heritage.data import datafolder, splits

    data = Path(config.data_dir)
    if not data.is_dir():
        raise errors.MissingInputError(
            f"data_dir: {data} does not exist (make it with `python -m heritage data ingest`, or `python -m "
            f"heritage paper --prepare-data-only` for the synthetic stand-in, and pass it with --data)")
    if not (data / datafolder.METADATA_FILE).is_file():
        raise errors.MissingInputError(f"data_dir: {data} is not a data folder: it has no {datafolder.METADATA_FILE} "
                                       "(run `python -m heritage data ingest` into it first)")
    manifest = splits.load_manifest(data, config.protocol)
    return splits.fold_ids(manifest, config.fold)


def run_training(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Train ``config`` into its run folder (resuming if it was interrupted) and return the metrics.

    Raises :class:`heritage.training.engine.Interrupted` when stopped by SIGTERM/SIGUSR1 (after saving
    ``checkpoint_last.pt``). Under ``torchrun``/``srun`` every process calls this; rank 0 writes.
    """
    import numpy as np
    import torch
    import torch.distributed as torch_dist
    from tqdm import tqdm

    from heritage.data import weights, working
    from heritage.training import devices, engine, reproducibility, runs
    from heritage.modeling import losses, models

    train_ids, val_ids, test_ids = check_inputs(config)  # before the run folder exists
    dist = devices.setup_distributed()
    held = contextlib.ExitStack()  # the run folder's lock, released on every way out
    try:
        folder = run_dir(config)
        if dist.is_main:
            # quiet runs (a POC notebook) say it on stdout, as the scale warnings below
            warn = _warning_printer(sys.stderr if progress else sys.stdout)
            held.enter_context(locks.hold(folder, "heritage train", warn=warn))
            for junk in [*fileio.remove_stale_temporaries(folder),  # a killed run's half-written files
                         *fileio.remove_stale_temporaries(folder / runs.PREDICTIONS_DIR)]:
                warn(f"removed {junk}, left by a run that was killed")
            for message in config.implausible():
                warn(message)
            runs.prepare(config)
            (folder / runs.METRICS_FILE).unlink(missing_ok=True)  # not finished until written again

        if config.max_train_samples is not None and config.max_train_samples < len(train_ids):
            rng = np.random.default_rng(config.seed)
            train_ids = sorted(rng.choice(train_ids, size=config.max_train_samples, replace=False).tolist())

        scale = None
        if dist.is_main:  # before training: the warning matters before the hours are spent
            scale = scale_record(config, [*train_ids, *val_ids, *test_ids], train_ids, progress=progress)
            resuming = any((folder / name).exists() for name in runs.RESUME_CHECKPOINTS)
            # Quiet runs (a POC notebook, a bench) print it to stdout: in a run report it is part of the
            # result, where stderr would be noise the report test refuses.
            stream = sys.stderr if progress else sys.stdout
            for message in [] if resuming else vanishing_messages(config, scale):  # said when it started
                tqdm.write(f"heritage train: warning: {message}", file=stream)

        class_weights = None
        if config.class_weights is not None:
            class_weights = weights.class_weights_for_ids(config.data_dir, train_ids, config.class_weights,
                                                          config.class_weight_max_ratio, progress=progress)
        if dist.is_main:
            runs.write_class_weights(folder, class_weights, config.class_weights, config.class_weight_max_ratio)

        datasets = {"train": _training_set(config, train_ids, progress and dist.is_main)}
        # val and test: whole images at the working resolution, in both sampling modes
        model_input = "letterbox" if config.sampling == "letterbox" else "working"
        for part, ids in (("val", val_ids), ("test", test_ids)):
            datasets[part] = working.EvaluationSet(config.data_dir, ids, config.image_size, config.working_resolution,
                                                model_input, cache_dir=config.cache_dir,
                                                progress=progress and dist.is_main)

        reproducibility.seed_everything(config.seed)  # the initial weights are part of what the seed fixes
        model = models.build_run_model(config.to_dict(), pretrained=config.pretrained)
        loss_fn = losses.build_loss(
            config.loss, class_weights=None if class_weights is None else torch.as_tensor(class_weights,
                                                                                          dtype=torch.float32),
            **config.loss_params)
        fitted = engine.fit(config, model, loss_fn, datasets["train"], datasets["val"], dist, progress=progress)

        with reproducibility.kernels(reproducibility.kernel_mode(dist.device)):  # as fit evaluated
            result = _final_evaluation(config, model, datasets, fitted, dist, progress, scale)
        if dist.enabled:
            shared = [result]
            torch_dist.broadcast_object_list(shared, src=0)
            result = shared[0]
        return result
    except OSError as err:  # a full disk, the data folder removed meanwhile: the machine's, said in one line
        raise _machine_fault(config, run_dir(config), err) from None
    finally:
        held.close()
        devices.teardown_distributed(dist)


def _warning_printer(stream: Any) -> Any:
    from tqdm import tqdm

    def warn(message: str) -> None:
        tqdm.write(f"heritage train: warning: {message}", file=stream)

    return warn


def _machine_fault(config: RunConfig, folder: Path, err: OSError) -> OSError:
    """What to raise for ``err`` met while training: a fault of the machine (a full disk, data removed
    meanwhile) as :class:`~heritage.errors.MachineError` saying what is kept and how to resume; ``err``
    itself otherwise."""
    from heritage.data import datafolder
    from heritage.training import runs

    data = Path(config.data_dir)
    if not data.is_dir() or not (data / datafolder.METADATA_FILE).is_file():
        fault = f"data_dir {data} disappeared while the run was using it; restore it"
    elif isinstance(err, errors.MachineError) or fileio.is_machine_fault(err):
        described = str(err) if isinstance(err, errors.MachineError) else fileio.describe_fault(err.filename or folder,
                                                                                                err)
        fault = f"{described}; free space or make the file system writable again"
    elif isinstance(err, FileNotFoundError) and not isinstance(err, errors.HeritageError):
        fault = f"{err.filename or _first_line(err)} was removed while the run was using it; restore it"
    else:
        return err
    kept = [name for name in (runs.LAST_CHECKPOINT, runs.PREVIOUS_CHECKPOINT) if (folder / name).is_file()]
    resume = (f"then run the same command again: it resumes from {folder / kept[0]}" if kept
              else f"then run the same command again (no checkpoint was written yet in {folder}: it starts over)")
    return errors.MachineError(f"{fault}, {resume}")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _training_set(config: RunConfig, train_ids: list[str], progress: bool) -> Any:
    """Letterboxed whole images (optionally preloaded) or patches of the working resolution."""
    from heritage.data import datasets, working

    if config.sampling == "patch":
        cache = working.WorkingCache(config.data_dir, config.working_resolution, config.cache_dir)
        return working.PatchDataset(cache, train_ids, config.image_size, config.foreground_share, seed=config.seed,
                                    progress=progress)
    cache = None
    if config.preload:
        cache = datasets.PreloadCache(config.data_dir, train_ids, config.image_size,
                                      shm_dir="/dev/shm" if config.shm else None, progress=progress)
    return datasets.SegmentationDataset(config.data_dir, train_ids, config.image_size, train=True, cache=cache,
                                        seed=config.seed)


def scale_record(config: RunConfig, ids: list[str], train_ids: list[str] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """``metrics.json``'s ``scale``: pixels the model sees, and pixels scored, per pixel of the reference
    image, over ``ids``; with ``train_ids``, the damage components of that training split too.

    The reference is the original scan when ``metadata.csv`` has ``original_width``/``original_height``
    columns, else the data folder's stored image (``width``/``height``). Letterbox: image_size / longest
    side; patch: the working resolution's longest side / the reference's. Min, median and max.
    ``components`` (:mod:`heritage.data.scale`, one mask read per training id): per damage class, the number of
    8-connected components, their median area and share <= 2 px, in pixels the model sees
    (``model_input``) and in pixels of the data folder's stored masks (``stored``, what predict rescales).
    """
    import numpy as np

    from heritage.data import datafolder, scale, stats

    table = datafolder.read_metadata(config.data_dir).set_index("id")
    reference = np.max(datafolder.original_size(table).loc[ids].to_numpy(dtype=np.float64), axis=1)
    if datafolder.has_original_size(table):
        where = "original scan (metadata.csv original_width/original_height)"
    else:
        where = ("data folder's stored image (metadata.csv width/height); the original scan size is not "
                 "recorded, so factors are relative to the data folder")
    stored = _stored_longest(table, ids)
    working = stored * scale.working_factor(stored, config.working_resolution)
    seen = stored * model_input_factors(config, stored)

    def summary(factors: np.ndarray) -> dict[str, float]:
        return {name: float(f"{value:.6g}") for name, value in
                (("min", factors.min()), ("median", float(np.median(factors))), ("max", factors.max()))}

    record: dict[str, Any] = {"reference": where, "sampling": config.sampling, "n_images": len(ids),
                              "model_input": summary(seen / reference), "evaluation": summary(working / reference)}
    if train_ids is not None:
        areas = stats.read_component_areas(config.data_dir, train_ids, progress=progress)
        record["components"] = {
            "part": "train", "n_images": len(train_ids), "connectivity": 8,
            "model_input": scale.summarise(areas, model_input_factors(config, _stored_longest(table, train_ids))),
            "stored": scale.summarise(areas, 1.0)}
    return record


def model_input_factors(config: RunConfig, stored_longest: Any) -> Any:
    """Resize factor from each stored image (by its longest side) to what the model sees: letterbox
    image_size / longest side, patch the working resolution's factor."""
    import numpy as np

    from heritage.data import scale

    if config.sampling == "letterbox":
        return config.image_size / np.asarray(stored_longest, dtype=np.float64)
    return scale.working_factor(stored_longest, config.working_resolution)


def _stored_longest(table: Any, ids: list[str]) -> Any:
    import numpy as np

    return np.maximum(table.loc[ids, "width"], table.loc[ids, "height"]).to_numpy(dtype=np.float64)


def vanishing_messages(config: RunConfig, record: dict[str, Any]) -> list[str]:
    """The :func:`heritage.data.scale.vanishing_messages` of a run's training split at the model's input."""
    from heritage.data import scale

    if "components" not in record:
        return []
    factor = record["model_input"]["median"]
    where = (f"{config.poc_key}/{config.encoder}/{config.split_name}: at the model's input ({config.sampling}, "
             f"median {factor:.3g} px per px of the {record['reference'].split(' (')[0]})")
    hint = " (sampling=patch keeps the stored size)" if config.sampling == "letterbox" else ""
    return [message + hint for message in scale.vanishing_messages(record["components"]["model_input"], where)]


def _final_evaluation(config: RunConfig, model: Any, datasets: dict[str, Any], fitted: Any, dist: Any,
                      progress: bool, scale: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the best checkpoint once on the test part (every process a shard; and the residual filter, its
    k chosen on the validation part, on the same pixels, its counts summed over the processes), then, on rank 0,
    draw panels and write ``metrics.json`` into the run folder (the other processes return an empty dict)."""
    import numpy as np

    from heritage.data import datafolder, taxonomy, working
    from heritage.training import devices, evaluation, runs
    from heritage.modeling import models, registry, residual, thin, thin_prior, tiling

    folder = run_dir(config)
    test_set, val_set = datasets["test"], datasets["val"]
    model.load_state_dict(runs.load_best_checkpoint(folder)["model"])
    dtype = devices.autocast_dtype(config.amp, dist.device)
    # The filter's threshold from the validation images alone (no model: one pass), then scored on test.
    k_choice = residual.choose_k(val_set.scored(index) for index in range(len(val_set)))
    thin_scores = thin.ThinDamageScores(k_choice.k)
    window = tiling.SlidingWindow(tile=config.image_size, batch_size=config.batch_size, dtype=dtype,
                                  tta=config.tta == "flip")
    factor_choice = None
    if config.calibrate_thin:  # the model's thin factor from the validation images too, then applied on test
        factor_choice = evaluation.choose_thin_factor(model, val_set, window, dist.device)
        window = dataclasses.replace(window, class_scale=thin_prior.class_scale(factor_choice.factor))
    outputs = evaluation.Outputs(panels=config.n_prediction_panels, per_image=True, scores=[thin_scores])
    test, eval_images_per_s, panels = evaluation.evaluate_images(
        model, test_set, dist, window, config.hierarchical, outputs, "test" if progress and dist.is_main else None)
    if not dist.is_main:
        return {}
    test["thin"] = thin_scores.result()
    test["thin"]["filter"]["k_choice"] = k_choice.to_json()
    per_image = test.pop("per_image")
    source_of = datafolder.read_metadata(config.data_dir).set_index("id")["source_id"]
    runs.write_per_image(folder, runs.per_image_table(per_image["ids"], list(source_of.loc[per_image["ids"]]),
                                                      per_image["confusion"].numpy()))
    evaluated_at = working.describe_resolution(config.working_resolution)

    for sample_id, picture, truth, prediction in panels:  # what was scored, at the evaluation resolution
        prediction = np.where(truth == taxonomy.IGNORE_INDEX, taxonomy.IGNORE_INDEX, prediction).astype(np.uint8)
        runs.save_prediction_panel(folder / runs.PREDICTIONS_DIR / f"{sample_id}.png", picture, truth, prediction,
                                   title=f"{sample_id} - {config.poc_key} / {config.encoder} / {config.split_name}")

    metrics: dict[str, Any] = {
        "poc": config.poc, "variant": config.variant, "encoder": config.encoder,
        "family": registry.encoder_spec(config.encoder).family, "architecture": config.architecture,
        "loss": config.loss, "class_weights": config.class_weights, "protocol": config.protocol,
        "fold": config.fold, "profile": config.profile, "seed": config.seed,
        "config_hash": config.config_hash(), "image_size": config.image_size, "batch_size": config.batch_size,
        "lr": config.lr, "epochs": config.epochs,
        "global_batch_size": config.batch_size * dist.world_size, "lr_applied": config.lr_for(dist.world_size),
        "code_hash": runs.code_hash(),  # the code this process loaded (runs.CODE_PACKAGES): `paper` retrains on a change
        "params_m": round(models.count_parameters(model) / 1e6, 3),
        "device": runs.device_name(dist.device), "world_size": dist.world_size,
        "amp": config.amp, "autocast_dtype": devices.dtype_name(dtype), "kernels": fitted.kernels,
        "full_resolution_skips": config.full_resolution_skips, "residual_input": config.residual_input,
        "tta": config.tta, "calibrate_thin": config.calibrate_thin,
        **({thin_prior.METRICS_KEY: factor_choice.to_json()} if factor_choice is not None else {}),
        "sampling": config.sampling, "working_resolution": config.working_resolution,
        "foreground_share": config.foreground_share if config.sampling == "patch" else None,
        "scale": scale,
        "best_epoch": fitted.best_epoch,
        "val": {**{key: fitted.best_val[key] for key in ("miou", "pixel_accuracy", "n_images")},
                "evaluated_at": evaluated_at},
        "test": {**{key: value for key, value in test.items() if key != "hierarchical"}, "evaluated_at": evaluated_at},
        "throughput": {"train_images_per_s": fitted.train_images_per_s, "eval_images_per_s": eval_images_per_s},
        "peak_memory_mb": fitted.peak_memory_mb,
        "wall_time_s": fitted.wall_time_s,
    }
    if config.hierarchical:
        metrics["hierarchical"] = test["hierarchical"]
    # Every run, leaky or not, also scores its test part the seeds' way (one cheap letterbox pass), so the
    # seeds-protocol table can show their metric beside ours on the same predictions.
    metrics["test"]["seeds_convention"] = evaluation.evaluate_seeds_convention(
        model, config.data_dir, list(test_set.ids), evaluation.Letterboxed(config.image_size, config.batch_size),
        dist.device, dtype, devices.uses_channels_last(config.channels_last, config.encoder, dist.device))
    runs.write_metrics(folder, metrics)
    # Finished: the resume state (model + optimizer, ~3x the model) is no longer needed.
    runs.remove_resume_checkpoints(folder)  # checkpoint_last.pt and its .prev
    return metrics


# -- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poc", help="POC key, e.g. poc59v2_flagship (not with --config)")
    parser.add_argument("--profile", help="smoke (CPU, seconds; the default) or full (the seeds' settings)")
    parser.add_argument("--encoder", help="default: the POC's first encoder")
    parser.add_argument("--fold", help="default: the protocol's first fold")
    parser.add_argument("--variant", help="a named variant of the POC (e.g. dice_focal)")
    parser.add_argument("--data", help="data folder (default: the config's data_dir)")
    parser.add_argument("--config", type=Path, help="a resolved config.yaml (e.g. from a run folder) to rerun")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="RunConfig fields, values parsed as YAML (epochs=3 grad_clip=null)")


def main(args: argparse.Namespace) -> int:
    from heritage.training import engine

    config = config_from_args(args)  # a ConfigError is the CLI's to print (one line, exit 2)
    try:
        metrics = run_training(config)
    except engine.Interrupted as stop:
        print(f"heritage train: {stop}", file=sys.stderr)
        return errors.EXIT_REQUEUE
    if metrics:
        print(f"{run_dir(config)}: test mIoU {metrics['test']['miou']:.4f} "
              f"(best epoch {metrics['best_epoch']}, {metrics['wall_time_s']:.0f} s)")
    return 0


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the command line describes (POC + options, or --config), with overrides."""
    overrides = parse_overrides(args.overrides)
    if args.data is not None:
        if "data_dir" in overrides and overrides["data_dir"] != args.data:
            raise ConfigError(f"data_dir given twice with different values: {args.data!r} (--data) and "
                              f"{overrides['data_dir']!r} (override data_dir=...); give it once")
        overrides["data_dir"] = args.data
    if args.config is not None:
        chosen = [f"--{name}" for name in ("poc", "profile", "encoder", "fold", "variant")
                  if getattr(args, name) is not None]
        if chosen:
            raise ConfigError(f"--config already fixes {', '.join(chosen)}; change fields with key=value")
        relabelling = [key for key in ("poc", "profile", "variant") if key in overrides]
        if relabelling:  # a resolved config has no POC layers left: only the label would change
            raise ConfigError(f"{args.config}: override {relabelling[0]}= would rename the run without applying "
                              f"that {relabelling[0]}'s settings; resolve it anew with --poc ... "
                              f"--{relabelling[0]} ... instead")
        base = RunConfig.from_yaml(args.config).to_dict()
        return RunConfig.from_dict({**base, **overrides, **({"lr": None} if _rescales(overrides) else {})},
                                   source=str(args.config))
    if not args.poc:
        raise ConfigError("give --poc (or --config FILE.yaml)")
    return load_run_config(args.poc, args.profile, encoder=args.encoder, fold=args.fold, variant=args.variant,
                           overrides=overrides)


def _rescales(overrides: dict[str, Any]) -> bool:
    """Whether overrides change an input of the lr scaling rule without setting lr itself."""
    return "lr" not in overrides and any(k in overrides for k in ("batch_size", "base_batch_size", "base_lr"))

