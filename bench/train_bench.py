"""Training and inference throughput, FLOPs and peak memory of each encoder (UNet or hierarchical UPerNet).

Three modes. ``--mode model`` (the default) measures the model alone on random batches (no data
loading), with the engine's own choices of precision and memory format, so numbers compare encoders,
devices and precisions:

- train: AdamW step with the Dice loss, ``--warmup`` steps left out of the timing;
- inference: forward passes under ``torch.inference_mode``, warm-up left out likewise;
- FLOPs per image: the forward pass counted with ``torch.utils.flop_counter.FlopCounterMode``,
  training taken as 3x the forward (see :func:`bench_encoder` for why the backward is not counted);
  on a GPU with a known peak, the share of peak FLOP/s reached;
- peak memory: CUDA ``max_memory_allocated`` per encoder, on CPU the process's max RSS (monotone
  over the run, so read it as an upper bound for later encoders).

Writes ``bench/results/<device>-<date>.json``.

``--mode step-ab`` times the training step (forward, backward, optimizer, each phase apart) of one
encoder in several variants of the step in the same process, in interleaved blocks (the order
rotates every round), so a noisy machine slows every variant alike: ``before`` is the loop before
issue 14 (AdamW's per-parameter for-loop, deterministic mode filling new tensors with NaN),
``after`` the engine's own (:func:`heritage.training.engine.build_optimizer`,
:func:`heritage.training.reproducibility.deterministic_algorithms`), and the variants between them change one thing.
Writes ``bench/results/cpu-step-<device>-<date>.json`` (``gpu-step-`` on a GPU).

``--mode loop`` runs the real training loop: :func:`heritage.training.train.run_training` (preload cache,
augmentation, DataLoader workers, AdamW + OneCycle step, validation, checkpoint) on the synthetic
stand-in (or ``--data``), after timing the training DataLoader alone (the same dataset and loader
the run builds). It reports loader img/s, the loop's training img/s (``history.csv``'s, data
included), FLOPs per image, the FLOP/s reached and their share of the device's peak (the table
below on a GPU; on CPU a float32 matmul probe measures the peak). Writes
``bench/results/loop-<device>-<date>.json``::

    python bench/train_bench.py --image-size 64 --batch-size 8 --steps 5            # CPU, small
    python bench/train_bench.py --image-size 384 --batch-size 32 --amp auto         # GPU, the seeds' size
    python bench/train_bench.py --mode step-ab --encoders convnext_tiny --image-size 128 --batch-size 8
    python bench/train_bench.py --mode loop --encoders convnext_tiny --image-size 128 --batch-size 8
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import re
import resource
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import numpy as np

from heritage import config, fileio, report
from heritage.data import datasets as data, splits, synthetic as synth, taxonomy
from heritage.modeling import losses, models, registry
from heritage.pipeline import preparation
from heritage.training import devices, engine, reproducibility, runs, train

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TRAIN_FLOPS_PER_FORWARD = 3
# Dense peak TFLOP/s from the vendors' data sheets (no sparsity), per autocast dtype (None = float32, counted
# as the TF32 tensor-core peak: training runs float32 matmuls and convolutions in TF32 on these GPUs,
# reproducibility.kernel_mode). Matched against torch.cuda.get_device_name in this order, so the more
# specific name comes first (an "H100 PCIe" is not an SXM "H100"). V100 (SXM2) and T4: no bf16, no TF32.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bfloat16": 756.0, "float16": 756.0, "float32": 378.0},
    "H100 NVL": {"bfloat16": 835.0, "float16": 835.0, "float32": 418.0},
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0},
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "float32": 183.0},
    "A10": {"bfloat16": 125.0, "float16": 125.0, "float32": 62.5},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 60.0},
    "V100": {"float16": 125.0, "float32": 15.7},
    "T4": {"float16": 65.0, "float32": 8.1},
}


def peak_tflops(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """The data-sheet peak of this GPU for ``dtype``, or None (CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device), dtype)


def peak_for_name(name: str, dtype: torch.dtype | None) -> float | None:
    """:data:`PEAK_TFLOPS` of the first model whose key is in the device ``name``, for ``dtype``."""
    for model, peaks in PEAK_TFLOPS.items():
        if model in name:
            return peaks.get(devices.dtype_name(dtype))
    return None


def forward_flops(model: torch.nn.Module, images: torch.Tensor, dtype: torch.dtype | None) -> int:
    """FLOPs of one forward pass over the batch (eval mode, no autograd)."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
            model(images)
    return counter.get_total_flops()


def timed(step, n_steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step over ``n_steps`` after ``warmup`` untimed steps."""
    for _ in range(warmup):
        step()
    devices.synchronize(device)
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    devices.synchronize(device)
    return (time.perf_counter() - start) / n_steps


def bench_encoder(encoder: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One encoder's training step as the engine runs it: its own memory format (``--channels-last auto``),
    the precision ``--amp`` picks here, the run's kernels (cuDNN autotuning and TF32 on a GPU), uint8
    batches sent to the device and normalised there; then inference, FLOPs and peak memory."""
    dtype = devices.autocast_dtype(args.amp, device)
    channels_last = devices.uses_channels_last(args.channels_last, encoder, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = models.build_model(args.architecture, encoder, image_size=args.image_size).to(
        device, memory_format=memory_format)
    loss_fn = losses.build_loss("hierarchical" if args.architecture == "hierarchical_upernet" else "dice").to(device)
    optimizer = engine.build_optimizer(model.parameters(), lr=1e-4, weight_decay=1e-4, device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    size, batch = args.image_size, args.batch_size
    # what a DataLoader hands the loop: uint8 on the host (pinned for a GPU), copied and normalised every step
    host_images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    host_masks = torch.randint(0, taxonomy.NUM_CLASSES, (batch, size, size), dtype=torch.uint8)
    if device.type == "cuda":
        host_images, host_masks = host_images.pin_memory(), host_masks.pin_memory()
    images, _ = data.batch_to_device(host_images, host_masks, device, memory_format)  # inference and FLOPs
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # torch.compile (args.compile, with args.compile_backend) wraps the module for the timed steps;
    # FLOPs are counted on the eager module.
    runner = (torch.compile(model, backend=getattr(args, "compile_backend", "inductor"))
              if getattr(args, "compile", False) else model)

    def train_step() -> None:
        step_images, step_masks = data.batch_to_device(host_images, host_masks, device, memory_format)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(runner(step_images), step_masks)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    @torch.inference_mode()
    def eval_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            runner(images)

    mode = reproducibility.kernel_mode(device)
    with reproducibility.kernels(mode):
        return {**_timed_encoder(encoder, args, device, model, (train_step, eval_step), images, dtype),
                "channels_last": channels_last, "autocast_dtype": devices.dtype_name(dtype), "kernels": mode.record()}


def _timed_encoder(encoder: str, args: argparse.Namespace, device: torch.device, model: torch.nn.Module,
                   steps: tuple[Callable[[], None], Callable[[], None]], images: torch.Tensor,
                   dtype: torch.dtype | None) -> dict[str, Any]:
    """Images/s of the training and inference ``steps``, FLOPs per image, share of peak, peak memory."""
    train_step, eval_step = steps
    batch, size = images.shape[0], images.shape[-1]
    model.train()
    train_seconds = timed(train_step, args.steps, args.warmup, device)
    train_peak_mb = devices.peak_memory_mb(device)
    model.eval()
    eval_seconds = (None if getattr(args, "skip_eval", False)  # a compiled eval is a second compilation
                    else timed(eval_step, args.steps, args.warmup, device))
    eval_flops = forward_flops(model, images, dtype) / batch
    # Training = forward + backward ~ 3x the forward. Counting the backward pass is not possible
    # here: torch 2.14's FlopCounterMode ignores `groups` in convolution_backward, so every
    # depthwise convolution (ConvNeXt, MiT, MBConv) is counted 'channels' times too often.
    train_flops = TRAIN_FLOPS_PER_FORWARD * eval_flops
    peak = peak_tflops(device, dtype)
    train_tflops = train_flops * batch / train_seconds / 1e12
    eval_tflops = eval_flops * batch / eval_seconds / 1e12 if eval_seconds else None
    return {
        "encoder": encoder, "family": registry.ENCODERS[encoder].family,
        "params_m": round(models.count_parameters(model) / 1e6, 3),
        "batch_size": batch, "image_size": size,
        "train_images_per_s": batch / train_seconds,
        "eval_images_per_s": batch / eval_seconds if eval_seconds else None,
        "train_gflop_per_image": train_flops / 1e9, "eval_gflop_per_image": eval_flops / 1e9,
        "train_tflop_per_s": train_tflops, "eval_tflop_per_s": eval_tflops,
        "peak_tflop_per_s": peak,
        "train_share_of_peak": train_tflops / peak if peak else None,
        "eval_share_of_peak": eval_tflops / peak if peak and eval_tflops else None,
        "peak_memory_mb": devices.peak_memory_mb(device), "train_peak_memory_mb": train_peak_mb,
        "compile": getattr(args, "compile", False),
    }


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype | None = None, n: int = 2048,
                       repeats: int = 5) -> float:
    """The FLOP/s a square matmul reaches here (best of ``repeats``): the device's practical peak.

    For the CPU, which has no data-sheet peak in :data:`PEAK_TFLOPS`; in the dtype the model runs in.
    """
    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: thread pool, oneDNN/cuBLAS kernel selection
    best = math.inf
    for _ in range(repeats):
        devices.synchronize(device)
        start = time.perf_counter()
        a @ b
        devices.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def device_peak(device: torch.device, dtype: torch.dtype | None) -> dict[str, Any]:
    """``{"tflop_per_s", "source"}``: the data sheet's peak on a known GPU, else a matmul probe's."""
    peak = peak_tflops(device, dtype)
    if peak is not None:
        return {"tflop_per_s": peak, "source": "data sheet, dense (PEAK_TFLOPS)"}
    return {"tflop_per_s": matmul_peak_tflops(device, dtype),
            "source": f"measured: best 2048^3 {str(dtype or torch.float32).removeprefix('torch.')} matmul"}


# -- step A/B ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _deterministic_filling(enabled: bool) -> Iterator[None]:
    """The deterministic mode as the engine set it before issue 14: new tensors filled with NaN."""
    with reproducibility.deterministic_algorithms(enabled):
        torch.utils.deterministic.fill_uninitialized_memory = True
        yield  # reproducibility.deterministic_algorithms restores the previous fill setting


def _adamw(implementation: str) -> Callable[[Any, torch.device], torch.optim.Optimizer]:
    def build(parameters: Any, device: torch.device) -> torch.optim.Optimizer:
        if implementation == "engine":
            return engine.build_optimizer(parameters, lr=1e-4, weight_decay=1e-4, device=device)
        options = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
        return torch.optim.AdamW(parameters, lr=1e-4, weight_decay=1e-4, **options[implementation])
    return build


# name -> (AdamW implementation, deterministic-mode context). "before" is the engine until issue 14
# (on CPU torch's default AdamW is the for-loop); "after" calls the engine's code itself.
STEP_VARIANTS: dict[str, tuple[str, Callable[[bool], Any]]] = {
    "before": ("for-loop", _deterministic_filling),
    "fused": ("fused", _deterministic_filling),
    "no-fill": ("for-loop", reproducibility.deterministic_algorithms),
    "foreach": ("foreach", reproducibility.deterministic_algorithms),
    "after": ("engine", reproducibility.deterministic_algorithms),
}
PHASES = ("forward", "backward", "clip", "optimizer")


def bench_step_ab(encoder: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Seconds per training step of each variant in ``args.variants``, in interleaved blocks.

    One model on one random batch; each variant has its own optimizer (its own AdamW state) over the
    same parameters, so the work per step is the same for all of them. Round r times
    ``args.steps`` steps of every variant, the order rotated by r; the ratio before/after is taken
    per round (paired), and its median and spread are reported.
    """
    dtype = devices.autocast_dtype(args.amp, device)
    channels_last = devices.uses_channels_last(args.channels_last, encoder, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = models.build_model("unet", encoder, image_size=args.image_size).to(device, memory_format=memory_format)
    loss_fn = losses.build_loss("dice").to(device)
    size, batch = args.image_size, args.batch_size
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    masks = torch.randint(0, taxonomy.NUM_CLASSES, (batch, size, size), device=device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizers = {name: _adamw(STEP_VARIANTS[name][0])(parameters, device) for name in args.variants}
    deterministic = device.type == "cpu"  # as engine.fit
    model.train()

    def step(optimizer: torch.optim.Optimizer, phases: dict[str, float]) -> None:
        marks = [time.perf_counter()]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(images), masks)
        devices.synchronize(device)
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        devices.synchronize(device)
        marks.append(time.perf_counter())
        if args.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, args.grad_clip, foreach=True)
            devices.synchronize(device)
        marks.append(time.perf_counter())
        optimizer.step()
        devices.synchronize(device)
        marks.append(time.perf_counter())
        for phase, begin, end in zip(PHASES, marks, marks[1:]):
            phases[phase] += end - begin

    for name in args.variants:  # warm-up: allocates each optimizer's state, primes the allocators
        with STEP_VARIANTS[name][1](deterministic):
            for _ in range(args.warmup):
                step(optimizers[name], dict.fromkeys(PHASES, 0.0))
    seconds: dict[str, list[float]] = {name: [] for name in args.variants}
    phases: dict[str, dict[str, float]] = {name: dict.fromkeys(PHASES, 0.0) for name in args.variants}
    for round_ in tqdm(range(args.rounds), desc=f"{encoder} rounds"):
        order = args.variants[round_ % len(args.variants):] + args.variants[:round_ % len(args.variants)]
        for name in order:
            with STEP_VARIANTS[name][1](deterministic):
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(optimizers[name], phases[name])
                seconds[name].append((time.perf_counter() - start) / args.steps)
    variants = {}
    for name in args.variants:
        total = sum(phases[name].values())
        variants[name] = {
            "optimizer": STEP_VARIANTS[name][0],
            "fill_uninitialized_memory": STEP_VARIANTS[name][1] is _deterministic_filling,
            "seconds_per_step": seconds[name], "median_seconds_per_step": statistics.median(seconds[name]),
            "median_images_per_s": batch / statistics.median(seconds[name]),
            "phase_share": {phase: value / total for phase, value in phases[name].items()},
        }
    result: dict[str, Any] = {"encoder": encoder, "channels_last": channels_last,
                              "params_m": round(models.count_parameters(model) / 1e6, 3), "variants": variants}
    for name in args.variants:
        if name != "before" and "before" in seconds:
            ratios = [b / a for b, a in zip(seconds["before"], seconds[name])]
            result[f"speedup_{name}_over_before"] = {
                "per_round": ratios, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return result


# -- the real loop -------------------------------------------------------------------------------------------


def synthetic_data(folder: Path, n_images: int, longest_side: int) -> Path:
    """A data folder of the synthetic stand-in (``n_images`` originals), made as ``paper`` makes one."""
    shards = folder / "shards"
    synth.write_parquet(shards, n_images=n_images, longest_side=longest_side, progress=False)
    return preparation.prepare_data("full", source=shards, data_dir=folder / "data")


def loop_config(poc: str, profile: str, encoder: str, data_dir: Path, runs_root: Path,
                overrides: dict[str, Any]) -> config.RunConfig:
    """The POC's configuration of ``encoder`` under ``profile``, pointed at ``data_dir``, with overrides.

    ``pretrained`` is off unless an override sets it: the full profile's ImageNet weights need the Hub (or its
    cache), which a benchmark machine may not reach, and a step's time does not depend on the initial weights.
    """
    return config.load_run_config(poc, profile, encoder=encoder, overrides={
        "data_dir": str(data_dir), "runs_root": str(runs_root), "pretrained": False, **overrides})


def train_dataset(run: config.RunConfig) -> data.SegmentationDataset:
    """The run's training dataset, built as :func:`heritage.training.train.run_training` builds it."""
    train_ids, _, _ = splits.fold_ids(splits.load_manifest(run.data_dir, run.protocol), run.fold)
    if run.max_train_samples is not None and run.max_train_samples < len(train_ids):  # as run_training picks
        rng = np.random.default_rng(run.seed)
        train_ids = sorted(rng.choice(train_ids, size=run.max_train_samples, replace=False).tolist())
    cache = data.PreloadCache(run.data_dir, train_ids, run.image_size) if run.preload else None
    return data.SegmentationDataset(run.data_dir, train_ids, run.image_size, train=True, cache=cache, seed=run.seed)


def loader_images_per_s(run: config.RunConfig, epochs: int = 1) -> dict[str, Any]:
    """The training DataLoader alone (augmentation, collation, workers): images/s over ``epochs``.

    Timed from the first batch on (worker start-up is reported apart), as the loop times its steps.
    """
    dataset = train_dataset(run)
    loader = data.make_loader(dataset, run.batch_size, train=True, num_workers=run.num_workers, seed=run.seed)
    images, startup, seconds = 0, 0.0, 0.0
    for epoch in range(epochs):
        data.set_epoch(loader, epoch)
        start = time.perf_counter()
        batches = iter(loader)
        first = next(batches)
        startup += time.perf_counter() - start
        start = time.perf_counter()
        for batch_images, _ in batches:
            images += len(batch_images)
        seconds += time.perf_counter() - start
        del first
    return {"images_per_s": images / seconds if seconds else None, "images_timed": images,
            "startup_s_per_epoch": startup / epochs, "num_workers": run.num_workers,
            "train_samples": len(dataset), "preload": run.preload}


def train_flops_per_image(run: config.RunConfig, device: torch.device) -> float:
    """3x the forward FLOPs of one image (see :func:`bench_encoder`), in the run's precision."""
    dtype = devices.autocast_dtype(run.amp, device)
    model = models.build_model(run.architecture, run.encoder, image_size=run.image_size).to(device)
    images = torch.randn(2, 3, run.image_size, run.image_size, device=device)
    return TRAIN_FLOPS_PER_FORWARD * forward_flops(model, images, dtype) / 2


def bench_loop(run: config.RunConfig, device: torch.device, loader_epochs: int = 1) -> dict[str, Any]:
    """Loader img/s, then the real training run (``heritage train``'s code) with its FLOP/s and share of peak."""
    loader = loader_images_per_s(run, loader_epochs)
    start = time.perf_counter()
    result = train.run_training(run, progress=False)
    wall = time.perf_counter() - start
    history = report.read_history(config.run_dir(run)).to_dict("records")
    images_per_s = result["throughput"]["train_images_per_s"]
    flops = train_flops_per_image(run, device)
    dtype = devices.autocast_dtype(run.amp, device)
    peak = device_peak(device, dtype)
    achieved = flops * images_per_s / 1e12 if images_per_s else None
    return {
        "encoder": run.encoder, "image_size": run.image_size, "batch_size": run.batch_size,
        "amp": run.amp, "autocast_dtype": str(dtype), "compile": run.compile,
        "channels_last": devices.uses_channels_last(run.channels_last, run.encoder, device),
        "epochs": run.epochs, "loader": loader,
        "train_images_per_s": images_per_s,
        "train_images_per_s_per_epoch": [row.get("images_per_s") for row in history],
        "eval_images_per_s": result["throughput"]["eval_images_per_s"],
        "train_gflop_per_image": flops / 1e9, "train_tflop_per_s": achieved,
        "peak": peak, "share_of_peak": achieved / peak["tflop_per_s"] if achieved else None,
        "peak_memory_mb": result["peak_memory_mb"], "test_miou": result["test"]["miou"],
        "run_wall_time_s": wall,
    }


def bench_amp(args: argparse.Namespace, device: torch.device, data_dir: Path, scratch: Path) -> dict[str, Any]:
    """``heritage train``'s loop in float32 (``amp=off``) and with ``amp=auto``, in interleaved rounds.

    Each round trains one fresh run of each (the order alternates), with the same configuration but
    ``amp``; its images/s is the run's own (``metrics.json``'s throughput: the timed steps of the loop,
    data loading included). The ratio auto / float32 is taken per round (paired), so a machine shared
    with other jobs slows both alike. Each run's CPU seconds (this process's, the whole run: data, training,
    evaluation) are recorded too: on a machine whose cores other jobs share, their ratio float32 / auto
    says how much less work a run is, which the wall clock mixes with the others' load.
    """
    encoder = args.encoders[0]
    overrides = {"image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
                 "max_train_samples": args.max_train_samples, "channels_last": args.channels_last,
                 "n_prediction_panels": 1, "checkpoint_every": 0,
                 **({"num_workers": args.num_workers} if args.num_workers is not None else {})}
    speeds: dict[str, list[float]] = {"off": [], "auto": []}
    cpu_seconds: dict[str, list[float]] = {"off": [], "auto": []}
    runs_seen: dict[str, list[dict[str, Any]]] = {"off": [], "auto": []}
    for round_ in tqdm(range(args.rounds), desc="rounds"):
        for amp in ("off", "auto") if round_ % 2 == 0 else ("auto", "off"):
            run = loop_config(args.poc, args.profile, encoder, data_dir, scratch / f"runs-{round_}-{amp}",
                              {**overrides, "amp": amp})
            cpu_before = _cpu_seconds()
            metrics = train.run_training(run, progress=False)
            cpu_s = _cpu_seconds() - cpu_before
            speeds[amp].append(metrics["throughput"]["train_images_per_s"])
            cpu_seconds[amp].append(cpu_s)
            runs_seen[amp].append({"round": round_, "autocast_dtype": metrics["autocast_dtype"],
                                   "train_images_per_s": metrics["throughput"]["train_images_per_s"],
                                   "wall_time_s": metrics["wall_time_s"], "cpu_s": cpu_s,
                                   "test_miou": metrics["test"]["miou"],
                                   "load_average": os.getloadavg()})
    ratios = [auto / off for auto, off in zip(speeds["auto"], speeds["off"])]
    cpu_ratios = [off / auto for auto, off in zip(cpu_seconds["auto"], cpu_seconds["off"])]
    return {
        "encoder": encoder, "poc": args.poc, "profile": args.profile, "image_size": args.image_size,
        "batch_size": args.batch_size, "epochs": args.epochs, "max_train_samples": args.max_train_samples,
        "auto_dtype": devices.dtype_name(devices.autocast_dtype("auto", device)),
        "cpu_native_bf16": devices.cpu_has_native_bf16() if device.type == "cpu" else None,
        **{name: {"images_per_s": speeds[amp], "median": statistics.median(speeds[amp]), "runs": runs_seen[amp]}
           for name, amp in (("float32", "off"), ("auto", "auto"))},
        "speedup_auto_over_float32": {"per_round": ratios, "median": statistics.median(ratios),
                                      "min": min(ratios), "max": max(ratios)},
        "cpu_seconds_float32_over_auto": {"per_round": cpu_ratios, "median": statistics.median(cpu_ratios),
                                          "min": min(cpu_ratios), "max": max(cpu_ratios)},
    }


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def result_path(out_dir: Path, device_name: str, day: str, prefix: str = "") -> Path:
    """``<out_dir>/<prefix><device slug>-<day>.json`` (the results of the benchmarks in bench/)."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    return out_dir / f"{prefix}{slug}-{day}.json"


def trained_on(devices: Iterable[str]) -> str:
    """The device of a bench's training runs (their metrics.json ``device``: the GPU's or the CPU's name), which
    its record is named after, rather than the CPU it was started on; runs on several devices are named together."""
    return " + ".join(sorted(set(devices)))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="model", choices=("model", "step-ab", "loop", "amp"))
    parser.add_argument("--encoders", nargs="+", default=None, choices=list(registry.ENCODERS),
                        help="default: every encoder (model), convnext_tiny (step-ab, loop)")
    parser.add_argument("--architecture", default="unet", choices=registry.ARCHITECTURES)
    parser.add_argument("--image-size", type=int, default=None, help="default 64 (model), 128 (step-ab), the profile's (loop)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 (model, step-ab), the profile's (loop)")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    parser.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (step-ab: per block)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    ab = parser.add_argument_group("step-ab")
    ab.add_argument("--variants", nargs="+", default=list(STEP_VARIANTS), choices=list(STEP_VARIANTS))
    ab.add_argument("--rounds", type=int, default=5,
                    help="interleaved rounds (step-ab: one block of --steps per variant each; amp: one run of each)")
    ab.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (timed as its own phase)")
    loop = parser.add_argument_group("loop")
    loop.add_argument("--poc", default="poc59v2_flagship", choices=config.available_pocs())
    loop.add_argument("--profile", default="smoke", choices=("smoke", "full"))
    loop.add_argument("--epochs", type=int, default=1)
    loop.add_argument("--num-workers", type=int, default=None, help="default: the profile's")
    loop.add_argument("--max-train-samples", type=int, default=None, help="default: every training sample")
    loop.add_argument("--loader-epochs", type=int, default=1, help="epochs of the loader-only timing")
    loop.add_argument("--data", type=Path, help="a data folder instead of the synthetic stand-in")
    loop.add_argument("--synthetic-images", type=int, default=48, help="originals of the stand-in (x4 with augment)")
    loop.add_argument("--synthetic-side", type=int, default=512, help="longest side of the stand-in's images")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    device_name = runs.device_name(device)
    header = {"device": device_name, "date": date.today().isoformat(), "hostname": platform.node(),
              "torch": torch.__version__, "cuda": torch.version.cuda if device.type == "cuda" else None,
              "torch_threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()}
    if args.mode == "model":
        report_, prefix = run_model_mode(args, device), ""
    elif args.mode == "step-ab":
        report_, prefix = run_step_ab_mode(args, device), f"{'gpu' if device.type == 'cuda' else 'cpu'}-step-"
    elif args.mode == "amp":
        report_, prefix = run_amp_mode(args, device), "amp-auto-"
    else:
        report_, prefix = run_loop_mode(args, device), "loop-"
    record = {**header, "load_average_at_end": os.getloadavg(), **report_}
    path = result_path(args.out, device_name, record["date"], prefix=prefix)
    fileio.write_json(path, record)
    print(f"-> {path}")
    return path


def run_model_mode(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    args.encoders = args.encoders or list(registry.ENCODERS)
    args.image_size, args.batch_size = args.image_size or 64, args.batch_size or 8
    for encoder in args.encoders:
        registry.check_image_size(encoder, args.image_size)
    results = [bench_encoder(encoder, args, device) for encoder in tqdm(args.encoders, desc="encoders")]
    for row in results:
        print(f"{row['encoder']:>14s}: train {row['train_images_per_s']:8.2f} img/s, eval "
              f"{row['eval_images_per_s'] or 0:8.2f} img/s, {row['train_gflop_per_image']:.2f} GFLOP/img train, "
              f"peak {row['peak_memory_mb']:.0f} MB")
    return {
        "settings": {"architecture": args.architecture, "image_size": args.image_size,
                     "batch_size": args.batch_size, "amp": args.amp,
                     "autocast_dtype": str(devices.autocast_dtype(args.amp, device)),
                     "channels_last": args.channels_last, "steps": args.steps, "warmup": args.warmup,
                     "loss": "hierarchical" if args.architecture == "hierarchical_upernet" else "dice",
                     "optimizer": "AdamW (engine.build_optimizer)",
                     "data": "random tensors (model throughput, no data loading)"},
        "results": results,
    }


def run_step_ab_mode(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    args.encoders = args.encoders or ["convnext_tiny"]
    args.image_size, args.batch_size = args.image_size or 128, args.batch_size or 8
    results = [bench_step_ab(encoder, args, device) for encoder in args.encoders]
    for row in results:
        for name, variant in row["variants"].items():
            speedup = row.get(f"speedup_{name}_over_before")
            shares = ", ".join(f"{k} {v:.0%}" for k, v in variant["phase_share"].items())
            print(f"{row['encoder']:>14s} {name:>8s}: {variant['median_seconds_per_step']:.3f} s/step ({shares})"
                  + (f", {speedup['median']:.2f}x before [{speedup['min']:.2f}, {speedup['max']:.2f}]"
                     if speedup else ""))
    return {
        "settings": {"mode": "step-ab", "image_size": args.image_size, "batch_size": args.batch_size,
                     "amp": args.amp, "autocast_dtype": str(devices.autocast_dtype(args.amp, device)),
                     "channels_last": args.channels_last, "steps_per_block": args.steps, "rounds": args.rounds,
                     "warmup": args.warmup, "grad_clip": args.grad_clip, "loss": "dice",
                     "deterministic_algorithms": device.type == "cpu",
                     "data": "one random batch (the step alone, no data loading)",
                     "variants": {name: {"optimizer": impl, "fill_uninitialized_memory": ctx is _deterministic_filling}
                                  for name, (impl, ctx) in STEP_VARIANTS.items() if name in args.variants}},
        "results": results,
    }


def run_loop_mode(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    args.encoders = args.encoders or ["convnext_tiny"]
    given = {"image_size": args.image_size, "batch_size": args.batch_size, "num_workers": args.num_workers}
    overrides = {**{k: v for k, v in given.items() if v is not None}, "epochs": args.epochs,
                 "max_train_samples": args.max_train_samples, "amp": args.amp,
                 "channels_last": args.channels_last, "n_prediction_panels": 1, "checkpoint_every": 1}
    with tempfile.TemporaryDirectory(prefix="loop-bench-") as scratch:
        scratch = Path(scratch)
        data_dir = args.data or synthetic_data(scratch, args.synthetic_images, args.synthetic_side)
        results = []
        for encoder in args.encoders:
            run = loop_config(args.poc, args.profile, encoder, data_dir, scratch / "runs", overrides)
            results.append(bench_loop(run, device, args.loader_epochs))
    for row in results:
        print(f"{row['encoder']:>14s}: loader {row['loader']['images_per_s']:.1f} img/s, loop "
              f"{row['train_images_per_s']:.1f} img/s, {row['train_gflop_per_image']:.2f} GFLOP/img, "
              f"{row['train_tflop_per_s']:.3f} TFLOP/s = {row['share_of_peak']:.1%} of {row['peak']['tflop_per_s']:.2f}")
    return {
        "settings": {"mode": "loop", "poc": args.poc, "profile": args.profile, "epochs": args.epochs,
                     "data": str(args.data) if args.data else {"synthetic_images": args.synthetic_images,
                                                                "longest_side": args.synthetic_side},
                     "what": "heritage.training.train.run_training (preload, augmentation, DataLoader, AdamW + OneCycle, "
                             "validation, test, checkpoint); loader timed alone first"},
        "results": results,
    }


def run_amp_mode(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    args.encoders = args.encoders or ["convnext_tiny"]
    args.image_size, args.batch_size = args.image_size or 128, args.batch_size or 8
    args.max_train_samples = args.max_train_samples or 96
    with tempfile.TemporaryDirectory(prefix="amp-bench-") as scratch:
        scratch = Path(scratch)
        data_dir = args.data or synthetic_data(scratch, args.synthetic_images, args.synthetic_side)
        result = bench_amp(args, device, data_dir, scratch)
    speedup, work = result["speedup_auto_over_float32"], result["cpu_seconds_float32_over_auto"]
    print(f"{result['encoder']:>14s}: amp auto = {result['auto_dtype']}: {result['auto']['median']:.2f} img/s vs "
          f"float32 {result['float32']['median']:.2f} img/s: {speedup['median']:.2f}x "
          f"[{speedup['min']:.2f}, {speedup['max']:.2f}] over {len(speedup['per_round'])} rounds; CPU seconds a run "
          f"float32 / auto {work['median']:.2f}x [{work['min']:.2f}, {work['max']:.2f}]")
    return {
        "settings": {"mode": "amp", "rounds": args.rounds, "torch_threads": torch.get_num_threads(),
                     "data": str(args.data) if args.data else {"synthetic_images": args.synthetic_images,
                                                                "longest_side": args.synthetic_side},
                     "what": "heritage.training.train.run_training with amp=off and amp=auto, one fresh run of each "
                             "per round, order alternating; images/s = metrics.json throughput.train_images_per_s"},
        "results": [result],
    }


if __name__ == "__main__":
    main()
