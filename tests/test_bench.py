"""The engine's fast CPU step (fused AdamW, no NaN fill) and bench/gpu_check.py's CPU dry run."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from heritage import engine

ROOT = Path(__file__).resolve().parents[1]


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
    with engine.deterministic_algorithms(True):
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
    assert record["dry_run"] and record["failed"] == []
    assert list(sections) == ["throughput", "loader", "cli_bf16", "cli_fp16", "ddp", "predict", "compile"]
    assert all("skipped" not in value and "error" not in value for value in sections.values()), sections

    eager = {row["encoder"]: row for row in sections["throughput"]["result"]}
    assert set(eager) == {"convnext_tiny", "mit_b3", "maxvit_tiny"}
    assert all(row["train_images_per_s"] > 0 and 0 < row["train_share_of_peak"] for row in eager.values())
    assert [row["compile"] for row in sections["compile"]["result"]] == [True]
    assert sections["loader"]["result"]["images_per_s"] > 0 and sections["loader"]["result"]["num_workers"] == 2

    bf16 = sections["cli_bf16"]["result"]
    assert bf16["stop"]["returncode"] == 75 and bf16["stop"]["checkpoint_position"] == {"epoch": 0, "step": 1}
    assert bf16["resume"]["returncode"] == 0 and bf16["resume"]["resumed"]
    assert bf16["metrics"]["test_miou"] >= 0
    assert sections["cli_fp16"]["result"]["ok"] and sections["cli_fp16"]["result"]["metrics"] is not None
    worker = sections["ddp"]["result"]["worker"]
    assert (worker["backend"], worker["world_size"], worker["finite"]) == ("gloo", 1, True)
    scan = sections["predict"]["result"]
    assert scan["megapixels"] == pytest.approx(0.1, rel=0.01) and "mask.png" in scan["outputs"]
