"""Reproducibility: the seeds, the kernels a run uses (deterministic or fast), and the RNG states a
resume checkpoint carries.

On CPU a resumed run ends with the same numbers as an uninterrupted one because these states come
back with it; the deterministic mode is the one CPU training runs under. On a GPU runs are not
bit-reproducible anyway (atomics in cuDNN's backward), so they use the fast kernels instead:
cuDNN's autotuner and TF32 for float32 matmuls and convolutions (:func:`kernel_mode`).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic kernels while training (CPU); the previous settings are restored afterwards.

    Without filling new tensors with NaN (``torch.utils.deterministic.fill_uninitialized_memory``,
    on by default with deterministic algorithms): the fill only shows kernels that read memory they
    never wrote, and it was 13 % of a profiled CPU training step (``aten::fill_`` behind every ``empty``).
    """
    previous, previous_warn = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


@dataclass(frozen=True)
class KernelMode:
    """Which kernels a run uses: deterministic ones, or the fastest (cuDNN autotuning, TF32)."""

    deterministic: bool
    cudnn_benchmark: bool
    tf32_matmul: bool
    tf32_conv: bool

    def record(self) -> dict[str, bool]:
        """metrics.json's ``kernels``."""
        return asdict(self)


def kernel_mode(device: torch.device) -> KernelMode:
    """Deterministic on CPU (same seed, same metrics); fast on a GPU: cuDNN picks the fastest
    convolution per shape (``cudnn.benchmark``) and float32 matmuls/convolutions run in TF32."""
    fast = device.type == "cuda"
    return KernelMode(deterministic=not fast, cudnn_benchmark=fast, tf32_matmul=fast, tf32_conv=fast)


@contextlib.contextmanager
def kernels(mode: KernelMode) -> Iterator[KernelMode]:
    """Run under ``mode``; the previous settings come back afterwards (nothing global outlives a run)."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    previous = (torch.backends.cudnn.benchmark, matmul.fp32_precision, conv.fp32_precision)
    torch.backends.cudnn.benchmark = mode.cudnn_benchmark
    matmul.fp32_precision = "tf32" if mode.tf32_matmul else "ieee"
    conv.fp32_precision = "tf32" if mode.tf32_conv else "ieee"
    try:
        with deterministic_algorithms(mode.deterministic):
            yield mode
    finally:
        torch.backends.cudnn.benchmark, matmul.fp32_precision, conv.fp32_precision = previous


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states as tensors and plain containers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_value = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss_value))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
