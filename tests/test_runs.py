"""heritage.training.runs: resume checkpoints written new-then-rotate, and the fallback when the newest is damaged."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from heritage import errors
from heritage.training import runs


def resume_state(epoch: int) -> dict:
    """A small state with every key engine.fit reads back."""
    state = {key: {} for key in runs.RESUME_KEYS}
    state.update(model={"weight": torch.full((4,), float(epoch))}, epoch=epoch, step=0, loss_sum=0.0, history=[],
                 config_hash="abc")
    return state


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file short, as a full disk or an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_each_write_keeps_the_previous_checkpoint(tmp_path):
    runs.save_resume_checkpoint(tmp_path, resume_state(1))
    assert not (tmp_path / runs.PREVIOUS_CHECKPOINT).exists()
    runs.save_resume_checkpoint(tmp_path, resume_state(2))
    runs.save_resume_checkpoint(tmp_path, resume_state(3))
    assert torch.load(tmp_path / runs.LAST_CHECKPOINT, weights_only=True)["epoch"] == 3
    assert torch.load(tmp_path / runs.PREVIOUS_CHECKPOINT, weights_only=True)["epoch"] == 2
    runs.save_resume_checkpoint(tmp_path, resume_state(4), rotate=False)  # overwrite the newest only
    assert torch.load(tmp_path / runs.PREVIOUS_CHECKPOINT, weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(runs.RESUME_CHECKPOINTS)  # no temporary left
    runs.remove_resume_checkpoints(tmp_path)
    assert not any(tmp_path.iterdir())


def test_resume_takes_the_newest_readable_checkpoint(tmp_path):
    messages: list[str] = []
    assert runs.load_resume_checkpoint(tmp_path, log=messages.append) is None  # nothing to resume
    runs.save_resume_checkpoint(tmp_path, resume_state(1))
    runs.save_resume_checkpoint(tmp_path, resume_state(2))
    state, path = runs.load_resume_checkpoint(tmp_path, log=messages.append)
    assert (state["epoch"], path.name, messages) == (2, runs.LAST_CHECKPOINT, [])

    truncate(tmp_path / runs.LAST_CHECKPOINT)
    state, path = runs.load_resume_checkpoint(tmp_path, log=messages.append)
    assert (state["epoch"], path.name) == (1, runs.PREVIOUS_CHECKPOINT)
    assert len(messages) == 1
    assert re.fullmatch(rf"warning: {tmp_path / runs.LAST_CHECKPOINT}: cannot read checkpoint, the file is damaged "
                        rf"or truncated \(PytorchStreamReader failed reading zip archive[^)]*\); resuming from "
                        rf"{tmp_path / runs.PREVIOUS_CHECKPOINT} \(the checkpoint before it\)", messages[0])


def test_a_kill_between_the_two_renames_resumes_from_the_previous_checkpoint(tmp_path, capsys):
    runs.save_resume_checkpoint(tmp_path, resume_state(1))
    runs.save_resume_checkpoint(tmp_path, resume_state(2))
    (tmp_path / runs.LAST_CHECKPOINT).unlink()  # the newest was renamed to .prev, the new one not yet in place
    state, path = runs.load_resume_checkpoint(tmp_path)
    assert (state["epoch"], path.name) == (1, runs.PREVIOUS_CHECKPOINT)
    assert capsys.readouterr().err == (f"warning: {tmp_path / runs.LAST_CHECKPOINT}: missing; resuming from "
                                       f"{tmp_path / runs.PREVIOUS_CHECKPOINT} (the checkpoint before it)\n")


def test_no_usable_checkpoint_names_the_files_to_delete(tmp_path):
    runs.save_resume_checkpoint(tmp_path, resume_state(1))
    truncate(tmp_path / runs.LAST_CHECKPOINT)
    last, previous = tmp_path / runs.LAST_CHECKPOINT, tmp_path / runs.PREVIOUS_CHECKPOINT
    with pytest.raises(errors.InputError, match=rf"^cannot resume the run in {tmp_path}: {last}: cannot read "
                                                rf"checkpoint, the file is damaged or truncated \(.*\)\. Delete {last} "
                                                rf"to train this run from the start \(`rm {last}`\)$"):
        runs.load_resume_checkpoint(tmp_path)

    torch.save({"model": {}, "epoch": 3}, previous)  # e.g. a best checkpoint copied into place
    last.write_bytes(b"")
    with pytest.raises(errors.InputError) as refused:
        runs.load_resume_checkpoint(tmp_path)
    assert str(refused.value) == (
        f"cannot resume the run in {tmp_path}: {last}: cannot read checkpoint, the file is damaged or truncated "
        f"(EOFError); {previous}: not a resume checkpoint (missing ['best', 'config_hash', 'history', 'loss_sum', "
        f"'optimizer', 'rng', 'scaler', 'scheduler', 'step']). Delete {last} and {previous} to train this run "
        f"from the start (`rm {last} {previous}`)")


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(errors.MissingInputError, match=r"nothing\.pt: checkpoint not found"):
        runs.load_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(errors.InputError, match=r"garbage\.pt: cannot read checkpoint, the file is damaged or "
                                                r"truncated \(Weights only load failed\)$"):
        runs.load_checkpoint(tmp_path / "garbage.pt")


def test_the_best_checkpoint_loads_with_its_config_or_names_what_is_wrong(tmp_path):
    with pytest.raises(errors.MissingInputError, match="checkpoint_best.pt: no best checkpoint"):
        runs.load_best_checkpoint(tmp_path)
    torch.save([1, 2], tmp_path / runs.BEST_CHECKPOINT)
    with pytest.raises(errors.InputError, match="not a heritage checkpoint"):
        runs.load_best_checkpoint(tmp_path)
    config = {"architecture": "unet", "encoder": "convnext_tiny", "image_size": 64}
    torch.save({"model": {"w": torch.ones(1)}, "config": config}, tmp_path / runs.BEST_CHECKPOINT)
    assert runs.load_best_checkpoint(tmp_path)["config"] == config


def test_the_run_folder_module_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, heritage.training.runs; assert 'torch' not in sys.modules, 'runs imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def copy_package(root: Path) -> Path:
    """A copy of the heritage package's sources under ``root``, its files' mtimes set to now."""
    copy = Path(shutil.copytree(runs.PACKAGE_ROOT, root / "heritage", ignore=shutil.ignore_patterns("__pycache__")))
    for path in copy.rglob("*"):
        path.touch()
    return copy


def test_the_code_hash_is_the_training_packages_content_wherever_and_whenever_they_are(tmp_path):
    installed = runs.hash_code(runs.PACKAGE_ROOT)
    assert runs.code_hash() == installed and re.fullmatch(r"[0-9a-f]{16}", installed)
    copy = copy_package(tmp_path / "checkout")  # another checkout, other mtimes, with caches and editor files
    (copy / "training" / "__pycache__").mkdir()
    (copy / "training" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    (copy / "data" / ".#ingest.py").write_text("an editor's lock file")
    assert runs.hash_code(copy) == installed

    for shown in ("report/tables.py", "pipeline/paper.py", "inference/predict.py", "configs/poc58_baseline.yaml"):
        (copy / shown).write_text((copy / shown).read_text() + "\n# shows runs, does not make them\n")
    assert runs.hash_code(copy) == installed  # report/, pipeline/: no run trains again
    for package in runs.CODE_PACKAGES:
        edited = copy / package / "__init__.py"
        before = edited.read_text()
        edited.write_text(before + "\n# changed\n")
        assert runs.hash_code(copy) != installed, package
        edited.write_text(before)
    (copy / "data" / "synthetic" / "render.py").write_text("")  # a subpackage counts too
    assert runs.hash_code(copy) != installed
    shutil.copy(runs.PACKAGE_ROOT / "data" / "synthetic" / "render.py", copy / "data" / "synthetic" / "render.py")
    assert runs.hash_code(copy) == installed
    (copy / "modeling" / "extra.py").write_text("")  # a new module, even empty
    assert runs.hash_code(copy) != installed
    (copy / "modeling" / "extra.py").rename(copy / "modeling" / "other.py")
    renamed = runs.hash_code(copy)
    assert renamed != installed
    (copy / "modeling" / "other.py").unlink()
    assert runs.hash_code(copy) == installed


def test_a_stale_run_is_retired_and_a_current_one_kept(tmp_path):
    from heritage import fileio

    fileio.write_json(tmp_path / runs.METRICS_FILE, {"config_hash": "c", "code_hash": "n3w"})
    assert runs.recorded_code_hash(tmp_path) == "n3w"
    assert runs.retire_stale(tmp_path, "n3w") is None and (tmp_path / runs.METRICS_FILE).is_file()
    assert runs.retire_stale(tmp_path, "n3w3r") == "n3w" and not (tmp_path / runs.METRICS_FILE).exists()
    assert runs.retire_stale(tmp_path, "n3w3r") is None and runs.recorded_code_hash(tmp_path) is None
    fileio.write_json(tmp_path / runs.METRICS_FILE, {"config_hash": "c"})  # made before code hashes were recorded
    assert runs.retire_stale(tmp_path, "n3w") == "not recorded"

    # an unfinished run: its resume state goes when its last start ran other code, and stays otherwise
    for name in runs.RESUME_CHECKPOINTS:
        (tmp_path / name).write_bytes(b"state")
    fileio.write_json(tmp_path / runs.ENVIRONMENT_FILE, {"code_hash": "n3w"})
    assert runs.retire_stale(tmp_path, "n3w") is None
    assert all((tmp_path / name).is_file() for name in runs.RESUME_CHECKPOINTS)
    assert runs.retire_stale(tmp_path, "n3w3r") == "n3w"
    assert not any((tmp_path / name).exists() for name in runs.RESUME_CHECKPOINTS)
    assert (tmp_path / runs.ENVIRONMENT_FILE).is_file()  # the record of that start stays
