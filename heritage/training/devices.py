"""Where a process runs: its rank among the launched processes, its device, and what that device allows.

Distributed data parallel starts by itself when the process was launched by ``torchrun``
(RANK/WORLD_SIZE/LOCAL_RANK) or by ``srun`` (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID) with more
than one task; only rank 0 writes files. Training, evaluation, prediction and the benchmarks choose
the device, the autocast dtype and the memory format here, so they all decide them the same way.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Mapping, NamedTuple

import torch
import torch.distributed as torch_dist

from heritage import errors
from heritage.modeling import registry


@dataclass(frozen=True)
class Distributed:
    """Where this process sits: rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Launch(NamedTuple):
    """This process's place among the processes its launcher started (none: rank 0 of 1)."""

    rank: int
    world_size: int
    local_rank: int


def launch(environ: Mapping[str, str] | None = None) -> Launch:
    """Rank, world size and local rank from the launcher's environment, without joining any process group.

    ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK; ``srun`` sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID
    (read only inside an srun step, recognised by SLURM_STEP_NUM_TASKS, so a batch shell of a many-task
    allocation does not wait for peers).
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:  # inside srun, not the batch shell
        return Launch(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return Launch(0, 1, 0)


# How long a process waits for the others at a collective before failing. Evaluation is sharded over the
# ranks, so waits are short; the longest is the work rank 0 does alone (the scale record before training
# reads every training mask, checkpoint and report writes), which NCCL's default 10 minutes may not cover.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)


def setup_distributed(device: str | None = None) -> Distributed:
    """Read the launcher's environment (:func:`launch`) and, with several processes, join the process group.

    MASTER_ADDR/MASTER_PORT must then be set (a single node defaults to 127.0.0.1:29500). NCCL on GPU,
    gloo on CPU, with an explicit timeout (:data:`PROCESS_GROUP_TIMEOUT`). ``device`` forces "cpu" or
    "cuda" (:func:`choose_device`).
    """
    env = os.environ
    rank, world, local = launch(env)
    where = choose_device(device, local)
    use_cuda = where.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local)
    if world > 1 and not torch_dist.is_initialized():
        if int(env.get("SLURM_NNODES", 1)) == 1:
            env.setdefault("MASTER_ADDR", "127.0.0.1")
            env.setdefault("MASTER_PORT", "29500")
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise errors.InputError(f"distributed launch with {world} processes needs {', '.join(missing)} "
                               "in the environment (the address and a free port of rank 0's node)")
        torch_dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                      device_id=where if use_cuda else None, timeout=PROCESS_GROUP_TIMEOUT)
    return Distributed(rank=rank, world_size=world, local_rank=local, device=where)


def sum_over_processes(state: Mapping[str, Any], dist: Distributed) -> dict[str, Any]:
    """``state`` (named count arrays: tensors, or NumPy arrays such as a :class:`heritage.modeling.counts.SummedCounts`
    state) summed over every process, on every process, each value in its own type. Counts over disjoint
    shards of a part (a distributed evaluation's images) sum to the counts of the whole part."""
    if not dist.enabled:
        return dict(state)
    summed = {}
    for name, value in state.items():
        tensor = torch.as_tensor(value).to(dist.device, copy=True)  # NCCL reduces GPU tensors only
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        summed[name] = tensor if isinstance(value, torch.Tensor) else tensor.cpu().numpy()
    return summed


def gather_from_processes(value: Any, dist: Distributed) -> list[Any]:
    """Every process's ``value`` (picklable), in rank order, on every process."""
    if not dist.enabled:
        return [value]
    gathered: list[Any] = [None] * dist.world_size
    torch_dist.all_gather_object(gathered, value)
    return gathered


def choose_device(name: str | None = "auto", index: int = 0) -> torch.device:
    """The device for ``name``: ``auto`` (or None) is CUDA (GPU ``index``) when torch sees one, else the CPU;
    ``cpu`` and ``cuda`` force it (``cuda`` without a GPU is an InputError). Training and predict both ask here."""
    if name not in (None, "auto", "cpu", "cuda"):
        raise errors.InputError(f"device {name!r}: expected auto, cpu or cuda")
    use_cuda = torch.cuda.is_available() if name in (None, "auto") else name == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise errors.InputError("device 'cuda': torch sees no CUDA device")
    return torch.device("cuda", index) if use_cuda else torch.device("cpu")


def teardown_distributed(dist: Distributed) -> None:
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting, or None for full float32.

    ``auto``: on a GPU, bf16 where its tensor cores run it natively (compute capability 8.0 and up),
    else fp16 with a GradScaler (V100, T4: torch's ``is_bf16_supported()`` counts emulation, and cuDNN
    has no bf16 convolutions there); on a CPU, bf16 where it has native bf16 instructions
    (:func:`cpu_has_native_bf16`), else float32 (emulated bf16 is slower than float32 there).
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def dtype_name(dtype: torch.dtype | None) -> str:
    """``bfloat16``, ``float16`` or ``float32`` (no autocast): how metrics.json and the benches record it."""
    return str(dtype or torch.float32).removeprefix("torch.")


# CPU flags of native bf16 arithmetic: AVX512-BF16 (dot products, conversions) and AMX-BF16 (tiles).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = "/proc/cpuinfo"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16): torch's cpuinfo when it has it,
    else the flags of ``/proc/cpuinfo``; False where neither can tell (an AVX2-only CPU, macOS, ARM)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        with contextlib.suppress(RuntimeError):  # cpuinfo could not initialise: read the flags instead
            found = capabilities()
            return any(bool(found.get(flag)) for flag in NATIVE_BF16_FLAGS)
    return bool(set(NATIVE_BF16_FLAGS) & _cpuinfo_flags())


def _cpuinfo_flags() -> set[str]:
    """The first processor's ``flags`` in :data:`CPUINFO` (empty where there is no such file)."""
    with contextlib.suppress(OSError):
        with open(CPUINFO, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    return set()


def uses_channels_last(mode: str, encoder: str, device: torch.device) -> bool:
    """``auto``: channels_last for CNN encoders, whose convolutions gain from it (cuDNN on GPU; on
    CPU oneDNN trained ConvNeXt-T 1.3x faster at 64 px, MiT-B3 only 1.1x)."""
    if mode == "auto":
        return registry.encoder_spec(encoder).family == "CNN"
    return mode == "on"


def reset_peak_memory(device: torch.device) -> bool:
    """Start :func:`peak_memory_mb` afresh: CUDA's allocator statistics, or on Linux the process's peak RSS
    (``/proc/self/clear_refs``). False where it cannot (the peak then stays the process's lifetime one)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # 5: reset the peak resident set size (Linux >= 4.0)
    except OSError:
        return False
    return True


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated since the last reset, or the process's max RSS on CPU (since
    :func:`reset_peak_memory` on Linux, else over the process's lifetime)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss / 2**20 if sys.platform == "darwin" else max_rss / 2**10  # bytes on macOS, KiB on Linux


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
