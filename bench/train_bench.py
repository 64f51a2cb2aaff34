"""Training and inference throughput, FLOPs and peak memory of each encoder (UNet or hierarchical UPerNet).

Measures the model alone on random batches (no data loading), with the engine's own choices of
precision and memory format, so numbers compare encoders, devices and precisions:

- train: AdamW step with the Dice loss, ``--warmup`` steps left out of the timing;
- inference: forward passes under ``torch.inference_mode``, warm-up left out likewise;
- FLOPs per image: the forward pass counted with ``torch.utils.flop_counter.FlopCounterMode``,
  training taken as 3x the forward (see :func:`bench_encoder` for why the backward is not counted);
  on a GPU with a known peak, the share of peak FLOP/s reached;
- peak memory: CUDA ``max_memory_allocated`` per encoder, on CPU the process's max RSS (monotone
  over the run, so read it as an upper bound for later encoders).

Writes ``bench/results/<device>-<date>.json``::

    python bench/train_bench.py --image-size 64 --batch-size 8 --steps 5            # CPU, small
    python bench/train_bench.py --image-size 384 --batch-size 32 --amp auto         # GPU, the seeds' size
"""

from __future__ import annotations

import argparse
import platform
import re
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from heritage import engine, fileio, losses, models, runs, taxonomy

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TRAIN_FLOPS_PER_FORWARD = 3
# Dense peak TFLOP/s from the vendors' data sheets (SXM parts), per autocast dtype (None = float32,
# counted as TF32 tensor-core peak where cuDNN/cuBLAS use it by default for convolutions).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0},
    "V100": {"float16": 125.0, "float32": 15.7},
}


def peak_tflops(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """The data-sheet peak of this GPU for ``dtype``, or None (CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    for model, peaks in PEAK_TFLOPS.items():
        if model in name:
            return peaks.get(key)
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
    engine.synchronize(device)
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    engine.synchronize(device)
    return (time.perf_counter() - start) / n_steps


def bench_encoder(encoder: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    dtype = engine.autocast_dtype(args.amp, device)
    channels_last = engine.uses_channels_last(args.channels_last, encoder, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = models.build_model(args.architecture, encoder, image_size=args.image_size).to(
        device, memory_format=memory_format)
    loss_fn = losses.build_loss("hierarchical" if args.architecture == "hierarchical_upernet" else "dice").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    size, batch = args.image_size, args.batch_size
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    masks = torch.randint(0, taxonomy.NUM_CLASSES, (batch, size, size), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    @torch.inference_mode()
    def eval_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model(images)

    model.train()
    train_seconds = timed(train_step, args.steps, args.warmup, device)
    model.eval()
    eval_seconds = timed(eval_step, args.steps, args.warmup, device)
    eval_flops = forward_flops(model, images, dtype) / batch
    # Training = forward + backward ~ 3x the forward. Counting the backward pass is not possible
    # here: torch 2.14's FlopCounterMode ignores `groups` in convolution_backward, so every
    # depthwise convolution (ConvNeXt, MiT, MBConv) is counted 'channels' times too often.
    train_flops = TRAIN_FLOPS_PER_FORWARD * eval_flops
    peak = peak_tflops(device, dtype)
    train_tflops = train_flops * batch / train_seconds / 1e12
    eval_tflops = eval_flops * batch / eval_seconds / 1e12
    return {
        "encoder": encoder, "family": models.ENCODERS[encoder].family,
        "params_m": round(models.count_parameters(model) / 1e6, 3),
        "channels_last": channels_last,
        "train_images_per_s": batch / train_seconds, "eval_images_per_s": batch / eval_seconds,
        "train_gflop_per_image": train_flops / 1e9, "eval_gflop_per_image": eval_flops / 1e9,
        "train_tflop_per_s": train_tflops, "eval_tflop_per_s": eval_tflops,
        "peak_tflop_per_s": peak,
        "train_share_of_peak": train_tflops / peak if peak else None,
        "eval_share_of_peak": eval_tflops / peak if peak else None,
        "peak_memory_mb": engine.peak_memory_mb(device),
    }


def result_path(out_dir: Path, device_name: str, day: str, prefix: str = "") -> Path:
    """``<out_dir>/<prefix><device slug>-<day>.json`` (the results of the benchmarks in bench/)."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    return out_dir / f"{prefix}{slug}-{day}.json"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(models.ENCODERS), choices=list(models.ENCODERS))
    parser.add_argument("--architecture", default="unet", choices=models.ARCHITECTURES)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    parser.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    for encoder in args.encoders:
        models.check_image_size(encoder, args.image_size)
    device = torch.device(args.device)
    results = [bench_encoder(encoder, args, device) for encoder in tqdm(args.encoders, desc="encoders")]
    device_name = runs.device_name(device)
    report = {
        "device": device_name, "date": date.today().isoformat(), "hostname": platform.node(),
        "torch": torch.__version__, "cuda": torch.version.cuda if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "settings": {"architecture": args.architecture, "image_size": args.image_size,
                     "batch_size": args.batch_size, "amp": args.amp,
                     "autocast_dtype": str(engine.autocast_dtype(args.amp, device)),
                     "channels_last": args.channels_last, "steps": args.steps, "warmup": args.warmup,
                     "loss": "hierarchical" if args.architecture == "hierarchical_upernet" else "dice",
                     "optimizer": "AdamW", "data": "random tensors (model throughput, no data loading)"},
        "results": results,
    }
    path = result_path(args.out, device_name, report["date"])
    fileio.write_json(path, report)
    for row in results:
        print(f"{row['encoder']:>14s}: train {row['train_images_per_s']:8.2f} img/s, eval "
              f"{row['eval_images_per_s']:8.2f} img/s, {row['train_gflop_per_image']:.2f} GFLOP/img train, "
              f"peak {row['peak_memory_mb']:.0f} MB")
    print(f"-> {path}")
    return path


if __name__ == "__main__":
    main()
