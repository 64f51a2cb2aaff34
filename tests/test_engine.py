"""heritage.training.engine: the loop's mechanics on a tiny model (resume, determinism, signals, checkpoints, DDP)."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from heritage.data import datafolder, datasets as data, splits, taxonomy, working
from heritage.training import devices, engine, evaluation, reproducibility, runs
from heritage import errors
from heritage.modeling import losses, metrics, thin, tiling
from heritage.modeling.counts import SummedCounts
from heritage.config import load_run_config
from test_working_resolution import TinyHierarchical  # the hierarchical model's heads on a tiny body

SIZE = 32
TIMING_COLUMNS = ("images_per_s", "peak_memory_mb", "elapsed_s")


class TinyNet(nn.Module):
    """Two convolutions with a BatchNorm: enough to learn something, cheap enough for many fits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class SignallingDataset(data.SegmentationDataset):
    """Sends ``signum`` to this process when sample ``index`` of ``epoch`` is loaded (a preemption)."""

    def __init__(self, *args, at: tuple[int, int], signum: int = signal.SIGUSR1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.signum = at, signum

    def __getitem__(self, index: int):
        if (self.epoch, index) == self.at:
            os.kill(os.getpid(), self.signum)
        return super().__getitem__(index)


@pytest.fixture(scope="module")
def fold(data_dir):
    return splits.fold_ids(splits.load_manifest(data_dir, "holdout"), "holdout")


def make_config(data_dir: Path, runs_root: Path, **overrides):
    return load_run_config("poc58_baseline", "smoke", overrides={
        "data_dir": str(data_dir), "runs_root": str(runs_root), "image_size": SIZE, "epochs": 3,
        "batch_size": 4, "base_batch_size": 4, "base_lr": 1e-2, "grad_clip": 1.0, "seed": 3,
        "timing_skip_steps": 1, "checkpoint_every": 1, **overrides})


def validation_images(data_dir: Path, ids: list[str]) -> working.EvaluationSet:
    """Whole images as letterbox training validates them, scored at SIZE px (one window each)."""
    return working.EvaluationSet(data_dir, ids, SIZE, SIZE, "letterbox", cache_dir=data_dir.parent / "engine-cache",
                                 progress=False)


def train(config, fold, data_dir, train_set=None):
    train_ids, val_ids, _ = fold
    folder = runs.prepare(config)
    train_set = train_set or data.SegmentationDataset(data_dir, train_ids, SIZE, train=True, seed=config.seed)
    reproducibility.seed_everything(config.seed)
    model = TinyNet()
    result = engine.fit(config, model, losses.build_loss("dice"), train_set, validation_images(data_dir, val_ids),
                        devices.Distributed(), progress=False)
    return result, model, folder


def sample_at(config, n_samples: int, epoch: int, position: int) -> int:
    """The dataset index the training loader loads at ``position`` of ``epoch`` (its seeded order)."""
    sampler = torch.utils.data.DistributedSampler(range(n_samples), num_replicas=1, rank=0, shuffle=True,
                                                  seed=config.seed)
    sampler.set_epoch(epoch)
    return list(sampler)[position]


def comparable(history):
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in history]


def assert_same_weights(first: nn.Module, second: nn.Module) -> None:
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs"


@pytest.mark.parametrize("amp", ["off", "bf16"])  # float32, and what amp auto is on a CPU with native bf16
def test_same_seed_gives_the_same_run(data_dir, fold, tmp_path, amp):
    first, first_model, _ = train(make_config(data_dir, tmp_path / "a", amp=amp), fold, data_dir)
    second, second_model, _ = train(make_config(data_dir, tmp_path / "b", amp=amp), fold, data_dir)
    assert comparable(first.history) == comparable(second.history)
    assert_same_weights(first_model, second_model)
    other, _, _ = train(make_config(data_dir, tmp_path / "c", seed=4, amp=amp), fold, data_dir)
    assert comparable(other.history) != comparable(first.history)


@pytest.mark.parametrize(("epoch", "position", "step"), [(1, 5, 2), (0, 0, 1)], ids=["mid-epoch", "first-step"])
def test_a_run_interrupted_by_sigusr1_resumes_to_the_same_result(data_dir, fold, tmp_path, epoch, position, step):
    config = make_config(data_dir, tmp_path / "uninterrupted")
    reference, reference_model, _ = train(config, fold, data_dir)

    config = make_config(data_dir, tmp_path / "interrupted")
    at = (epoch, sample_at(config, len(fold[0]), epoch, position))
    signalling = SignallingDataset(data_dir, fold[0], SIZE, train=True, seed=config.seed, at=at)
    with pytest.raises(engine.Interrupted, match=f"stopped by SIGUSR1 at epoch {epoch + 1}, step {step}") as stopped:
        train(config, fold, data_dir, train_set=signalling)
    checkpoint = torch.load(stopped.value.checkpoint, weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (epoch, step)  # the step that was running finished
    assert len(checkpoint["history"]) == epoch
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handler is removed again

    resumed, resumed_model, folder = train(config, fold, data_dir)
    assert comparable(resumed.history) == comparable(reference.history)
    assert resumed.best_epoch == reference.best_epoch
    assert_same_weights(resumed_model, reference_model)
    assert len((folder / runs.HISTORY_FILE).read_text().splitlines()) == 1 + config.epochs


def test_a_signal_in_the_last_step_of_an_epoch_stops_after_the_epoch(data_dir, fold, tmp_path):
    config = make_config(data_dir, tmp_path)
    last_position = len(fold[0]) // config.batch_size * config.batch_size - 1  # the last batch is full
    signalling = SignallingDataset(data_dir, fold[0], SIZE, train=True, seed=config.seed, signum=signal.SIGTERM,
                                   at=(0, sample_at(config, len(fold[0]), 0, last_position)))
    with pytest.raises(engine.Interrupted, match="stopped by SIGTERM at epoch 2, step 0"):
        train(config, fold, data_dir, train_set=signalling)
    checkpoint = torch.load(Path(tmp_path) / config.poc_key / config.encoder / config.split_name /
                            runs.LAST_CHECKPOINT, weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"], len(checkpoint["history"])) == (1, 0, 1)


def test_checkpoints_load_with_weights_only(data_dir, fold, tmp_path):
    config = make_config(data_dir, tmp_path, epochs=2)
    result, model, folder = train(config, fold, data_dir)
    best = torch.load(folder / runs.BEST_CHECKPOINT, weights_only=True)
    assert set(best) == {"model", "config", "epoch", "val_miou"}
    assert best["config"] == config.to_dict() and best["epoch"] == result.best_epoch
    assert best["val_miou"] == max(row["val_miou"] for row in result.history)
    restored = TinyNet()
    restored.load_state_dict(best["model"])
    last = torch.load(folder / runs.LAST_CHECKPOINT, weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "step", "rng", "best", "history"} <= set(last)
    assert (last["epoch"], last["step"]) == (2, 0)
    previous = torch.load(folder / runs.PREVIOUS_CHECKPOINT, weights_only=True)  # the one before, kept
    assert (previous["epoch"], previous["step"]) == (1, 0)


def test_a_truncated_last_checkpoint_resumes_from_the_previous_one_to_the_same_result(data_dir, fold, tmp_path,
                                                                                      capsys):
    config = make_config(data_dir, tmp_path / "uninterrupted")
    reference, reference_model, _ = train(config, fold, data_dir)

    config = make_config(data_dir, tmp_path / "truncated")
    signalling = SignallingDataset(data_dir, fold[0], SIZE, train=True, seed=config.seed,
                                   at=(2, sample_at(config, len(fold[0]), 2, 5)))
    with pytest.raises(engine.Interrupted) as stopped:
        train(config, fold, data_dir, train_set=signalling)
    last = stopped.value.checkpoint
    previous = last.parent / runs.PREVIOUS_CHECKPOINT
    assert torch.load(previous, weights_only=True)["epoch"] == 2  # the end of epoch 2, before the signal
    last.write_bytes(last.read_bytes()[:1000])  # what a full disk or a cut copy leaves behind
    capsys.readouterr()

    resumed, resumed_model, _ = train(config, fold, data_dir)
    assert f"warning: {last}: cannot read checkpoint, the file is damaged or truncated" in capsys.readouterr().err
    assert comparable(resumed.history) == comparable(reference.history)  # epoch 3 trained again, identically
    assert resumed.best_epoch == reference.best_epoch
    assert_same_weights(resumed_model, reference_model)
    # The damaged file was overwritten, not rotated into the fallback.
    assert torch.load(previous, weights_only=True)["epoch"] == 2
    assert torch.load(last, weights_only=True)["epoch"] == 3


def test_a_run_without_a_readable_checkpoint_says_which_files_to_delete(data_dir, fold, tmp_path):
    config = make_config(data_dir, tmp_path, epochs=2)
    _, _, folder = train(config, fold, data_dir)
    for name in runs.RESUME_CHECKPOINTS:
        path = folder / name
        path.write_bytes(path.read_bytes()[:100])
    last, previous = folder / runs.LAST_CHECKPOINT, folder / runs.PREVIOUS_CHECKPOINT
    with pytest.raises(errors.InputError, match=rf"cannot resume the run in {folder}: .*\. Delete {last} and "
                                                rf"{previous} to train this run from the start "
                                                rf"\(`rm {last} {previous}`\)$"):
        train(config, fold, data_dir)
    last.unlink()
    previous.unlink()  # as the message says: the run starts again
    result, _, _ = train(config, fold, data_dir)
    assert len(result.history) == 2


def test_history_has_one_row_per_epoch_with_the_documented_columns(data_dir, fold, tmp_path):
    config = make_config(data_dir, tmp_path, epochs=2, eval_every=2, timing_skip_steps=100)
    result, _, folder = train(config, fold, data_dir)
    lines = (folder / runs.HISTORY_FILE).read_text().splitlines()
    assert lines[0].split(",") == ["epoch", "train_loss", "lr", "images_per_s", "peak_memory_mb", "elapsed_s",
                                   "val_miou"]
    assert len(lines) == 3
    assert "val_miou" not in result.history[0] and "val_miou" in result.history[1]  # eval_every=2
    # timing_skip_steps beyond an epoch still times its last step instead of reporting nothing
    assert all(row["images_per_s"] > 0 for row in result.history)
    assert result.history[-1]["lr"] < result.history[0]["lr"]  # OneCycle anneals to the end


def test_a_checkpoint_of_another_configuration_is_not_resumed(data_dir, fold, tmp_path, capsys):
    # seed 3's finished run leaves checkpoint_last.pt (epoch 2 of 2, two rows of history) in the folder
    # that seed 5's run shares; resuming it would return seed 3's rows without training.
    other, _, folder = train(make_config(data_dir, tmp_path / "shared", epochs=2), fold, data_dir)
    assert torch.load(folder / runs.LAST_CHECKPOINT, weights_only=True)["epoch"] == 2
    capsys.readouterr()
    result, _, _ = train(make_config(data_dir, tmp_path / "shared", epochs=2, seed=5), fold, data_dir)
    assert "written for another configuration" in capsys.readouterr().err
    alone, _, _ = train(make_config(data_dir, tmp_path / "alone", epochs=2, seed=5), fold, data_dir)
    assert comparable(result.history) == comparable(alone.history)  # seed 5 trained from the start
    assert comparable(result.history) != comparable(other.history)  # a resume would have given these rows


def test_precision_and_memory_format_choices(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.autocast_dtype("auto", cpu) is None
    assert devices.autocast_dtype("off", cuda) is None
    assert devices.autocast_dtype("bf16", cpu) is torch.bfloat16
    assert devices.autocast_dtype("fp16", cuda) is torch.float16
    assert devices.uses_channels_last("on", "mit_b3", cpu) is True
    assert devices.uses_channels_last("off", "convnext_tiny", cuda) is False
    assert devices.uses_channels_last("auto", "convnext_tiny", cpu) is True
    assert devices.uses_channels_last("auto", "mit_b3", cuda) is False
    assert [devices.dtype_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["float32", "bfloat16", "float16"]


@pytest.mark.parametrize(("major", "expected"), [(6, torch.float16), (7, torch.float16), (8, torch.bfloat16),
                                                 (9, torch.bfloat16)], ids=["P100", "V100", "A100", "H100"])
def test_auto_precision_on_a_gpu_is_bf16_only_where_it_runs_natively(monkeypatch, major, expected):
    """Below compute capability 8.0 torch's is_bf16_supported() still says yes (bf16 emulated), but cuDNN has
    no bf16 convolutions there: fp16 with a GradScaler instead. The capability is mocked, the torch
    function is the real one."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(major=major, minor=0))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # emulation works
    assert torch.cuda.is_bf16_supported()  # what `auto` used to ask: yes on every one of them
    assert devices.autocast_dtype("auto", torch.device("cuda")) is expected


def test_fp16_trains_with_a_grad_scaler_and_bf16_without(data_dir, tmp_path):
    for amp, scaled in (("fp16", True), ("bf16", False), ("off", False)):
        config = make_config(data_dir, tmp_path, amp=amp)
        training = engine.Training.wrap(config, TinyNet(), losses.build_loss("dice"), devices.Distributed())
        training.add_optimisation(4, torch.device("cpu"))
        assert training.scaler.is_enabled() is scaled, amp


def test_ddp_trains_at_the_learning_rate_of_its_global_batch(data_dir, tmp_path):
    """batch_size is per process: N processes train on N x batch_size images a step, and the linear
    scaling rule gives that global batch N x lr."""
    config = make_config(data_dir, tmp_path)
    assert (config.lr_for(1), config.lr_for(4)) == (config.lr, pytest.approx(4 * config.lr))
    for world_size in (1, 2, 4):
        training = engine.Training.wrap(config, TinyNet(), losses.build_loss("dice"), devices.Distributed())
        training.add_optimisation(4, torch.device("cpu"), world_size)
        assert training.optimizer.param_groups[0]["max_lr"] == pytest.approx(world_size * config.lr), world_size


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_a_cpu_is_bf16_only_with_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    assert devices.autocast_dtype("auto", torch.device("cpu")) is expected


def test_native_bf16_is_read_from_the_cpus_flags(monkeypatch, tmp_path):
    avx2_only = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_tile": False, "amx_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: avx2_only)
    assert not devices.cpu_has_native_bf16()
    assert devices.autocast_dtype("auto", torch.device("cpu")) is None  # an AVX2-only CPU stays float32
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**avx2_only, "avx512_f": True})
    assert not devices.cpu_has_native_bf16()  # AVX-512 without its BF16 extension emulates bf16
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda flag=flag: {**avx2_only, flag: True})
        assert devices.cpu_has_native_bf16(), flag
        assert devices.autocast_dtype("auto", torch.device("cpu")) is torch.bfloat16

    # where torch's cpuinfo cannot tell, /proc/cpuinfo's flags do
    def broken() -> dict:
        raise RuntimeError("cpuinfo failed to initialize")

    monkeypatch.setattr(torch.cpu, "get_capabilities", broken)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(devices, "CPUINFO", str(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\nprocessor\t: 1\n")
    assert not devices.cpu_has_native_bf16()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert devices.cpu_has_native_bf16()
    monkeypatch.delattr(torch.cpu, "get_capabilities")  # an older torch
    assert devices.cpu_has_native_bf16()
    cpuinfo.unlink()  # not Linux
    assert not devices.cpu_has_native_bf16()


def test_gpu_runs_use_the_fast_kernels_and_cpu_runs_the_deterministic_ones():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    fast = reproducibility.kernel_mode(torch.device("cuda"))
    assert fast.record() == {"deterministic": False, "cudnn_benchmark": True, "tf32_matmul": True, "tf32_conv": True}
    assert reproducibility.kernel_mode(torch.device("cpu")).record() == {
        "deterministic": True, "cudnn_benchmark": False, "tf32_matmul": False, "tf32_conv": False}

    def settings():
        return (torch.backends.cudnn.benchmark, matmul.fp32_precision, conv.fp32_precision,
                torch.are_deterministic_algorithms_enabled())

    before = settings()
    with reproducibility.kernels(fast):
        assert settings() == (True, "tf32", "tf32", False)
    with reproducibility.kernels(reproducibility.kernel_mode(torch.device("cpu"))):
        assert settings() == (False, "ieee", "ieee", True)
    assert settings() == before  # nothing outlives the run


def test_fit_trains_under_the_devices_kernel_mode_and_records_it(data_dir, fold, tmp_path, monkeypatch):
    seen = []

    class Recording(TinyNet):
        def forward(self, images):
            seen.append((torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision,
                         torch.are_deterministic_algorithms_enabled()))
            return super().forward(images)

    fast = reproducibility.kernel_mode(torch.device("cuda"))  # what a GPU run gets, here on the CPU (a CPU
    # run's record: tests/test_train.py's metrics schema)
    monkeypatch.setattr(engine, "kernel_mode", lambda device: fast)
    config = make_config(data_dir, tmp_path, epochs=1)
    runs.prepare(config)
    result = engine.fit(config, Recording(), losses.build_loss("dice"),
                        data.SegmentationDataset(data_dir, fold[0], SIZE, train=True, seed=config.seed),
                        validation_images(data_dir, fold[1]), devices.Distributed(), progress=False)
    assert seen and set(seen) == {(True, "tf32", False)}  # every training and validation pass
    assert result.kernels == fast.record()


def test_only_the_training_steps_are_compiled(data_dir, fold, tmp_path, monkeypatch):
    config = make_config(data_dir, tmp_path, compile=True)
    training = engine.Training.wrap(config, TinyNet(), losses.build_loss("dice"), devices.Distributed())
    assert isinstance(training.train_model, torch._dynamo.eval_frame.OptimizedModule)  # compiled lazily
    evaluated = []
    monkeypatch.setattr(engine, "evaluate_images", lambda model, *args, **kwargs: evaluated.append(model)
                        or evaluation.ImageEvaluation({}, 0.0, []))
    engine.validate(training, validation_images(data_dir, fold[1]), devices.Distributed(), progress=False)
    # evaluation's shapes and inference mode would recompile a compiled module: it gets the plain one
    assert evaluated == [training.net]
    assert not any(isinstance(model, torch._dynamo.eval_frame.OptimizedModule) for model in evaluated)


def test_single_process_without_launcher_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    dist = devices.setup_distributed(device="cpu")
    assert (dist.rank, dist.world_size, dist.enabled, dist.is_main) == (0, 1, False, True)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")  # a batch shell of a 4-task allocation is not a DDP launch
    assert devices.setup_distributed(device="cpu").world_size == 1


def test_the_process_group_waits_an_explicit_time_for_its_peers(monkeypatch):
    joined = {}
    monkeypatch.setattr(devices.torch_dist, "is_initialized", lambda: False)
    monkeypatch.setattr(devices.torch_dist, "init_process_group", lambda backend, **options: joined.update(
        backend=backend, **options))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29555")
    dist = devices.setup_distributed(device="cpu")
    assert (dist.rank, dist.world_size, joined["rank"], joined["world_size"]) == (1, 2, 1, 2)
    assert joined["backend"] == "gloo" and joined["timeout"] == devices.PROCESS_GROUP_TIMEOUT
    assert devices.PROCESS_GROUP_TIMEOUT.total_seconds() > 600  # longer than NCCL's default watchdog


def _ddp_worker(rank: int, world: int, port: int, data_dir: str, runs_root: str, queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist = devices.setup_distributed(device="cpu")
    config = make_config(Path(data_dir), Path(runs_root), epochs=2)
    fold = splits.fold_ids(splits.load_manifest(data_dir, "holdout"), "holdout")
    folder = runs.prepare(config) if dist.is_main else runs.run_dir(config)
    reproducibility.seed_everything(config.seed)
    model = TinyNet()

    def whole_images(ids):  # at the working resolution: each process scores a shard
        return working.EvaluationSet(data_dir, ids, SIZE, "native", "letterbox", cache_dir=Path(runs_root) / "cache",
                                     progress=False)

    result = engine.fit(config, model, losses.build_loss("dice"),
                        data.SegmentationDataset(data_dir, fold[0], SIZE, train=True, seed=config.seed),
                        whole_images(fold[1]), dist, progress=False)
    torch.manual_seed(0)
    scores = {}
    for name, net, hierarchical in (("unet", model, False), ("hierarchical", TinyHierarchical(), True)):
        window = tiling.SlidingWindow(tile=SIZE, batch_size=4)
        thin_sharded, thin_alone = thin.ThinDamageScores(k=2.0), thin.ThinDamageScores(k=2.0)
        sharded, _, sharded_panels = evaluation.evaluate_images(
            net, whole_images(fold[2]), dist, window, hierarchical,
            evaluation.Outputs(panels=3, per_image=True, scores=[thin_sharded]))
        alone, _, alone_panels = evaluation.evaluate_images(
            net, whole_images(fold[2]), devices.Distributed(device=dist.device), window, hierarchical,
            evaluation.Outputs(panels=3, per_image=True, scores=[thin_alone]))
        for scored, thin_scores in ((sharded, thin_sharded), (alone, thin_alone)):
            # numpy: a torch tensor would be shared memory, gone with this process
            scored["per_image"]["confusion"] = scored["per_image"]["confusion"].numpy()
            scored["thin"] = thin_scores.result()
        scores[name] = (sharded, sharded_panels, alone, alone_panels)
    tally = SummedCounts(hits=(3,), n_images=())  # the named counts of a per-image scorer, summed the same way
    tally.counts["hits"] += np.arange(3) * (rank + 1)
    tally.counts["n_images"] += rank + 1
    tally.load_state_dict(devices.sum_over_processes(tally.state_dict(), dist))
    queue.put((rank, result.best_epoch, result.best_val, [p.detach().numpy().copy() for p in model.parameters()],
               scores, tally.counts))  # by value
    devices.teardown_distributed(dist)


@pytest.mark.slow  # two spawned processes, each importing torch
def test_distributed_data_parallel_on_two_cpu_processes(data_dir, tmp_path):
    """Training, and evaluation of whole images sharded over the processes: every process ends with the scores
    (dataset counts, per-image rows in order, panels) one process gives alone."""
    context = torch.multiprocessing.get_context("spawn")
    queue = context.Queue()
    port = 29500 + os.getpid() % 1000
    workers = [context.Process(target=_ddp_worker, args=(rank, 2, port, str(data_dir), str(tmp_path), queue))
               for rank in range(2)]
    for worker in workers:
        worker.start()
    results = sorted((queue.get(timeout=300) for _ in workers), key=lambda result: result[0])
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    (_, best0, val0, params0, scores0, tally0), (_, best1, val1, params1, scores1, tally1) = results
    for tally in (tally0, tally1):  # 1x + 2x on every process, still NumPy int64
        assert tally["hits"].tolist() == [0, 3, 6] and tally["n_images"] == 3 and tally["hits"].dtype == np.int64
    assert best0 == best1 and val0 == val1  # the reduced validation and rank 0's model selection reach every rank
    assert all((a == b).all() for a, b in zip(params0, params1))  # DDP keeps the replicas identical
    history = next(tmp_path.glob("**/history.csv")).read_text().splitlines()
    assert len(history) == 3
    _, val_ids, test_ids = splits.fold_ids(splits.load_manifest(data_dir, "holdout"), "holdout")
    assert val0["n_images"] == len(val_ids)
    for scores in (scores0, scores1):
        for name, (sharded, sharded_panels, alone, alone_panels) in scores.items():
            assert sharded["per_image"]["ids"] == alone["per_image"]["ids"] == test_ids, name
            assert np.array_equal(sharded.pop("per_image")["confusion"], alone.pop("per_image")["confusion"]), name
            assert sharded == alone and sharded["n_images"] == len(test_ids), name  # every score, hierarchy included
            assert sharded["thin"]["n_images"] == len(test_ids), name  # the thin scores summed, not rank 0's shard
            assert [panel[0] for panel in sharded_panels] == [panel[0] for panel in alone_panels] == test_ids[:3]
            assert all(np.array_equal(a, b) for x, y in zip(sharded_panels, alone_panels) for a, b in zip(x[1:], y[1:]))
    assert "hierarchical" in scores0["hierarchical"][0]


def test_checkpoint_every_zero_writes_the_resume_state_only_on_a_signal(data_dir, fold, tmp_path):
    config = make_config(data_dir, tmp_path / "quiet", epochs=2, checkpoint_every=0)
    _, _, folder = train(config, fold, data_dir)
    assert (folder / runs.BEST_CHECKPOINT).exists() and not (folder / runs.LAST_CHECKPOINT).exists()

    config = make_config(data_dir, tmp_path / "signalled", epochs=2, checkpoint_every=0)
    signalling = SignallingDataset(data_dir, fold[0], SIZE, train=True, seed=config.seed,
                                   at=(1, sample_at(config, len(fold[0]), 1, 0)))
    with pytest.raises(engine.Interrupted) as stopped:
        train(config, fold, data_dir, train_set=signalling)
    assert torch.load(stopped.value.checkpoint, weights_only=True)["epoch"] == 1
    assert torch.load(stopped.value.checkpoint.parent / runs.BEST_CHECKPOINT, weights_only=True)["epoch"] == 1


# -- per-image scores (per_image.csv) -------------------------------------------------------------

RED_THRESHOLD = 127.5  # between two uint8 levels: no pixel sits on it


class RedThreshold(nn.Module):
    """Material loss where the red channel is at least 128, Clean elsewhere: pointwise, so tiling and
    Hann blending leave it unchanged and the prediction can be made by hand from the stored image."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 16, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.fill_(-1e4)
            self.head.bias[0] = 0.0
            self.head.weight[1, 0] = 1.0
            self.head.bias[1] = -(RED_THRESHOLD / 255 - data.IMAGENET_MEAN[0]) / data.IMAGENET_STD[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images)


def hand_scores(picture: np.ndarray, mask: np.ndarray) -> tuple[dict[str, float], float]:
    """Per-class IoU (NaN where absent from truth and prediction) and their mean, from the pixels."""
    prediction = np.where(picture[..., 0] >= 128, 1, 0)
    valid = mask != taxonomy.IGNORE_INDEX
    ious = {}
    for index, name in enumerate(taxonomy.CLASS_NAMES):
        truth_c, predicted_c = (mask == index) & valid, (prediction == index) & valid
        union = int((truth_c | predicted_c).sum())
        ious[name] = int((truth_c & predicted_c).sum()) / union if union else math.nan
    present = [v for v in ious.values() if not math.isnan(v)]
    return ious, sum(present) / len(present)


@pytest.fixture(scope="module")
def red_evaluation(data_dir, fold, tmp_path_factory):
    ids = fold[2]
    images = working.EvaluationSet(data_dir, ids, SIZE, "native", "working",
                                cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    result, _, _ = evaluation.evaluate_images(RedThreshold(), images, devices.Distributed(),
                                              tiling.SlidingWindow(tile=SIZE, batch_size=4),
                                              outputs=evaluation.Outputs(per_image=True))
    source_of = datafolder.read_metadata(data_dir).set_index("id")["source_id"]
    table = runs.per_image_table(result["per_image"]["ids"], list(source_of.loc[ids]),
                                 result["per_image"]["confusion"].numpy())
    return ids, result, table


def test_per_image_scores_agree_with_a_hand_computation(data_dir, red_evaluation, tmp_path):
    ids, result, table = red_evaluation
    runs.write_per_image(tmp_path, table)
    written = runs.read_per_image(tmp_path)
    assert list(written["id"]) == ids and len(ids) >= 3
    columns = runs.per_image_columns()["iou"]
    absent_somewhere = False
    for _, row in written.iterrows():
        picture, mask = working.read_sample(data_dir, row.id)  # native: the stored pixels are the scored ones
        ious, miou = hand_scores(picture, mask)
        got = dict(zip(taxonomy.CLASS_NAMES, row[columns]))
        for name in taxonomy.CLASS_NAMES:
            if math.isnan(ious[name]):
                absent_somewhere = True
                assert math.isnan(got[name]), (row.id, name)
            else:
                assert got[name] == pytest.approx(ious[name], abs=1e-12), (row.id, name)
        assert row.miou == pytest.approx(miou, abs=1e-12)
        assert row.n_pixels == int((mask != taxonomy.IGNORE_INDEX).sum())
        assert row.source_id == row.id  # test parts hold originals
        clean = metrics.constant_prediction_miou(torch.tensor(np.diag(np.bincount(
            mask[mask != taxonomy.IGNORE_INDEX], minlength=16))))
        assert row.all_clean_miou == pytest.approx(clean, abs=1e-12)
    assert absent_somewhere  # the NaN convention was exercised
    assert result["per_image_miou"] == pytest.approx(written["miou"].mean(), abs=1e-12)
    assert result["per_image_miou"] != pytest.approx(result["miou"])  # two different numbers, both recorded


def test_per_image_counts_add_up_to_the_dataset_confusion(red_evaluation):
    _, result, table = red_evaluation
    dataset = np.asarray(result["confusion_matrix"])
    columns = runs.per_image_columns()
    assert (table[columns["tp"]].sum().to_numpy() == np.diag(dataset)).all()
    assert (table[columns["true"]].sum().to_numpy() == dataset.sum(axis=1)).all()
    assert (table[columns["pred"]].sum().to_numpy() == dataset.sum(axis=0)).all()
    assert (result["per_image"]["confusion"].numpy().sum(axis=0) == dataset).all()
    assert table["n_pixels"].sum() == dataset.sum()


def test_per_image_csv_is_deterministic(red_evaluation, tmp_path):
    _, _, table = red_evaluation
    runs.write_per_image(tmp_path / "a", table)
    runs.write_per_image(tmp_path / "b", table.copy())
    first = (tmp_path / "a" / runs.PER_IMAGE_FILE).read_bytes()
    assert first == (tmp_path / "b" / runs.PER_IMAGE_FILE).read_bytes() and b"NaN" in first


def test_a_per_image_csv_without_its_columns_is_refused_naming_the_file(red_evaluation, tmp_path):
    _, _, table = red_evaluation
    runs.write_per_image(tmp_path, table.drop(columns=["iou_Peel"]))
    with pytest.raises(errors.InputError, match=r"per_image\.csv: lacks column\(s\) iou_Peel"):
        runs.read_per_image(tmp_path)
    with pytest.raises(errors.MissingInputError, match="per_image.csv: file not found"):
        runs.read_per_image(tmp_path / "elsewhere")


def test_a_finished_run_writes_per_image_csv_beside_metrics_json(data_dir, fold, tmp_path):
    from heritage.training import train

    _, val_ids, test_ids = fold
    config = make_config(data_dir, tmp_path, n_prediction_panels=0)
    folder = runs.prepare(config)
    model = RedThreshold()
    runs.save_checkpoint(folder / runs.BEST_CHECKPOINT, {"model": model.state_dict(), "config": config.to_dict(),
                                                        "epoch": 1, "val_miou": 0.0})
    test_set, val_set = (working.EvaluationSet(data_dir, ids, SIZE, "native", "letterbox", cache_dir=tmp_path / "cache",
                                               progress=False) for ids in (test_ids, val_ids))
    fitted = engine.FitResult(history=[], best_epoch=1, best_val={"miou": 0.0, "pixel_accuracy": 0.0, "n_images": 1},
                              train_images_per_s=None, peak_memory_mb=0.0, wall_time_s=0.0,
                              kernels=reproducibility.kernel_mode(torch.device("cpu")).record())
    result = train._final_evaluation(config, model, {"test": test_set, "val": val_set}, fitted,
                                     devices.Distributed(), False, {})
    table = runs.read_per_image(folder)
    assert list(table["id"]) == test_ids and "per_image" not in result["test"]
    source_of = datafolder.read_metadata(data_dir).set_index("id")["source_id"]
    assert list(table["source_id"]) == list(source_of.loc[test_ids])
    assert result["test"]["per_image_miou"] == pytest.approx(table["miou"].mean(), abs=1e-12)
    assert list(result["test"])[:2] == ["miou", "per_image_miou"]  # beside the dataset-level one, labelled
    assert "dataset-level" in result["test"]["per_image_convention"]
    assert table["n_pixels"].sum() == np.asarray(result["test"]["confusion_matrix"]).sum()
