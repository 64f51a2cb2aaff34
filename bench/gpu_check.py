"""GPU acceptance run: every GPU path of the compendium once, one JSON (``make gpu-check``).

On one H100/H200 it finishes in under 8 minutes (a time budget skips what would not fit, and says
so in the JSON) and writes ``bench/results/gpu-check-<device>-<date>.json`` with one section each:

- ``throughput``: training img/s of the flagship's encoders (ConvNeXt-T / MiT-B3 / MaxViT-T at
  96 / 32 / 48 images per batch, ``heritage/configs/poc59v2_flagship.yaml``) at 384 px, bf16,
  channels_last, eager (``bench/train_bench.py``'s model benchmark), with peak memory, FLOPs per
  image and the share of the data-sheet peak FLOP/s;
- ``loader``: the training DataLoader alone at 384 px with the full profile's augmentation, preload
  and ``num_workers``;
- ``cli_bf16``: ``python -m heritage train`` of the full profile (MiT-B3, whose flagship batch of 32
  gives several steps on the stand-in), one epoch, bf16 autocast: stopped by SIGUSR1 after its
  first step (exit 75, ``checkpoint_last.pt``), run again to resume and finish (evaluation,
  ``metrics.json``);
- ``cli_fp16``: the same epoch with ``amp=fp16`` (GradScaler);
- ``ddp``: ``torchrun --nproc-per-node 1`` of a DistributedDataParallel training step over NCCL
  (the engine itself only wraps in DDP with 2+ processes);
- ``predict``: the bf16 run's checkpoint on a 100 MP synthetic scan at native resolution
  (``--scale 1``): time and peak GPU memory;
- ``compile``: the throughput section again under ``torch.compile`` (last: compiling is what may
  not fit the budget).

Without a GPU (or with ``--dry-run``) the same steps run on the CPU at tiny sizes, in a couple of
minutes: tests/test_bench.py runs it so the script keeps working between GPU sessions. Every section
runs; only sizes shrink: 32 px (ConvNeXt-T's smallest input), batches of 1 (4 in the loader), one
encoder (ConvNeXt-T) where the GPU times three and in the CLI sections (MiT-B3 there), 12 stand-in
images, CLI epochs of 2 training samples (the fewest that leave a step to resume after the SIGUSR1
stop), bf16 autocast on CPU, gloo, torch.compile's ``eager`` backend, a 256^3 matmul probe of the
CPU's peak (a bf16 2048^3 one is a minute on a CPU without bf16 instructions), a 0.02 MP scan, and
one torch thread in every process. Sizes barely matter on such a CPU: without bf16/fp16
instructions torch runs every depthwise convolution in those dtypes channel by channel
(``slow_conv2d``, ~6,600 calls a ConvNeXt-T pass), a fixed cost per pass, so what counts is the
number of passes; and those tiny per-channel kernels lose far more to a second thread's
synchronisation on a loaded machine than they gain from it.

    python bench/gpu_check.py                 # GPU: the acceptance run
    python bench/gpu_check.py --dry-run --out /tmp/check   # CPU: every step, tiny
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_bench, predict_bench
import predict_bench  # noqa: E402
import train_bench  # noqa: E402

from heritage import config, errors, fileio  # noqa: E402
from heritage.training import devices, engine, runs
from heritage.modeling import models, tiling
from heritage.inference import damage_report, predict

ROOT = Path(__file__).resolve().parents[1]
POC = "poc59v2_flagship"
CLI_ENCODER = "mit_b3"
SECTIONS = ("throughput", "loader", "cli_bf16", "cli_fp16", "ddp", "predict", "compile")


@dataclass
class Plan:
    """Sizes of one check: the real one on a GPU, a tiny one on CPU."""

    device: str
    image_size: int
    batch_sizes: dict[str, int]  # encoder -> training batch (the flagship's full profile on GPU)
    steps: int
    warmup: int
    synthetic_images: int
    synthetic_side: int
    cli_overrides: dict[str, Any]  # with pretrained: False: no Hub here, and timings do not depend on the weights
    loader_overrides: dict[str, Any]
    predict_megapixels: float
    predict_batch: int
    backend: str
    compile_backend: str
    budget_s: float
    amp: str = "bf16"
    channels_last: str = "on"
    dry_run: bool = False
    full_batches: dict[str, int] = field(default_factory=dict)
    compile_encoders: tuple[str, ...] = ("convnext_tiny", "mit_b3", "maxvit_tiny")
    cli_encoder: str = CLI_ENCODER  # the encoder the CLI sections train (and predict runs)
    probe_size: int = 2048  # the matmul probe's side, where no data-sheet peak is known
    eval_steps: bool = True  # also time inference in the eager throughput section
    loader_epochs: int = 1
    threads: int | None = None  # torch threads in this process and its children (None: torch's default)


def gpu_plan() -> Plan:
    full = config.load_poc(POC)["profiles"]["full"]["encoders"]
    batches = {encoder: int(full[encoder]["batch_size"]) for encoder in ("convnext_tiny", "mit_b3", "maxvit_tiny")}
    return Plan(device="cuda", image_size=384, batch_sizes=batches, steps=10, warmup=3,
                synthetic_images=96, synthetic_side=512, cli_overrides={"epochs": 1, "pretrained": False},
                loader_overrides={}, loader_epochs=3, predict_megapixels=100.0, predict_batch=32,
                backend="nccl", compile_backend="inductor", budget_s=390.0, full_batches=batches)


def dry_plan() -> Plan:
    # 2 samples at batch 1: two steps, the first stopped by SIGUSR1, the second left for the resume.
    tiny = {"epochs": 1, "image_size": 32, "batch_size": 1, "num_workers": 0, "max_train_samples": 2,
            "n_prediction_panels": 1, "pretrained": False}
    # No time budget: the dry run is a test (tests/test_bench.py), every section must run. 12 images
    # are the fewest every split protocol accepts (prepare_data writes them all).
    return Plan(device="cpu", image_size=32, batch_sizes={"convnext_tiny": 1}, steps=1, warmup=0,
                synthetic_images=12, synthetic_side=64, cli_overrides=tiny,
                loader_overrides={"image_size": 32, "batch_size": 4, "num_workers": 2},
                predict_megapixels=0.02, predict_batch=16, backend="gloo", compile_backend="eager",
                budget_s=math.inf, dry_run=True, compile_encoders=("convnext_tiny",), eval_steps=False,
                cli_encoder="convnext_tiny", probe_size=256, threads=1)


# -- sections ------------------------------------------------------------------------------------------------


def throughput(plan: Plan, compile_: bool, out_of_time: Callable[[], bool]) -> list[dict[str, Any]]:
    rows = []
    peak_cache: dict[str, float] = {}
    for encoder, batch in plan.batch_sizes.items():
        if compile_ and encoder not in plan.compile_encoders:
            continue
        if out_of_time():
            rows.append({"encoder": encoder, "skipped": "time budget"})
            continue
        args = argparse.Namespace(architecture="unet", amp=plan.amp, channels_last=plan.channels_last,
                                  image_size=plan.image_size, batch_size=batch, steps=plan.steps,
                                  warmup=plan.warmup, compile=compile_, compile_backend=plan.compile_backend,
                                  skip_eval=compile_ or not plan.eval_steps)
        start = time.perf_counter()
        row = train_bench.bench_encoder(encoder, args, torch.device(plan.device))
        row["wall_s"] = time.perf_counter() - start
        if row["peak_tflop_per_s"] is None:  # CPU (or a GPU not in the table): a matmul probe's peak
            dtype = devices.autocast_dtype(plan.amp, torch.device(plan.device))
            if "probe" not in peak_cache:
                peak_cache["probe"] = train_bench.matmul_peak_tflops(torch.device(plan.device), dtype, n=plan.probe_size)
            row["peak_tflop_per_s"] = peak_cache["probe"]
            row["peak_source"] = "matmul probe"
            row["train_share_of_peak"] = row["train_tflop_per_s"] / peak_cache["probe"]
        else:
            row["peak_source"] = "data sheet"
        rows.append(row)
        if plan.device == "cuda":
            torch.cuda.empty_cache()
    return rows


def loader(plan: Plan, data_dir: Path, scratch: Path) -> dict[str, Any]:
    run = train_bench.loop_config(POC, "full", "convnext_tiny", data_dir, scratch / "loader-runs",
                                  plan.loader_overrides)
    result = train_bench.loader_images_per_s(run, epochs=plan.loader_epochs)
    return {**result, "image_size": run.image_size, "batch_size": run.batch_size,
            "augmentation": "heritage.data.datasets.train_augmentation (the full profile's)"}


def cli_command(encoder: str, data_dir: Path, runs_root: Path, overrides: dict[str, Any]) -> list[str]:
    words = [f"{key}={'null' if value is None else value}" for key, value in overrides.items()]
    return [sys.executable, "-m", "heritage", "train", "--poc", POC, "--profile", "full", "--encoder", encoder,
            "--data", str(data_dir), f"runs_root={runs_root}", *words]


def _run(command: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    return {"returncode": done.returncode, "seconds": time.perf_counter() - start,
            "stderr_tail": done.stderr[-1500:], "stdout_tail": done.stdout[-2000:]}


def run_signalled(command: list[str], pattern: bytes = rb"epoch 1:", timeout: float = 600) -> dict[str, Any]:
    """Start ``command``, send SIGUSR1 as soon as its stderr shows ``pattern`` (the first epoch's bar).

    The epoch bar appears inside the engine's signal handlers, before the first batch loads, so the
    run stops after its first step (exit 75), whatever the speed of the device.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, cwd=ROOT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        received, signalled = b"", False
        deadline = time.monotonic() + timeout
        while chunk := os.read(process.stderr.fileno(), 4096):  # b"" once the process closes stderr
            received += chunk
            if not signalled and pattern in received[-8192:]:
                process.send_signal(signal.SIGUSR1)
                signalled = True
            if time.monotonic() > deadline:
                process.kill()
        process.wait()
        stdout.seek(0)
        out = stdout.read().decode(errors="replace")
    return {"returncode": process.returncode, "seconds": time.perf_counter() - start, "signalled": signalled,
            "stderr_tail": received.decode(errors="replace")[-1500:], "stdout_tail": out[-500:]}


def run_folder(encoder: str, data_dir: Path, runs_root: Path, overrides: dict[str, Any]) -> Path:
    run = config.load_run_config(POC, "full", encoder=encoder, overrides={
        "data_dir": str(data_dir), "runs_root": str(runs_root), **overrides})
    return config.run_dir(run)


def cli_bf16(plan: Plan, data_dir: Path, scratch: Path) -> dict[str, Any]:
    runs_root = scratch / "runs-bf16"
    overrides = {**plan.cli_overrides, "amp": "bf16"}
    command = cli_command(plan.cli_encoder, data_dir, runs_root, overrides)
    folder = run_folder(plan.cli_encoder, data_dir, runs_root, overrides)
    stopped = run_signalled(command)
    checkpoint = folder / runs.LAST_CHECKPOINT
    stop_state = None
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
        stop_state = {"epoch": state["epoch"], "step": state["step"]}
    resumed = _run(command)
    metrics = _read_json(folder / runs.METRICS_FILE)
    return {
        "command": " ".join(command), "run_dir": str(folder),
        "stop": {**stopped, "checkpoint_written": stop_state is not None, "checkpoint_position": stop_state,
                 "exit_requeue": stopped["returncode"] == errors.EXIT_REQUEUE},
        "resume": {**resumed, "resumed": "resuming" in resumed["stdout_tail"] + resumed["stderr_tail"]},
        "metrics": _metrics_summary(metrics),
        "ok": bool(stopped["returncode"] == errors.EXIT_REQUEUE and stop_state is not None
                   and resumed["returncode"] == 0 and "resuming" in resumed["stdout_tail"] + resumed["stderr_tail"]
                   and metrics is not None),
    }


def cli_fp16(plan: Plan, data_dir: Path, scratch: Path) -> dict[str, Any]:
    runs_root = scratch / "runs-fp16"
    overrides = {**plan.cli_overrides, "amp": "fp16"}
    command = cli_command(plan.cli_encoder, data_dir, runs_root, overrides)
    done = _run(command)
    metrics = _read_json(run_folder(plan.cli_encoder, data_dir, runs_root, overrides) / runs.METRICS_FILE)
    return {"command": " ".join(command), **done, "metrics": _metrics_summary(metrics),
            "ok": done["returncode"] == 0 and metrics is not None}


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _metrics_summary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {"test_miou": metrics["test"]["miou"], "all_clean_miou": metrics["test"]["all_clean_miou"],
            "throughput": metrics["throughput"], "peak_memory_mb": metrics["peak_memory_mb"],
            "wall_time_s": metrics["wall_time_s"], "device": metrics["device"], "batch_size": metrics["batch_size"],
            "image_size": metrics["image_size"]}


def ddp(plan: Plan, scratch: Path) -> dict[str, Any]:
    out = scratch / "ddp.json"
    encoder = "convnext_tiny"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               str(Path(__file__).resolve()), "--ddp-worker", str(out), "--backend", plan.backend,
               "--image-size", str(plan.image_size), "--batch-size", str(plan.batch_sizes[encoder]),
               "--amp", plan.amp, "--steps", str(plan.steps), "--warmup", str(plan.warmup)]
    done = _run(command)
    worker = _read_json(out)
    return {"command": " ".join(command), **done, "worker": worker,
            "ok": done["returncode"] == 0 and worker is not None}


def ddp_worker(args: argparse.Namespace) -> int:
    """Under torchrun: a DDP-wrapped UNet trains ``--steps`` steps over ``--backend``, rank 0 reports."""
    import torch.distributed as torch_dist
    from torch.nn.parallel import DistributedDataParallel

    from heritage.modeling import losses
    from heritage.data import taxonomy

    local = int(os.environ["LOCAL_RANK"])
    use_cuda = args.backend == "nccl"
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch_dist.init_process_group(args.backend, device_id=device if use_cuda else None)
    try:
        torch.manual_seed(0)
        model = models.build_model("unet", "convnext_tiny", image_size=args.image_size).to(
            device, memory_format=torch.channels_last)
        net = DistributedDataParallel(model, device_ids=[local] if use_cuda else None)
        optimizer = engine.build_optimizer(net.parameters(), 1e-4, 1e-4, device)
        loss_fn = losses.build_loss("dice").to(device)
        dtype = devices.autocast_dtype(args.amp, device)
        images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).contiguous(
            memory_format=torch.channels_last)
        masks = torch.randint(0, taxonomy.NUM_CLASSES, (args.batch_size, args.image_size, args.image_size),
                              device=device)
        losses_seen = []

        def step() -> None:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(net(images), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP's gradient all-reduce runs here
            optimizer.step()
            losses_seen.append(loss.detach())

        seconds = train_bench.timed(step, args.steps, args.warmup, device)
        total = torch.stack(losses_seen).sum()
        torch_dist.all_reduce(total)
        if torch_dist.get_rank() == 0:
            fileio.write_json(Path(args.ddp_worker), {
                "backend": torch_dist.get_backend(), "world_size": torch_dist.get_world_size(),
                "device": runs.device_name(device), "images_per_s": args.batch_size / seconds,
                "loss_sum": float(total), "finite": bool(torch.isfinite(total)),
                "peak_memory_mb": devices.peak_memory_mb(device)})
    finally:
        torch_dist.destroy_process_group()
    return 0


def predict_section(plan: Plan, run_dir: str | None, scratch: Path) -> dict[str, Any]:
    if not run_dir or not (Path(run_dir) / runs.BEST_CHECKPOINT).exists():
        raise RuntimeError("no trained run to predict with: the cli_bf16 section did not finish")
    device = torch.device(plan.device)
    model, run_config = predict.load_model(run_dir, device)
    start = time.perf_counter()
    scan = predict_bench.synthetic_scan(plan.predict_megapixels)
    make_s = time.perf_counter() - start
    options = tiling.SlidingWindow(tile=int(run_config["image_size"]), batch_size=plan.predict_batch,
                                   dtype=predict.run_dtype(run_config, device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    devices.synchronize(device)
    start = time.perf_counter()
    labels = predict.predict_scan(model, scan, options, device, scale=1.0, progress=False)
    devices.synchronize(device)
    predict_s = time.perf_counter() - start
    start = time.perf_counter()
    damage_report.write_outputs(scan_dir := scratch / "predict" / "scan", "scan", "synthetic", scan, labels)
    write_s = time.perf_counter() - start
    return {"megapixels": scan.height * scan.width / 1e6, "height": scan.height, "width": scan.width,
            "tile": options.tile, "batch": options.batch_size, "scale": 1.0, "encoder": run_config["encoder"],
            "make_scan_s": make_s, "predict_s": predict_s, "write_outputs_s": write_s,
            "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            "peak_process_rss_mb": devices.peak_memory_mb(torch.device("cpu")),
            "outputs": sorted(p.name for p in scan_dir.iterdir())}


# -- the run -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny CPU sizes (the default without a GPU)")
    parser.add_argument("--out", type=Path, default=train_bench.RESULTS_DIR)
    parser.add_argument("--budget-s", type=float, default=None, help="skip sections that start after this")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    # the DDP worker's own options (torchrun runs this file again with --ddp-worker)
    parser.add_argument("--ddp-worker", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="nccl", help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=384, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--amp", default="bf16", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args)

    if args.dry_run:  # the CLI and torchrun children too must stay on the CPU, even on a GPU machine
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    plan = dry_plan() if args.dry_run or not torch.cuda.is_available() else gpu_plan()
    if args.budget_s is not None:
        plan.budget_s = args.budget_s
    if plan.threads is not None:  # the CLI and torchrun children read these when they start torch
        torch.set_num_threads(plan.threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(plan.threads)
    device = torch.device(plan.device)
    began = time.perf_counter()

    def out_of_time() -> bool:
        return time.perf_counter() - began > plan.budget_s

    record: dict[str, Any] = {
        "device": runs.device_name(device), "date": date.today().isoformat(), "hostname": platform.node(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "dry_run": plan.dry_run,
        "torch_threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg(),
        "plan": {**asdict(plan), "budget_s": None if math.isinf(plan.budget_s) else plan.budget_s}, "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch_name:
        scratch = Path(scratch_name)
        start = time.perf_counter()
        data_dir = train_bench.synthetic_data(scratch / "stand-in", plan.synthetic_images, plan.synthetic_side)
        record["data"] = {"synthetic_images": plan.synthetic_images, "longest_side": plan.synthetic_side,
                          "seconds": time.perf_counter() - start}
        steps: dict[str, Callable[[], Any]] = {
            "throughput": lambda: throughput(plan, False, out_of_time),
            "loader": lambda: loader(plan, data_dir, scratch),
            "cli_bf16": lambda: cli_bf16(plan, data_dir, scratch),
            "cli_fp16": lambda: cli_fp16(plan, data_dir, scratch),
            "ddp": lambda: ddp(plan, scratch),
            "predict": lambda: predict_section(plan, record["sections"].get("cli_bf16", {}).get("result", {}).get("run_dir"), scratch),
            "compile": lambda: throughput(plan, True, out_of_time),
        }
        for name in SECTIONS:
            if name not in args.sections:
                continue
            if out_of_time():
                record["sections"][name] = {"skipped": "time budget"}
                continue
            start = time.perf_counter()
            try:
                result = steps[name]()
            except Exception as err:  # one broken step must not hide the others' results
                result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
            record["sections"][name] = {**({"result": result} if not isinstance(result, dict) or "error" not in result
                                           else result), "seconds": time.perf_counter() - start}
            print(f"gpu-check: {name} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    record["wall_s"] = time.perf_counter() - began
    record["load_average_at_end"] = os.getloadavg()  # 1, 5, 15 min: how shared the machine was
    # CPU seconds of this process and its children: on a shared machine, what wall_s would be alone
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    record["cpu_s"] = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    record["failed"] = [name for name, value in record["sections"].items() if _failed(value)]
    prefix = "gpu-check-dry-" if plan.dry_run else "gpu-check-"
    path = train_bench.result_path(args.out, record["device"], record["date"], prefix=prefix)
    fileio.write_json(path, record)
    print(f"-> {path} ({record['wall_s']:.0f} s; failed: {', '.join(record['failed']) or 'none'})")
    return 1 if record["failed"] else 0


def _failed(section: dict[str, Any]) -> bool:
    """A section failed when it raised or a check inside it came out false."""
    if "error" in section:
        return True
    result = section.get("result")
    if isinstance(result, dict):
        return result.get("ok") is False or "error" in result
    if isinstance(result, list):
        return any("error" in row for row in result)
    return False


if __name__ == "__main__":
    sys.exit(main())
