"""heritage.training.train: a real smoke run fills its run folder; trained for minutes, it beats the all-Clean prediction."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace as dataclass_replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from heritage import cli, errors
from heritage.data import splits, taxonomy, working
from heritage.training import devices, engine, reproducibility, runs, train
from heritage.modeling import metrics, residual, thin
from heritage.pipeline import preparation
from heritage.report import design
from heritage.config import RunConfig, load_run_config, run_dir

SMOKE_POC, SMOKE_ENCODER = "poc58_baseline", "convnext_tiny"  # the POC's smoke encoder
# The learning test trains POC-5.9's smoke configuration with the budget of bench/learning_check.py's
# default: 15 epochs over every training sample (~840 steps, ~5 min on 2 cores) instead of the smoke
# paper's 3 epochs over 32 samples. POC-5.9 because Dice+Focal learns steadily from scratch over seeds
# (bench/results/learning-seeds-poc59-*.json) while plain Dice (POC-5.8) is seed-fragile (-poc58-).
LEARNING_POC = "poc59_dicefocal"
LEARNING_OVERRIDES = {"epochs": 15, "max_train_samples": None}
# "A clear margin": the test mIoU must exceed the all-Clean prediction's by this factor.
MARGIN = 1.3
THIN_POC = "poc59v2_flagship"
SHORT_RUN_FACTOR = 4.0


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    """The smoke paper's synthetic stand-in (heritage.pipeline.preparation.SYNTHETIC["smoke"]), made as `paper`
    makes it."""
    return preparation.prepare_data("smoke", data_dir=tmp_path_factory.mktemp("smoke") / "data")


def all_clean_miou(config: RunConfig) -> float:
    """Test mIoU of predicting Clean everywhere on the pixels runs are scored on (the data folder's masks at
    the working resolution), with the metrics code."""
    _, _, test_ids = splits.fold_ids(splits.load_manifest(config.data_dir, config.protocol), config.fold)
    matrix = metrics.ConfusionMatrix()
    for sample_id in test_ids:
        mask = torch.from_numpy(working.to_working_resolution(*working.read_sample(config.data_dir, sample_id),
                                                           config.working_resolution)[1])
        matrix.update(torch.zeros_like(mask)[None], mask[None])
    return matrix.compute()["miou"]


def train_smoke_configuration(poc: str, data_dir: Path, runs_root: Path, **overrides) -> tuple[RunConfig, dict]:
    config = load_run_config(poc, "smoke", encoder=SMOKE_ENCODER, overrides={
        "data_dir": str(data_dir), "runs_root": str(runs_root), **overrides})
    return config, train.run_training(config, progress=False)


@pytest.fixture(scope="module")
def smoke_run(smoke_data, tmp_path_factory):
    return train_smoke_configuration(SMOKE_POC, smoke_data, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def learning_run(smoke_data, tmp_path_factory):
    return train_smoke_configuration(LEARNING_POC, smoke_data, tmp_path_factory.mktemp("runs"), **LEARNING_OVERRIDES)


@pytest.fixture(scope="module")
def thin_guard():
    """bench/thin_guard.py: the guard's configuration and margin, and their record over seeds and precisions."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
        import thin_guard
    return thin_guard


@pytest.fixture(scope="module")
def thin_run(smoke_data, tmp_path_factory, thin_guard):
    config = thin_guard.guard_config(smoke_data, tmp_path_factory.mktemp("runs"))
    return config, train.run_training(config, progress=False)


@pytest.fixture(scope="module")
def short_thin_run(smoke_data, tmp_path_factory):
    """The thin variant after 2 steps, its factor chosen from one value (SHORT_RUN_FACTOR): whatever the validation
    IoUs, the test part must then be scored at a factor other than 1."""
    from heritage.modeling import thin_prior

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(thin_prior, "FACTORS", (SHORT_RUN_FACTOR,))
        return train_smoke_configuration(THIN_POC, smoke_data, tmp_path_factory.mktemp("runs"),
                                         variant=design.THIN_VARIANT, epochs=1, max_train_samples=16)


@pytest.mark.slow
def test_the_thin_recipe_trained_for_minutes_beats_the_residual_filter_on_thin_damage(thin_run, thin_guard):
    """A regression guard, not a timing: the flagship's thin variant (the recipe) trained 240 steps (about 2 min on
    2 cores) beats the residual filter's test thin-damage IoU by bench/thin_guard.py's MARGIN (its record over seeds
    and precisions: bench/results/thin-guard-*.json). bench/thin_check.py measures the recipe at a realistic size."""
    config, result = thin_run
    thin_record, factor = result["test"]["thin"], result["thin_factor"]["factor"]
    assert (config.variant, config.calibrate_thin, config.full_resolution_skips) == (design.THIN_VARIANT, True, True)
    assert thin_record["model_iou"] > thin_guard.MARGIN * thin_record["filter_iou"], (
        f"{config.variant}, {config.epochs} epochs of {config.max_train_samples} samples: thin-damage IoU "
        f"{thin_record['model_iou']:.4f} vs the filter's {thin_record['filter_iou']:.4f} (thin factor {factor:g})")


def test_a_calibrated_run_chooses_its_thin_factor_on_validation_and_tests_with_it(short_thin_run):
    """The factor in metrics.json is the validation sweep's over the best checkpoint, the test part is scored with it,
    and predict and the galleries read it back. Recomputed here from the checkpoint, whose fresh model differs from
    training's in memory layout: a few pixels of bf16 autocast may differ, so scores are compared to 1e-3."""
    from heritage.inference import predict
    from heritage.modeling import thin_prior, tiling
    from heritage.training import evaluation

    config, result = short_thin_run
    folder = run_dir(config)
    model, _ = predict.load_model(folder, "cpu")
    _, val_ids, test_ids = splits.fold_ids(splits.load_manifest(config.data_dir, config.protocol), config.fold)
    sets = {part: working.EvaluationSet(config.data_dir, ids, config.image_size, config.working_resolution, "working",
                                        config.cache_dir, progress=False) for part, ids in (("val", val_ids),
                                                                                            ("test", test_ids))}
    window = tiling.SlidingWindow(tile=config.image_size, batch_size=config.batch_size, tta=True,
                                  dtype=devices.autocast_dtype(config.amp, torch.device("cpu")))
    sweep = thin_prior.FactorSweep([SHORT_RUN_FACTOR])
    for index in range(len(sets["val"])):  # what choose_thin_factor sweeps, written out
        probabilities = torch.cat([band for _, band in tiling.iter_probability_bands(
            model, sets["val"][index].model_input, window, torch.device("cpu"), progress=False)], dim=1)
        sweep.add_scores(thin_prior.thin_odds(probabilities), sets["val"][index].mask)
    recorded = result["thin_factor"]
    assert (recorded["factor"], recorded["chosen_on"], recorded["n_images"]) == (SHORT_RUN_FACTOR, "val", len(val_ids))
    assert recorded["val_iou"] == pytest.approx(list(sweep.ious()), abs=1e-3)
    assert predict.run_thin_factor(folder) == SHORT_RUN_FACTOR

    def test_thin_iou(factor: float) -> float:
        scores = thin.ThinDamageScores(result["test"]["thin"]["filter"]["k"])
        calibrated = dataclass_replace(window, class_scale=thin_prior.class_scale(factor))
        evaluation.evaluate_images(model, sets["test"], devices.Distributed(), calibrated,
                                   outputs=evaluation.Outputs(scores=[scores]))
        return scores.result()["model_iou"]

    at_factor, at_one = test_thin_iou(SHORT_RUN_FACTOR), test_thin_iou(1.0)
    assert result["test"]["thin"]["model_iou"] == pytest.approx(at_factor, abs=1e-3)
    assert abs(at_factor - at_one) > 2e-3, "the factor must change more than the tolerance of this check"


@pytest.mark.slow
def test_a_smoke_configuration_trained_for_minutes_beats_the_all_clean_prediction(learning_run):
    config, result = learning_run
    baseline = result["test"]["all_clean_miou"]
    assert result["test"]["miou"] > MARGIN * baseline, (
        f"{config.poc}/{config.encoder}, {config.epochs} epochs: test mIoU {result['test']['miou']:.4f} "
        f"vs all-Clean {baseline:.4f}")
    learnt = [name for name, entry in result["test"]["per_class"].items()
              if name != "Clean" and entry["iou"] is not None and entry["iou"] > 0.05]
    assert len(learnt) >= 2, f"damage classes with test IoU > 0.05: {learnt}"


def test_the_run_folder_holds_every_documented_file(smoke_run):
    config, result = smoke_run
    folder = run_dir(config)
    written = yaml.safe_load((folder / runs.CONFIG_FILE).read_text())
    assert written["config_hash"] == config.config_hash() and RunConfig.from_yaml(folder / runs.CONFIG_FILE) == config
    environment = json.loads((folder / runs.ENVIRONMENT_FILE).read_text())
    assert environment["packages"]["torch"] and environment["python"]
    assert {"device", "hostname", "git_commit", "slurm", "python"} <= set(environment)
    assert environment["code_hash"] == result["code_hash"] == runs.code_hash()  # the code that made the run
    history = (folder / runs.HISTORY_FILE).read_text().splitlines()
    assert len(history) == 1 + config.epochs and history[0].startswith("epoch,train_loss,lr")
    assert json.loads((folder / runs.CLASS_WEIGHTS_FILE).read_text())["method"] == config.class_weights
    panels = sorted((folder / runs.PREDICTIONS_DIR).glob("*.png"))
    assert len(panels) == config.n_prediction_panels
    best = torch.load(folder / runs.BEST_CHECKPOINT, weights_only=True)
    assert best["epoch"] == result["best_epoch"] and best["config"] == config.to_dict()
    assert not (folder / runs.LAST_CHECKPOINT).exists()  # finished: the resume state is dropped
    assert json.loads((folder / runs.METRICS_FILE).read_text()) == json.loads(json.dumps(result))


def test_metrics_follow_the_documented_schema(smoke_run):
    config, result = smoke_run
    assert {"poc", "variant", "encoder", "family", "architecture", "loss", "class_weights", "protocol", "fold",
            "profile", "seed", "config_hash", "image_size", "batch_size", "lr", "epochs", "params_m", "device",
            "best_epoch", "val", "test", "throughput", "peak_memory_mb", "wall_time_s"} <= set(result)
    assert (result["poc"], result["encoder"], result["fold"], result["config_hash"]) == (
        config.poc, config.encoder, config.fold, config.config_hash())
    # the precision and kernels the run used: amp auto is bf16 on a CPU with native bf16, float32 elsewhere
    cpu = torch.device("cpu")
    assert (result["amp"], result["autocast_dtype"]) == ("auto", "bfloat16" if devices.cpu_has_native_bf16() else "float32")
    assert result["kernels"] == {"deterministic": True, "cudnn_benchmark": False, "tf32_matmul": False,
                                 "tf32_conv": False} == reproducibility.kernel_mode(cpu).record()
    test = result["test"]
    assert {"miou", "pixel_accuracy", "n_images", "convention", "per_class"} <= set(test)
    _, _, test_ids = splits.fold_ids(splits.load_manifest(config.data_dir, config.protocol), config.fold)
    assert test["n_images"] == len(test_ids)
    present = [c["iou"] for c in test["per_class"].values() if c["present"]]
    assert test["miou"] == pytest.approx(sum(present) / len(present))
    assert all(c["iou"] is None for c in test["per_class"].values() if not c["present"])
    assert result["throughput"]["train_images_per_s"] > 0 and result["throughput"]["eval_images_per_s"] > 0
    assert "hierarchical" not in result
    assert test["evaluated_at"] == result["val"]["evaluated_at"] == "native: the data folder's stored size"
    assert (result["sampling"], result["working_resolution"]) == ("letterbox", "native")
    assert result["scale"]["model_input"]["max"] == pytest.approx(config.image_size / 96, rel=0.05)  # smoke: <= 96 px
    # the trivial baseline recorded beside the model's mIoU equals scoring an all-Clean prediction
    assert test["all_clean_miou"] == pytest.approx(all_clean_miou(config))


def test_thin_damage_is_scored_beside_the_residual_filter_its_k_chosen_on_validation(smoke_run):
    config, result = smoke_run
    record = result["test"]["thin"]
    for name in taxonomy.THIN_CLASSES:  # the same pixels as the per-class scores
        assert record["per_class"][name]["model_iou"] == result["test"]["per_class"][name]["iou"]
    _, val_ids, test_ids = splits.fold_ids(splits.load_manifest(config.data_dir, config.protocol), config.fold)

    def scored(ids):
        return (working.to_working_resolution(*working.read_sample(config.data_dir, sample_id), config.working_resolution)
                for sample_id in ids)

    chosen = residual.choose_k(scored(val_ids))  # validation only
    assert record["filter"]["k_choice"] == chosen.to_json() and record["filter"]["k"] == chosen.k
    on_test = residual.ThresholdSweep([chosen.k])
    for picture, mask in scored(test_ids):
        on_test.update(picture, mask)
    expected = on_test.ious()[0]
    assert record["filter_iou"] == (None if np.isnan(expected) else pytest.approx(expected))
    assert record["n_images"] == len(test_ids) and record["tolerant_score"]["tolerance_px"] == thin.TOLERANCE_PX


def test_is_complete_compares_the_config_hash_and_given_one_the_code_hash(smoke_run):
    config, _ = smoke_run
    folder = run_dir(config)
    assert runs.is_complete(folder, config)
    changed = load_run_config(config.poc, "smoke", encoder=config.encoder, overrides={"data_dir": config.data_dir, "runs_root": config.runs_root,
                                                              "epochs": config.epochs + 1})
    assert not runs.is_complete(folder, changed)
    assert not runs.is_complete(folder.parent / "elsewhere", config)
    assert runs.is_complete(folder, config, runs.code_hash()) and not runs.is_complete(folder, config, "0ther")


def _args(*words: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args(list(words))


def test_command_line_errors_exit_2_with_the_reason(capsys, smoke_data):
    for words, reason in ((["--poc", SMOKE_POC, "--data", str(smoke_data), "epoch=3"],
                           "unknown key 'epoch' (did you mean 'epochs'?)"),
                          (["--data", str(smoke_data)], "give --poc"),
                          (["--config", "run/config.yaml", "--poc", SMOKE_POC], "--config already fixes --poc")):
        assert cli.main(["train", *words]) == 2
        err = capsys.readouterr().err
        assert err.startswith("heritage train: ") and reason in err and err.count("\n") == 1, err


def test_config_file_reruns_a_run_with_overrides(smoke_run, tmp_path):
    config, _ = smoke_run
    args = _args("--config", str(run_dir(config) / runs.CONFIG_FILE), f"runs_root={tmp_path}", "batch_size=4")
    rerun = train.config_from_args(args)
    assert rerun.runs_root == str(tmp_path) and rerun.batch_size == 4
    assert rerun.lr == pytest.approx(config.base_lr * 4 / config.base_batch_size)  # lr re-derived


def test_an_interrupted_run_exits_75(monkeypatch, smoke_data, capsys):
    def interrupted(config, progress=True):
        raise engine.Interrupted("SIGUSR1", 1, 3, Path("checkpoint_last.pt"))

    monkeypatch.setattr(train, "run_training", interrupted)
    assert train.main(_args("--poc", SMOKE_POC, "--data", str(smoke_data))) == errors.EXIT_REQUEUE == 75
    assert "stopped by SIGUSR1 at epoch 2, step 3" in capsys.readouterr().err


@pytest.mark.slow  # a real train process: its imports, data and a first epoch before the signal
def test_sigusr1_to_the_train_command_checkpoints_and_exits_75(smoke_data, tmp_path):
    """The real thing: a `python -m heritage train` process, signalled mid-run, leaves its resume checkpoint."""
    command = [sys.executable, "-m", "heritage", "train", "--poc", SMOKE_POC, "--data", str(smoke_data),
               f"runs_root={tmp_path}", "epochs=40", "max_train_samples=16", "batch_size=4", "base_batch_size=4",
               "image_size=32", "--encoder", "convnext_tiny"]
    config = load_run_config(SMOKE_POC, "smoke", encoder=SMOKE_ENCODER, overrides={
        "data_dir": str(smoke_data), "runs_root": str(tmp_path), "epochs": 40, "max_train_samples": 16,
        "batch_size": 4, "base_batch_size": 4, "image_size": 32})
    history = run_dir(config) / runs.HISTORY_FILE
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while not history.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert history.exists(), process.communicate()[1][-2000:]
    process.send_signal(signal.SIGUSR1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == errors.EXIT_REQUEUE, stderr[-2000:]
    assert "stopped by SIGUSR1" in stderr
    state = torch.load(run_dir(config) / runs.LAST_CHECKPOINT, weights_only=True)
    assert 1 <= len(state["history"]) < config.epochs
    assert not (run_dir(config) / runs.METRICS_FILE).exists()


def _train_cli(*words: str) -> int:
    from heritage import cli

    return cli.main(["train", *words])


def test_a_fold_override_trains_that_fold_and_contradictions_are_refused(data_dir, tmp_path, capsys):
    chosen = train.config_from_args(_args("--poc", SMOKE_POC, "--data", str(data_dir), "protocol=kfold", "fold=fold2"))
    assert chosen.split_name == "kfold-fold2"
    runs_root = tmp_path / "runs"
    refused = [  # (options, key=value words, message); argparse wants the key=value words together
        (("--fold", "fold1"), ("protocol=kfold", "fold=fold2"), "fold given twice with different values: 'fold1' (--fold)"),
        ((), ("protocol=kfold", "fold=fold7"), "unknown fold 'fold7' for protocol 'kfold'; the manifest has fold0, fold1, fold2"),
        (("--encoder", SMOKE_ENCODER), ("encoder=swin_tiny",), "encoder given twice"),
        (("--profile", "smoke"), ("profile=full",), "profile given twice"),
        ((), (f"data_dir={tmp_path}",), "data_dir given twice with different values"),
    ]
    for options, overrides, message in refused:
        assert _train_cli("--poc", SMOKE_POC, "--data", str(data_dir), *options, f"runs_root={runs_root}",
                          *overrides) == 2
        err = capsys.readouterr().err
        assert err.startswith("heritage train: ") and message in err, (options, overrides, err)
    assert not runs_root.exists()


def test_a_config_file_with_a_path_in_a_name_is_refused_before_anything_is_written(data_dir, tmp_path, capsys):
    runs_root = tmp_path / "a" / "b" / "runs"
    values = load_run_config(SMOKE_POC, "smoke", overrides={"data_dir": str(data_dir), "runs_root": str(runs_root)})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**values.to_dict(), "fold": "../../../../escaped"}))
    assert _train_cli("--config", str(path)) == 2
    assert "fold: '../../../../escaped' cannot name a run folder" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["config.yaml"]
    assert _train_cli("--config", str(path), "--profile", "full") == 2
    assert "--config already fixes --profile" in capsys.readouterr().err
    assert _train_cli("--config", str(path), "variant=dice_focal") == 2  # the loss would stay plain Dice
    assert "override variant= would rename the run without applying that variant's settings" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["config.yaml"]


def test_missing_data_fails_before_the_run_folder_is_made(data_dir, tmp_path, capsys):
    runs_root = tmp_path / "runs"
    no_manifest = Path(shutil.copytree(data_dir, tmp_path / "no_manifest"))
    (no_manifest / "splits" / "holdout.json").unlink()
    (tmp_path / "empty").mkdir()
    cases = [
        (tmp_path / "missing", "data_dir: {} does not exist"),
        (tmp_path / "empty", "data_dir: {} is not a data folder: it has no metadata.csv"),
        (no_manifest, "{}/splits/holdout.json: file not found"),
    ]
    for folder, message in cases:
        assert _train_cli("--poc", SMOKE_POC, "--data", str(folder), f"runs_root={runs_root}") == 2
        err = capsys.readouterr().err
        assert err.startswith("heritage train: ") and message.format(folder) in err, err
        assert not runs_root.exists()
    stale = tmp_path / "stale.yaml"  # a rerun whose protocol changed but whose fold did not
    stale.write_text(load_run_config(SMOKE_POC, "smoke", overrides={"data_dir": str(data_dir), "runs_root": str(runs_root)}).to_yaml())
    assert _train_cli("--config", str(stale), "protocol=kfold") == 2
    assert "unknown fold 'holdout' in the 'kfold' manifest" in capsys.readouterr().err
    assert not runs_root.exists()


def test_prepare_writes_nothing_when_the_config_cannot_be_hashed_or_placed(data_dir, tmp_path):
    config = load_run_config(SMOKE_POC, "smoke", overrides={"data_dir": str(tmp_path / "missing"),
                                                            "runs_root": str(tmp_path / "runs")})
    with pytest.raises(errors.MissingInputError, match="data_dir: .*missing does not exist"):
        runs.prepare(config)
    assert not (tmp_path / "runs").exists()
    (tmp_path / "file").write_text("")  # a file where the runs root should be
    placed = load_run_config(SMOKE_POC, "smoke", overrides={"data_dir": str(data_dir), "runs_root": str(tmp_path / "file")})
    with pytest.raises(errors.OutputError, match=r"file/poc58_baseline/convnext_tiny/holdout-holdout: cannot create the run folder"):
        runs.prepare(placed)
