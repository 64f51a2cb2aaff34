"""The engine's fast CPU step (fused AdamW, no NaN fill) and bench/gpu_check.py's CPU dry run."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from heritage.training import devices, engine, reproducibility
from heritage import errors, report
from heritage.data import taxonomy

ROOT = Path(__file__).resolve().parents[1]
GPU = "NVIDIA H100 80GB HBM3"  # a device name as runs.device_name gives it


def small_model() -> nn.Module:
    # No bias before the BatchNorm: BN cancels its gradient, leaving rounding noise that Adam's
    # normalisation turns into full-size steps, and any two implementations then drift apart.
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.GELU(),
                         nn.Conv2d(8, 16, 1), nn.Flatten(), nn.Linear(16 * 8 * 8, 4))


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 6) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        images = torch.randn(4, 3, 8, 8, generator=generator)
        targets = torch.randint(0, 4, (4,), generator=generator)
        loss = nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def test_the_engine_adamw_is_fused_on_cpu_and_matches_the_for_loop():
    reference = small_model()
    fast = copy.deepcopy(reference)
    initial = copy.deepcopy(reference.state_dict())
    device = torch.device("cpu")
    optimizer = engine.build_optimizer(fast.parameters(), lr=1e-2, weight_decay=1e-2, device=device)
    assert optimizer.param_groups[0]["fused"] is True  # not torch's CPU default, the for-loop
    train_steps(reference, torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=1e-2, foreach=False))
    train_steps(fast, optimizer)
    moved = 0
    for (name, a), (_, b) in zip(reference.state_dict().items(), fast.state_dict().items()):
        # float32 rounding of a different order of operations, nothing more
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=f"{name} differs")
        moved += not torch.equal(a, initial[name])
    assert moved >= 5  # the steps did change the weights (the comparison is not of untouched tensors)


def test_deterministic_mode_skips_the_nan_fill_and_restores_the_settings():
    fill = torch.utils.deterministic.fill_uninitialized_memory
    assert not torch.are_deterministic_algorithms_enabled()
    with reproducibility.deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        assert not torch.isnan(torch.empty(1024)).all()  # torch.empty is no longer NaN-filled
    assert torch.utils.deterministic.fill_uninitialized_memory is fill
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_the_gpu_check_dry_run_runs_every_step_on_cpu(tmp_path):
    """bench/gpu_check.py without a GPU: every section runs at tiny sizes and passes its own checks."""
    script = ROOT / "bench" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--dry-run", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    [path] = tmp_path.glob("gpu-check-dry-*.json")
    record = json.loads(path.read_text())
    sections = record["sections"]
    assert record["dry_run"] and record["failed"] == [] and record["incomplete"] == []
    assert list(sections) == ["throughput", "loader", "cli_bf16", "cli_fp16", "ddp", "predict", "compile"]
    assert all("skipped" not in value and "error" not in value for value in sections.values()), sections
    assert all(value["seconds"] > 0 for value in sections.values())  # each step's own wall time
    assert len(record["load_average_at_start"]) == len(record["load_average_at_end"]) == 3
    assert record["cpu_s"] > 0
    assert record["torch_threads"] == record["plan"]["threads"] == 1

    # what training runs: amp auto's precision, the encoder's own memory format, the CPU's deterministic kernels
    cpu = torch.device("cpu")
    auto = devices.dtype_name(devices.autocast_dtype("auto", cpu))
    eager = {row["encoder"]: row for row in sections["throughput"]["result"]}
    assert set(eager) == set(record["plan"]["batch_sizes"]) == {"convnext_tiny"}  # one encoder on CPU
    row = eager["convnext_tiny"]
    assert row["train_images_per_s"] > 0 and 0 < row["train_share_of_peak"] and row["peak_source"] == "matmul probe"
    assert (row["autocast_dtype"], row["channels_last"]) == (auto, devices.uses_channels_last("auto", "convnext_tiny", cpu))
    assert row["kernels"] == reproducibility.kernel_mode(cpu).record() and row["mfu"] is None  # no data sheet
    assert [row["compile"] for row in sections["compile"]["result"]] == [True]
    assert sections["loader"]["result"]["images_per_s"] > 0 and sections["loader"]["result"]["num_workers"] == 2

    # every CLI run scored exactly the fold's test images, their labelled pixels and classes, in its precision
    bf16 = sections["cli_bf16"]["result"]
    assert bf16["stop"]["returncode"] == 75 and bf16["stop"]["checkpoint_position"] == {"epoch": 0, "step": 1}
    assert bf16["resume"]["returncode"] == 0 and bf16["resume"]["resumed"]
    tiny = record["plan"]["cli_overrides"]
    runs_checked = {"cli_bf16": (bf16["metrics"], "bfloat16", 1),
                    "cli_fp16": (sections["cli_fp16"]["result"]["metrics"], "float16", 1),
                    "ddp": (sections["ddp"]["result"]["metrics"], auto, 2)}
    for name, (metrics, dtype, processes) in runs_checked.items():
        expected = metrics["expected"]
        assert metrics["scored"] == expected and metrics["as_expected"], name
        assert (expected["autocast_dtype"], expected["world_size"]) == (dtype, processes), name
        assert expected["n_images"] > 0 and expected["labelled_pixels"] > 0 and "Clean" in expected["classes"]
        assert 0 < metrics["test_miou"] <= 1 and 0 < metrics["all_clean_miou"] <= 1, name
        assert (metrics["batch_size"], metrics["image_size"]) == (tiny["batch_size"], tiny["image_size"]), name
        assert metrics["kernels"]["deterministic"], name
    ddp = sections["ddp"]["result"]
    assert (ddp["processes"], ddp["backend"]) == (2, "gloo") and ddp["ok"]
    assert ddp["metrics"]["lr_applied"] == pytest.approx(2 * ddp["lr"])  # the linear rule over the global batch

    scan = sections["predict"]["result"]
    assert scan["megapixels"] == pytest.approx(record["plan"]["predict_megapixels"], rel=0.01)
    assert "mask.png" in scan["outputs"]
    assert scan["peak_rss_scope"] == "this step" and scan["peak_rss_mb"] > 0 and scan["peak_gpu_memory_mb"] is None


@pytest.fixture
def train_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import train_bench

    return train_bench


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_the_loop_bench_trains_without_the_hub_whatever_the_profile(train_bench, profile, tmp_path):
    """The full profile trains pretrained (weights from the Hub); the loop and amp benchmarks time steps, which
    the initial weights do not change, on machines that may not reach the Hub."""
    full = train_bench.config.load_run_config("poc59v2_flagship", "full", encoder="convnext_tiny")
    assert full.pretrained  # what the override is for
    run = train_bench.loop_config("poc59v2_flagship", profile, "convnext_tiny", tmp_path, tmp_path / "runs",
                                  {"epochs": 1})
    assert not run.pretrained and run.epochs == 1 and run.data_dir == str(tmp_path)
    asked = train_bench.loop_config("poc59v2_flagship", profile, "convnext_tiny", tmp_path, tmp_path / "runs",
                                    {"pretrained": True})
    assert asked.pretrained  # an explicit override still wins


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # the script imports train_bench beside it
    import gpu_check

    return gpu_check


def test_the_gpu_check_reports_a_steps_own_peak_memory_not_the_processes(gpu_check):
    import numpy as np

    big = np.ones(400 * 2**20 // 8)  # 400 MB, as an earlier section's training would have reached
    big_peak = gpu_check.devices.peak_memory_mb(torch.device("cpu"))
    del big
    small, memory = gpu_check.peak_during(lambda: np.ones(2**20 // 8).sum(), torch.device("cpu"))
    assert small == 2**20 // 8
    assert memory["peak_rss_scope"] == "this step"  # Linux: the peak RSS was reset before the step
    assert memory["peak_rss_mb"] < big_peak - 300  # the 400 MB are not the step's
    assert 0 < memory["rss_at_start_mb"] <= memory["peak_rss_mb"]


def test_the_gpu_checks_predict_memory_is_measured_around_predict_alone(gpu_check, monkeypatch, tmp_path):
    import dataclasses

    from heritage.training import runs

    run = tmp_path / "run"
    run.mkdir()
    (run / runs.BEST_CHECKPOINT).touch()
    model = nn.Conv2d(3, taxonomy.NUM_CLASSES, 1).eval()
    monkeypatch.setattr(gpu_check.predict, "load_model",
                        lambda run_dir, device: (model, {"image_size": 32, "encoder": "tiny", "amp": "off"}))
    inside, calls = [False], []
    predict_scan = gpu_check.predict.predict_scan
    monkeypatch.setattr(gpu_check.predict, "predict_scan",
                        lambda *args, **kwargs: calls.append(inside[0]) or predict_scan(*args, **kwargs))

    def peak_during(work, device):  # stands for the real one: its figures are the ones reported
        inside[0] = True
        result = work()
        inside[0] = False
        return result, {"peak_rss_mb": 1234.5, "peak_rss_scope": "this step"}

    monkeypatch.setattr(gpu_check, "peak_during", peak_during)
    plan = dataclasses.replace(gpu_check.dry_plan(), predict_megapixels=0.01)
    record = gpu_check.predict_section(plan, str(run), tmp_path)
    assert calls == [True]  # predict ran inside the measurement, once
    assert (record["peak_rss_mb"], record["peak_rss_scope"]) == (1234.5, "this step")


def test_the_gpu_check_exits_incomplete_when_the_time_budget_skipped_something(gpu_check, tmp_path, monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the dry run sets these
        monkeypatch.setenv(name, os.environ.get(name, ""))
    threads = torch.get_num_threads()
    try:
        code = gpu_check.main(["--dry-run", "--budget-s", "0", "--sections", "throughput", "predict",
                               "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    [path] = tmp_path.glob("gpu-check-dry-*.json")
    record = json.loads(path.read_text())
    assert code == gpu_check.EXIT_INCOMPLETE == 3 and record["incomplete"] == ["throughput", "predict"]
    assert record["failed"] == [] and "data" not in record  # nothing ran, not even the stand-in was made
    passed = {"sections": {"throughput": {"result": [{"encoder": "convnext_tiny"}]}}, "failed": [], "incomplete": []}
    assert gpu_check.exit_code(passed) == 0
    row_skipped = {"result": [{"encoder": "convnext_tiny"}, {"encoder": "mit_b3", "skipped": "time budget"}]}
    assert gpu_check._skipped(row_skipped) and not gpu_check._skipped({"not_run": "1 GPU"})
    assert gpu_check.exit_code({"failed": ["ddp"], "incomplete": ["compile"]}) == errors.EXIT_FAILED


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("code", [0, 1, 3])
def test_make_gpu_check_fails_unless_the_check_is_complete(code, tmp_path):
    """`make gpu-check` passes on the script's exit code: an incomplete (3) or failed (1) check fails make."""
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'args'}\nexit {code}\n")
    script.chmod(0o755)
    done = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed-test", "gpu-check",
                           f"PY={script}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (tmp_path / "args").read_text().split() == ["bench/gpu_check.py"]  # the check itself ran
    assert (done.returncode == 0) == (code == 0), done.stderr
    if code:
        assert f"Error {code}" in done.stderr  # make names the check's own code


def test_peaks_come_from_the_data_sheet_of_the_named_gpu(gpu_check):
    peak = gpu_check.train_bench.peak_for_name
    assert peak("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989.0
    assert peak("NVIDIA H100 PCIe", torch.bfloat16) == 756.0  # not the SXM part's
    assert peak("NVIDIA H200", None) == 494.0  # float32 runs as TF32
    assert peak("Tesla V100-SXM2-32GB", torch.bfloat16) is None and peak("Tesla V100-SXM2-32GB", torch.float16) == 125.0
    assert peak("NVIDIA GeForce RTX 4090", torch.bfloat16) is None  # unknown: the matmul probe measures it


# -- bench/scale_check.py: letterbox vs patch at one budget (issue 11) ------------------------------


@pytest.fixture
def scale_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # the script imports train_bench beside it
    import scale_check

    return scale_check


def test_scale_check_trains_both_arms_at_the_same_budget(scale_check, data_dir, tmp_path) -> None:
    arms = scale_check.arm_configs(data_dir, tmp_path / "runs", epochs=15, max_train_samples=None)
    assert [(mode, run.sampling, run.variant) for mode, run in arms.items()] == [
        ("letterbox", "letterbox", None), ("patch", "patch", "patch")]
    letterbox, patch = arms.values()
    assert (patch.working_resolution, patch.encoder, patch.fold) == ("native", "convnext_tiny", letterbox.fold)
    assert {name: getattr(patch, name) for name in report.BUDGET_FIELDS} == {
        "image_size": 64, "batch_size": 8, "epochs": 15, "max_train_samples": None}
    assert all(getattr(letterbox, name) == getattr(patch, name) for name in report.BUDGET_FIELDS)


def test_scale_check_refuses_arms_whose_budgets_differ(scale_check, data_dir, tmp_path, monkeypatch) -> None:
    import dataclasses

    resolve = scale_check.config.load_run_config

    def patch_at_96_px(*args, **kwargs):
        run = resolve(*args, **kwargs)
        return dataclasses.replace(run, image_size=96) if run.sampling == "patch" else run

    monkeypatch.setattr(scale_check.config, "load_run_config", patch_at_96_px)
    with pytest.raises(errors.InputError, match=r"differ in their training budget \(image_size 64 vs 96\)"):
        scale_check.arm_configs(data_dir, tmp_path / "runs", epochs=15, max_train_samples=None)


def trained_on_a_gpu(steps: dict[str, int], thin_iou: dict[str, float]):
    """A stand-in for train.run_training: it builds its model with models.build_model (what the bench counts),
    takes ``steps[sampling]`` training steps of the run's batch, evaluates in eval mode and reports a GPU."""
    def run_training(run, progress=True):
        from heritage.modeling import models

        model = models.build_model(run.architecture, run.encoder, image_size=run.image_size).train()
        for _ in range(steps[run.sampling]):
            model(torch.zeros(run.batch_size, 3, run.image_size, run.image_size))
        model.eval()(torch.zeros(1, 3, 100, 100))  # scoring: not training
        per_class = {name: {"iou": 0.9 if name == "Clean" else 0.0} for name in taxonomy.CLASS_NAMES}
        per_class.update({name: {"iou": thin_iou[run.sampling]} for name in taxonomy.THIN_CLASSES})
        return {"device": GPU, "best_epoch": 1, "scale": {},
                "test": {"evaluated_at": "native", "n_images": 4, "miou": 0.3, "all_clean_miou": 0.1,
                         "per_class": per_class}}

    return run_training


@pytest.mark.parametrize("patch_steps", [3, 2])
def test_scale_check_counts_what_each_arm_trained_on_and_names_its_device(scale_check, data_dir, tmp_path, monkeypatch,
                                                                          patch_steps) -> None:
    monkeypatch.setattr(scale_check.models, "build_model", lambda *args, **kwargs: nn.Conv2d(3, 16, 1))
    monkeypatch.setattr(scale_check.train, "run_training",
                        trained_on_a_gpu({"letterbox": 3, "patch": patch_steps}, {"letterbox": 0.0, "patch": 0.5}))
    path = scale_check.main(["--data", str(data_dir), "--epochs", "1", "--max-train-samples", "8",
                             "--out", str(tmp_path / "results")])
    record = json.loads(path.read_text())
    assert (record["device"], record["cpu"]) == (GPU, scale_check.runs.cpu_name())  # where it trained, then the CPU
    assert path.name == f"scale-nvidia-h100-80gb-hbm3-{record['date']}.json"
    letterbox, patch = record["results"]["letterbox"], record["results"]["patch"]
    assert letterbox["device"] == patch["device"] == GPU
    # counted, not derived from the config (1 epoch of 8 samples at batch 8 would say 1 step)
    assert (letterbox["steps"], letterbox["training_images"], letterbox["training_pixels"]) == (3, 24, 24 * 64 * 64)
    assert (patch["steps"], patch["training_images"]) == (patch_steps, 8 * patch_steps)
    budget = record["same_budget"]
    assert (budget["letterbox_steps"], budget["patch_steps"]) == (3, patch_steps)
    assert budget["counted_equal"] is (patch_steps == 3)
    assert record["aim"]["patch_thin_classes_learnt"] == 4 and record["aim"]["letterbox_thin_classes_learnt"] == 0
    assert record["aim"]["met"] is (patch_steps == 3)  # thin classes learnt, but only a same-budget pair counts


@pytest.mark.slow
def test_scale_check_writes_both_modes_per_class_iou(scale_check, copy_data_dir, tmp_path) -> None:
    """A tiny budget (1 epoch over 8 samples) on the test stand-in; minutes on a loaded 2-core CPU."""
    path = scale_check.main(["--data", str(copy_data_dir()), "--epochs", "1", "--max-train-samples", "8",
                             "--out", str(tmp_path / "results")])
    record = json.loads(path.read_text())
    assert path.name.startswith("scale-") and record["thin_classes"] == list(taxonomy.THIN_CLASSES)
    letterbox, patch = record["results"]["letterbox"], record["results"]["patch"]
    assert (letterbox["sampling"], patch["sampling"]) == ("letterbox", "patch")
    for arm in (letterbox, patch):  # counted while training: 8 samples, batch 8, 64 px
        assert (arm["steps"], arm["training_images"], arm["training_pixels"]) == (1, 8, 8 * 64 * 64)
        assert arm["evaluated_at"].startswith("native") and list(arm["per_class_iou"]) == list(taxonomy.CLASS_NAMES)
        thin = [arm["per_class_iou"][name] for name in taxonomy.THIN_CLASSES if arm["per_class_iou"][name] is not None]
        assert arm["thin_class_mean_iou"] == pytest.approx(sum(thin) / len(thin))
    assert letterbox["all_clean_miou"] == patch["all_clean_miou"]  # the same test pixels
    assert record["same_budget"]["counted_equal"] and record["same_budget"]["patch_steps"] == 1
    assert record["device"] == letterbox["device"] == scale_check.runs.device_name(torch.device("cpu"))
    aim = record["aim"]
    assert aim["met"] == (aim["patch_thin_classes_learnt"] >= 3 and aim["letterbox_thin_classes_learnt"] == 0)
    for mode in ("patch", "letterbox"):
        iou = record["results"][mode]["per_class_iou"]
        learnt = sum(iou[name] is not None and iou[name] > 0.05 for name in taxonomy.THIN_CLASSES)
        assert aim[f"{mode}_thin_classes_learnt"] == learnt


def test_learning_check_names_the_device_its_runs_trained_on(data_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import learning_check

    def run_training(run, progress=True):
        folder = learning_check.config.run_dir(run)
        folder.mkdir(parents=True)
        (folder / "history.csv").write_text("epoch,train_loss,val_miou,lr\n1,0.9,0.1,0.001\n")
        return {"device": GPU, "best_epoch": 1, "autocast_dtype": "bfloat16",
                "test": {"n_images": 4, "miou": 0.2, "all_clean_miou": 0.1, "per_class": {"Clean": {"iou": 0.9}}}}

    monkeypatch.setattr(learning_check.train, "run_training", run_training)
    path = learning_check.main(["--pocs", "poc58_baseline", "poc59_dicefocal", "--epochs", "1", "--data", str(data_dir),
                                "--out", str(tmp_path)])
    record = json.loads(path.read_text())
    assert (record["device"], record["cpu"]) == (GPU, learning_check.runs.cpu_name())
    assert path.name == f"learning-nvidia-h100-80gb-hbm3-{record['date']}.json"
    assert [row["device"] for row in record["results"]] == [GPU, GPU]
    assert [row["val_miou_per_epoch"] for row in record["results"]] == [[0.1], [0.1]]
    assert [(row["amp"], row["autocast_dtype"]) for row in record["results"]] == [("auto", "bfloat16")] * 2


HISTORY_COLUMNS = "epoch,train_loss,val_miou,lr,images_per_s,peak_memory_mb,elapsed_s"


def _fake_run(folder: Path, miou: float, seconds: float) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"test": {"miou": miou, "wall_time_s": seconds},
                                                     "throughput": {"train_images_per_s": 1 / seconds}}))
    (folder / "per_image.csv").write_text("id,miou\na,0.5\n")
    (folder / "history.csv").write_text(f"{HISTORY_COLUMNS}\n1,0.9,0.1,0.001,{8 / seconds},{seconds * 10},{seconds}\n"
                                        f"2,0.7,0.2,0.0005,{9 / seconds},{seconds * 11},{2 * seconds}\n")


def _same_metrics(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "same_metrics.py"), *map(str, args)],
                          capture_output=True, text=True)


def test_same_metrics_compares_existing_runs_without_their_timings(tmp_path):
    for root, seconds in (("before", 10.0), ("after", 99.0)):  # timings differ, in metrics.json and history.csv
        _fake_run(tmp_path / root / "runs" / "poc" / "enc" / "holdout-holdout", 0.25, seconds)
    assert _same_metrics(tmp_path / "fp-before", "--runs-root", tmp_path / "before" / "runs").returncode == 0
    after = tmp_path / "after" / "runs" / "poc" / "enc" / "holdout-holdout"
    compare = [tmp_path / "fp-after", "--runs-root", tmp_path / "after" / "runs",
               "--compare", tmp_path / "fp-before" / "summary.json"]
    same = _same_metrics(*compare)
    assert (same.returncode, same.stdout.strip()) == (0, "poc/enc/holdout-holdout: identical")
    history = (after / "history.csv").read_text()
    # one epoch's train loss, LR or validation mIoU changed: a different training
    for before_value, changed in (("0.7,", "0.70001,"), (",0.0005,", ",0.0004,"), (",0.2,", ",0.25,")):
        (after / "history.csv").write_text(history.replace(before_value, changed, 1))
        differs = _same_metrics(*compare)
        assert (differs.returncode, differs.stdout.strip()) == (1, "poc/enc/holdout-holdout: differs"), changed
    (after / "history.csv").write_text(history)
    (after / "metrics.json").write_text(json.dumps({"test": {"miou": 0.26}}))
    differs = _same_metrics(*compare)
    assert (differs.returncode, differs.stdout.strip()) == (1, "poc/enc/holdout-holdout: differs")


def test_same_metrics_fails_when_a_training_fails_even_without_compare(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import same_metrics

    def refused(command, **kwargs):  # `heritage train` refusing its input, without the seconds a real one takes
        assert command[1:4] == ["-m", "heritage", "train"], command
        return subprocess.CompletedProcess(command, 2, "", "heritage train: data/metadata.csv: not a data folder\n")

    monkeypatch.setattr(same_metrics, "RUNS", (("poc58_baseline", None), ("poc59v2_flagship", "patch")))
    monkeypatch.setattr(same_metrics.subprocess, "run", refused)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "metadata.csv").write_text("id\n")  # present: no data is prepared
    assert same_metrics.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{key}: training failed (exit 2): heritage train: data/metadata.csv: not a data folder"
                   for key in ("poc58_baseline/main", "poc59v2_flagship/patch")]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["poc58_baseline/main"]["rc"] == 2


def test_fast_loop_time_reads_pytest_summary_line(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import fast_loop_time

    output = ("tests/test_a.py ....  [100%]\n"
              "=========== 612 passed, 3 skipped, 175 deselected, 4 warnings in 141.20s (0:02:21) ===========\n")
    assert fast_loop_time.pytest_summary(output) == "612 passed, 3 skipped, 175 deselected, 4 warnings in 141.20s (0:02:21)"
    assert fast_loop_time.pytest_summary("=== 1 failed, 2 passed in 3.0s ===") == "1 failed, 2 passed in 3.0s"
    assert fast_loop_time.pytest_summary("make: *** [Makefile:67: test-fast] Error 2\n") is None
