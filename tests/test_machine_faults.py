"""Faults of the machine, not of the input: a full disk, a read-only file system, data removed while a
command runs, foreign encodings, two commands on one folder, kill -9 in the middle of a notebook.

Each fault is built twice where the machine allows it:

- ``tmpfs``: a real file system of a few MB (``mount -t tmpfs -o size=...``), filled by a file that takes
  its free space, or remounted read-only. Mounting needs root and a kernel that allows it (CI's machine
  does); where it fails these cases are skipped.
- ``injected``: :class:`FaultyFiles`, a documented stand-in that always runs: while active it makes every
  write below one folder fail the way the kernel would, with ``OSError(ENOSPC)`` on the first byte written
  (disk full) or ``OSError(EROFS)`` on opening for writing, creating, renaming or removing (read-only). It
  patches ``builtins.open``/``io.open`` (what pathlib, PIL, pandas, numpy and ``torch.save`` into an
  open file use) and ``os.open``/``os.mkdir``/``os.replace``/``os.rename``/``os.unlink`` (tempfile,
  pathlib); a library that writes through its own C code (``torch.save`` given a path name) is not seen,
  which is why heritage saves checkpoints into a Python file object.

Trainings here use a two-layer network in place of the encoders (``tiny_models``): the faults are of the
run folder and the data folder, not of the model. The cases that train or start Jupyter kernels are
marked slow (``make test`` runs them, ``make test-fast`` does not).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import make_row, write_rows
from heritage import cli, config, errors, fileio
from heritage.data import datafolder, decoding, ingest, taxonomy
from heritage.inference import predict
from heritage.modeling import losses, tiling
from heritage.pipeline import execution, jobs
from heritage.training import devices, engine, runs

SMOKE_POC = "poc58_baseline"
# A run of seconds: 8 training images of 32 px, the two-layer network, no prediction panels.
TINY_RUN = ("epochs=3", "image_size=32", "batch_size=4", "base_batch_size=4", "max_train_samples=8",
            "preload=false", "n_prediction_panels=0", "timing_skip_steps=0", "checkpoint_every=1")


# -- building the faults -----------------------------------------------------------------------------


class FaultyFiles:
    """Writes below ``root`` fail as on a full (``ENOSPC``) or read-only (``EROFS``) file system while a
    fault is set (:meth:`fill`, :meth:`make_read_only`); :meth:`clear` ends it. See the module's docstring."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = Path(os.path.abspath(root))
        self.fault: int | None = None
        real_open, real_os_open = builtins.open, os.open

        def faulty_open(file, mode="r", *args, **kwargs):
            if self._hits(file) and any(c in mode for c in "wax+"):
                if self.fault == errno.EROFS:
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
                return _FullFile(real_open(file, mode, *args, **kwargs), str(file))
            return real_open(file, mode, *args, **kwargs)

        def faulty_os_open(path, flags, *args, **kwargs):
            writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
            if self.fault == errno.EROFS and writing and self._hits(path):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", faulty_open)
        monkeypatch.setattr(io, "open", faulty_open)
        monkeypatch.setattr(os, "open", faulty_os_open)
        for name in ("mkdir", "replace", "rename", "unlink", "rmdir"):
            monkeypatch.setattr(os, name, self._read_only_guard(getattr(os, name)))

    def _hits(self, path: object) -> bool:
        if self.fault is None or isinstance(path, int):
            return False
        return Path(os.path.abspath(os.fsdecode(path))).is_relative_to(self.root)

    def _read_only_guard(self, real):
        def guarded(path, *args, **kwargs):
            if self.fault == errno.EROFS and self._hits(path):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real(path, *args, **kwargs)
        return guarded

    def fill(self) -> None:
        self.fault = errno.ENOSPC

    def make_read_only(self) -> None:
        self.fault = errno.EROFS

    def clear(self) -> None:
        self.fault = None


class _FullFile:
    """A file object whose writes fail with ENOSPC: a disk with no block left."""

    def __init__(self, real, name: str) -> None:
        self._real, self._name = real, name

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._name)

    def writelines(self, lines):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._name)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()

    def __iter__(self):
        return iter(self._real)


_MOUNTABLE: list[bool] = []


def can_mount() -> bool:
    """Whether this machine lets the tests mount a tmpfs (root, and a kernel/container that allows it)."""
    if not _MOUNTABLE:
        probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"heritage-mount-probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        try:
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                                     capture_output=True).returncode == 0
        except OSError:
            mounted = False
        if mounted:
            subprocess.run(["umount", str(probe)], check=True)
        probe.rmdir()
        _MOUNTABLE.append(mounted)
    return _MOUNTABLE[0]


class SmallDisk:
    """A folder on a small real tmpfs (``size``), made full or read-only on demand."""

    def __init__(self, root: Path, size: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True)
        self.filler = root / "filler"

    def fill(self) -> None:
        """Take every free block (a file written until ENOSPC): the disk is full."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for block in (b"\0" * 65536, b"\0" * 4096, b"\0"):  # the last bytes of the last page too
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, block)
        finally:
            os.close(fd)

    def make_read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.root)], check=True)

    def clear(self) -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(self.root)], check=True)
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.root)], check=False)


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request, tmp_path, monkeypatch):
    """A folder whose file system a test can fill or make read-only: a real tmpfs of 8 MB, or FaultyFiles."""
    root = tmp_path / "disk"
    if request.param == "injected":
        root.mkdir()
        yield FaultyFiles(root, monkeypatch)
        return
    if not can_mount():
        pytest.skip("this machine does not allow mounting a tmpfs; the injected variant covers the case")
    small = SmallDisk(root, "8m")
    try:
        yield small
    finally:
        small.unmount()


class TinyNet(nn.Module):
    """Two convolutions: a model of a few KB in place of the encoders, whatever the config names."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, taxonomy.NUM_CLASSES, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


@pytest.fixture
def tiny_models(monkeypatch):
    from heritage.modeling import models

    monkeypatch.setattr(models, "build_model", lambda *args, **kwargs: TinyNet())


def assert_one_line(code: int, stderr: str, command: str, expected_code: int, *fragments: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.split("\n") if line.strip() and "\r" not in line
             and not line.startswith(f"heritage {command}: warning:")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"heritage {command}: "), lines[0]
    assert code == expected_code, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def train_args(data: Path, runs_root: Path, *extra: str) -> list[str]:
    return ["train", "--poc", SMOKE_POC, "--data", str(data), f"runs_root={runs_root}", *TINY_RUN, *extra]


def run_folder(data: Path, runs_root: Path) -> Path:
    return config.run_dir(config.load_run_config(SMOKE_POC, "smoke", overrides={
        "data_dir": str(data), "runs_root": str(runs_root)}))


REAL_WRITE_HISTORY = runs.write_history


def after_history_write(monkeypatch, epoch: int, action) -> None:
    """Run ``action`` right after ``history.csv`` is written for ``epoch`` (1-based): before that epoch's
    checkpoints, in the middle of a run."""
    def write_history(folder, rows):
        REAL_WRITE_HISTORY(folder, rows)
        if len(rows) == epoch:
            action()

    monkeypatch.setattr(runs, "write_history", write_history)


# -- a full disk ----------------------------------------------------------------------------------


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_file_and_the_free_space(disk):
    folder = disk.root / "run"
    folder.mkdir()
    first = {"weights": torch.arange(1000.0), "epoch": 1}
    runs.save_resume_checkpoint(folder, first)
    runs.save_checkpoint(folder / runs.BEST_CHECKPOINT, first)
    before = {name: (folder / name).read_bytes() for name in (runs.LAST_CHECKPOINT, runs.BEST_CHECKPOINT)}
    disk.fill()
    second = {"weights": torch.zeros(300_000), "epoch": 2}
    with pytest.raises(errors.MachineError, match=r"checkpoint_last\.pt: disk full \(.*free of .* on "):
        runs.save_resume_checkpoint(folder, second)
    with pytest.raises(errors.MachineError, match=r"checkpoint_best\.pt: disk full"):
        runs.save_checkpoint(folder / runs.BEST_CHECKPOINT, second)
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in folder.iterdir() if p.name != "filler") == sorted(before)  # no temporary left
    disk.clear()
    runs.save_resume_checkpoint(folder, second)
    assert runs.load_checkpoint(folder / runs.LAST_CHECKPOINT)["epoch"] == 2
    assert runs.load_checkpoint(folder / runs.PREVIOUS_CHECKPOINT)["epoch"] == 1


@pytest.mark.slow  # trainings or Jupyter kernels: make test runs it, test-fast does not
def test_train_on_a_disk_that_fills_up_stops_in_one_line_and_resumes(disk, copy_data_dir, tmp_path, monkeypatch,
                                                                     capfd, tiny_models):
    data, runs_root = copy_data_dir(), disk.root / "runs"
    after_history_write(monkeypatch, 2, disk.fill)  # the disk fills during epoch 2, before its checkpoints
    code = cli.main(train_args(data, runs_root))
    folder = run_folder(data, runs_root)
    line = assert_one_line(code, capfd.readouterr().err, "train", errors.EXIT_MACHINE, "disk full",
                           "free of", f"resumes from {folder / runs.LAST_CHECKPOINT}")
    assert "checkpoint_best.pt" in line or "checkpoint_last.pt" in line
    disk.clear()
    assert runs.load_checkpoint(folder / runs.LAST_CHECKPOINT)["epoch"] == 1  # epoch 1's state, intact
    monkeypatch.setattr(runs, "write_history", REAL_WRITE_HISTORY)
    assert cli.main(train_args(data, runs_root)) == 0
    assert f"resuming {folder} at epoch 2" in "".join(capfd.readouterr())
    assert len(pd.read_csv(folder / runs.HISTORY_FILE)) == 3
    resumed = fileio.read_json(folder / runs.METRICS_FILE)
    assert cli.main(train_args(data, tmp_path / "uninterrupted")) == 0  # the same run, never interrupted
    uninterrupted = fileio.read_json(run_folder(data, tmp_path / "uninterrupted") / runs.METRICS_FILE)
    assert resumed["test"]["miou"] == uninterrupted["test"]["miou"] and resumed["val"] == uninterrupted["val"]


def test_ingest_on_a_disk_that_fills_up_keeps_the_rows_written_and_resumes(disk, tmp_path, monkeypatch):
    rows = [make_row(f"s{i}", size=(64, 48), seed=i) for i in range(6)]
    source = write_rows(tmp_path / "src" / "x.parquet", rows).parent
    out = disk.root / "data"
    real = ingest.Staging.write

    def write(self, *args, **kwargs):
        if self.converted == 3:
            disk.fill()  # the fourth row meets a full disk
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ingest.Staging, "write", write)
    with pytest.raises(errors.MachineError, match=r"disk full .*free of.* the 3 row\(s\) converted before it are kept"):
        ingest.ingest(source, out, longest_side=None)
    disk.clear()
    monkeypatch.setattr(ingest.Staging, "write", real)
    decoded = []
    real_decode = decoding.decode_sample
    monkeypatch.setattr(decoding, "decode_sample", lambda sample, **kw: decoded.append(sample.id) or
                        real_decode(sample, **kw))
    with pytest.warns(ingest.ResumeNote, match="left 3 converted row"):
        ingest.ingest(source, out, longest_side=None)
    assert decoded == ["s3", "s4", "s5"]  # rows 0-2 were reused, not decoded again
    uninterrupted = tmp_path / "uninterrupted"
    ingest.ingest(source, uninterrupted, longest_side=None)
    assert snapshot(out) == snapshot(uninterrupted)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "filler"}


# -- a read-only file system --------------------------------------------------------------------------


def test_a_read_only_output_is_one_line_with_exit_74(disk, tmp_path, copy_data_dir, capfd, monkeypatch):
    source = write_rows(tmp_path / "src" / "x.parquet", [make_row("s0")]).parent
    (disk.root / "existing").mkdir()
    disk.make_read_only()
    for out in (disk.root / "existing", disk.root / "new" / "data"):
        code = cli.main(["data", "ingest", "--source", str(source), "--out", str(out)])
        assert_one_line(code, capfd.readouterr().err, "data ingest", errors.EXIT_MACHINE, str(disk.root),
                        "read-only file system")
    data = copy_data_dir()
    code = cli.main(train_args(data, disk.root / "runs"))
    assert_one_line(code, capfd.readouterr().err, "train", errors.EXIT_MACHINE, "read-only file system")
    disk.clear()
    assert not (disk.root / "new").exists() and not list((disk.root / "existing").iterdir())
    # writable again: the same command completes as if nothing had happened
    assert cli.main(["data", "ingest", "--source", str(source), "--out", str(disk.root / "existing")]) == 0
    ingest.ingest(source, tmp_path / "uninterrupted")
    assert snapshot(disk.root / "existing") == snapshot(tmp_path / "uninterrupted")


def test_a_fault_of_the_machine_met_inside_a_library_is_one_line_with_exit_74(corpus_dir, capfd, monkeypatch):
    from heritage.data import stats

    def full(args):  # a library's own write (matplotlib, papermill) on a full disk
        raise OSError(errno.ENOSPC, "No space left on device", str(corpus_dir / "figure.png"))

    monkeypatch.setattr(stats, "main", full)
    code = cli.main(["data", "stats", "--data", str(corpus_dir)])
    assert_one_line(code, capfd.readouterr().err, "data stats", errors.EXIT_MACHINE, "figure.png: disk full",
                    "free of")


@pytest.fixture
def corpus_dir(tmp_path):
    return tmp_path


# -- the data folder removed while train runs; leftovers of a killed run ------------------------------


@pytest.mark.slow  # trainings or Jupyter kernels: make test runs it, test-fast does not
def test_the_data_folder_removed_during_training_is_one_line_and_the_run_resumes(data_dir, copy_data_dir,
                                                                                 tmp_path, monkeypatch, capfd,
                                                                                 tiny_models):
    data, runs_root = copy_data_dir(), tmp_path / "runs"
    after_history_write(monkeypatch, 1, lambda: shutil.rmtree(data))
    code = cli.main(train_args(data, runs_root))
    folder = run_folder(data_dir, runs_root)  # the hash is the data's content: the same for the restored copy
    assert_one_line(code, capfd.readouterr().err, "train", errors.EXIT_MACHINE,
                    f"data_dir {data} disappeared while the run was using it",
                    f"resumes from {folder / runs.LAST_CHECKPOINT}")
    monkeypatch.setattr(runs, "write_history", REAL_WRITE_HISTORY)
    shutil.copytree(data_dir, data)  # restored
    # what a kill -9 of the run left: temporaries of dead writers in the run folder and predictions/
    dead = dead_pid()
    leftovers = [folder / f".metrics.json.{dead}@{fileio.HOST}.abcd1234.tmp",
                 folder / runs.PREDICTIONS_DIR / f".s0.png.{dead}@{fileio.HOST}.efgh5678.tmp"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    assert cli.main(train_args(data, runs_root)) == 0
    assert "removed" in capfd.readouterr().err
    assert not any(path.exists() for path in leftovers)
    resumed = fileio.read_json(folder / runs.METRICS_FILE)
    assert cli.main(train_args(data, tmp_path / "uninterrupted")) == 0
    uninterrupted = fileio.read_json(run_folder(data, tmp_path / "uninterrupted") / runs.METRICS_FILE)
    assert resumed["test"]["miou"] == uninterrupted["test"]["miou"]
    assert resumed["val"] == uninterrupted["val"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- a loss that becomes NaN, absurd settings, options and overrides in any order -----------------------


def test_a_loss_that_becomes_nan_stops_the_run_naming_epoch_step_and_setting(data_dir, tmp_path):
    from heritage.config import load_run_config
    from heritage.data import datasets as data, splits, working

    config_ = load_run_config(SMOKE_POC, "smoke", overrides={
        "data_dir": str(data_dir), "runs_root": str(tmp_path), "image_size": 32, "epochs": 2, "batch_size": 4,
        "base_batch_size": 4, "max_train_samples": None})
    train_ids, val_ids, _ = splits.fold_ids(splits.load_manifest(data_dir, "holdout"), "holdout")
    class NanOnThirdStep(nn.Module):  # the weights went NaN at the third step
        def __init__(self) -> None:
            super().__init__()
            self.dice, self.calls = losses.build_loss("dice"), 0

        def forward(self, outputs, target):
            self.calls += 1
            value = self.dice(outputs, target)
            return value * float("nan") if self.calls == 3 else value

    loss = NanOnThirdStep()

    folder = runs.prepare(config_)
    with pytest.raises(engine.Diverged, match=r"NaN or infinite at epoch 1, step 3 of 3: .*lr=0\.002"):
        engine.fit(config_, TinyNet(), loss, data.SegmentationDataset(data_dir, train_ids[:12], 32, train=True),
                   working.EvaluationSet(data_dir, val_ids, 32, 32, "letterbox", cache_dir=tmp_path / "cache",
                                         progress=False), devices.Distributed(), progress=False)
    assert not (folder / runs.METRICS_FILE).exists() and not (folder / runs.BEST_CHECKPOINT).exists()


@pytest.mark.parametrize("override, fragment", [
    ("lr=1e9", "lr: 1000000000.0 is above 1"), ("base_lr=5", "base_lr: 5.0 is above 1"),
    ("weight_decay=2000", "lr x weight_decay = 4 >= 1"), ("seed=99999999999999999999", "seed: "),
])
def test_absurd_settings_are_refused_in_one_line(override, fragment, data_dir, tmp_path, capfd):
    code = cli.main(["train", "--poc", SMOKE_POC, "--data", str(data_dir), f"runs_root={tmp_path}", override])
    assert_one_line(code, capfd.readouterr().err, "train", errors.EXIT_BAD_INPUT, fragment)
    assert not list(tmp_path.iterdir())


def test_unusual_settings_are_warned_about():
    usual = config.load_run_config(SMOKE_POC, "smoke")
    assert usual.implausible() == []
    odd = config.load_run_config(SMOKE_POC, "smoke", overrides={"lr": 0.5, "epochs": 5000, "image_size": 4096})
    assert [message.split("=")[0] for message in odd.implausible()] == ["lr", "epochs", "image_size"]


def test_overrides_may_follow_options_and_other_arguments_are_one_line(capfd):
    code = cli.main(["train", "epochs=1", "--poc", SMOKE_POC, "--encoder", "swin_tiny", "image_size=65"])
    assert_one_line(code, capfd.readouterr().err, "train", errors.EXIT_BAD_INPUT,
                    "image_size: 65 does not suit encoder 'swin_tiny'")
    code = cli.main(["train", "--poc", SMOKE_POC, "--epochs", "3"])
    assert_one_line(code, capfd.readouterr().err, "train", errors.EXIT_BAD_INPUT, "unrecognized argument(s) --epochs")


# -- two commands on one folder -------------------------------------------------------------------------


HOLD = """
import sys, time
from heritage import locks
with locks.hold(sys.argv[1], "heritage train"):
    print("held", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def held_by_another_process(folder: Path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_second_train_on_a_held_run_folder_is_refused_at_once_naming_the_holder(data_dir, tmp_path, capfd):
    from heritage import locks

    folder = run_folder(data_dir, tmp_path)
    with held_by_another_process(folder) as holder:
        code = cli.main(train_args(data_dir, tmp_path))
        assert_one_line(code, capfd.readouterr().err, "train", errors.EXIT_BAD_INPUT,
                        f"{folder}: in use by heritage train (pid {holder.pid} on {socket.gethostname()}")
        assert sorted(p.name for p in folder.iterdir()) == [locks.LOCK_FILE]  # nothing of the refused run
        code = cli.main(["data", "ingest", "--source", str(data_dir), "--out", str(folder)])
        assert_one_line(code, capfd.readouterr().err, "data ingest", errors.EXIT_BAD_INPUT, "in use by")
    # killed (kill -9): its lock file stays, and the next command takes it over with a warning
    assert (folder / locks.LOCK_FILE).is_file()
    said = []
    with locks.hold(folder, "heritage train", warn=said.append):
        pass
    assert said and f"pid {holder.pid}" in said[0] and "no longer running" in said[0]
    assert not (folder / locks.LOCK_FILE).exists()


def test_a_second_paper_on_the_same_paper_folder_is_refused_before_it_prepares_anything(tmp_path, capfd):
    paper_dir = tmp_path / "paper"
    with held_by_another_process(paper_dir) as holder:
        code = cli.main(["paper", "--paper-dir", str(paper_dir), "--data-dir", str(tmp_path / "data"),
                         "--runs-root", str(tmp_path / "runs")])
        assert_one_line(code, capfd.readouterr().err, "paper", errors.EXIT_BAD_INPUT, f"pid {holder.pid}")
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_augment_and_split_on_a_data_folder_another_command_holds_are_refused_and_write_nothing(copy_data_dir,
                                                                                                 capfd):
    from heritage import locks

    data = copy_data_dir()
    before = snapshot(data)
    with held_by_another_process(data) as holder:
        for command in (["data", "augment", "--data", str(data)],
                        ["data", "split", "--data", str(data), "--protocol", "all"]):
            code = cli.main(command)
            assert_one_line(code, capfd.readouterr().err, " ".join(command[:2]), errors.EXIT_BAD_INPUT,
                            f"{data}: in use by heritage train (pid {holder.pid}")
        assert {name: content for name, content in snapshot(data).items() if name != locks.LOCK_FILE} == before


def test_a_lock_is_released_on_every_way_out_and_refused_within_one_process(tmp_path):
    from heritage import locks

    for failure in (RuntimeError("a bug"), KeyboardInterrupt()):
        with pytest.raises(type(failure)):
            with locks.hold(tmp_path, "heritage data split"):
                with pytest.raises(errors.FolderBusy, match=f"pid {os.getpid()}"):
                    with locks.hold(tmp_path, "heritage data augment"):
                        pass
                raise failure
        assert not (tmp_path / locks.LOCK_FILE).exists()


def test_without_flock_the_recorded_owner_decides(tmp_path, monkeypatch):
    import fcntl

    from heritage import locks

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with held_by_another_process(tmp_path) as holder:  # the holder locked with flock; we cannot see it
        with pytest.raises(errors.FolderBusy, match=rf"pid {holder.pid} .*no longer running, `rm "):
            with locks.hold(tmp_path, "heritage train"):
                pass
    said = []
    with locks.hold(tmp_path, "heritage train", warn=said.append):  # its owner is dead now: taken over
        assert f"pid {os.getpid()}" in (tmp_path / locks.LOCK_FILE).read_text().replace('"pid": ', "pid ")
    assert said and f"pid {holder.pid}" in said[0]


# -- ingest: resume after a bad row, --skip-bad-rows, encodings, EXIF --------------------------------


def test_ingest_after_a_bad_row_keeps_the_rows_before_it_and_a_rerun_continues(tmp_path, monkeypatch, capfd):
    rows = [make_row(f"s{i}", seed=i) for i in range(5)]
    bad = dict(rows[3], image={"bytes": b"not an image", "path": "s3.png"})
    out = tmp_path / "data"
    code = cli.main(["data", "ingest", "--source", str(write_rows(tmp_path / "bad" / "x.parquet",
                                                                     [*rows[:3], bad, rows[4]])), "--out", str(out)])
    assert_one_line(code, capfd.readouterr().err, "data ingest", errors.EXIT_BAD_INPUT, "row 3 (id 's3')",
                    f"the 3 row(s) converted before it are kept in {out / ingest.RESUME_DIR}")
    cut = datafolder.image_path(out / ingest.RESUME_DIR, "s1")  # what a crash of the node may leave: cut short
    cut.write_bytes(cut.read_bytes()[:100])
    decoded = []
    real = decoding.decode_sample
    monkeypatch.setattr(decoding, "decode_sample", lambda sample, **kw: decoded.append(sample.id) or real(sample, **kw))
    fixed = write_rows(tmp_path / "fixed" / "x.parquet", rows)
    assert cli.main(["data", "ingest", "--source", str(fixed), "--out", str(out)]) == 0
    assert decoded == ["s1", "s3", "s4"]  # s0 and s2 reused
    ingest.ingest(fixed, tmp_path / "uninterrupted")
    assert snapshot(out) == snapshot(tmp_path / "uninterrupted")


def test_skip_bad_rows_writes_the_good_ones_and_lists_the_others_with_exit_1(tmp_path, capfd):
    rows = [make_row(f"s{i}", seed=i) for i in range(5)]
    rows[1] = dict(rows[1], image={"bytes": b"junk", "path": "s1.png"})
    rows[3] = dict(rows[3], id="bad/id")
    source = write_rows(tmp_path / "src" / "x.parquet", rows)
    out = tmp_path / "data"
    code = cli.main(["data", "ingest", "--source", str(source), "--out", str(out), "--skip-bad-rows"])
    assert_one_line(code, capfd.readouterr().err, "data ingest", errors.EXIT_FAILED, "ingested 3 samples",
                    "2 row(s) rejected", str(out / ingest.REJECTED_FILE))
    assert list(datafolder.read_metadata(out)["id"]) == ["s0", "s2", "s4"]
    rejected = pd.read_csv(out / ingest.REJECTED_FILE, dtype=str)
    assert list(rejected["row"]) == ["1", "3"] and list(rejected["id"]) == ["s1", "bad/id"]
    assert "cannot read image" in rejected["error"][0] and "not usable as a file name" in rejected["error"][1]
    assert not (out / ingest.RESUME_DIR).exists()
    ingest.ingest(write_rows(tmp_path / "good" / "x.parquet", [rows[0]]), out)  # a clean ingest
    assert not (out / ingest.REJECTED_FILE).exists()


def test_a_failed_ingest_leaves_no_empty_output_folder(tmp_path, capfd):
    source = write_rows(tmp_path / "src" / "x.parquet", [dict(make_row("s0"), image={"bytes": b"junk", "path": ""})])
    code = cli.main(["data", "ingest", "--source", str(source), "--out", str(tmp_path / "new" / "data")])
    assert code == errors.EXIT_BAD_INPUT
    assert not (tmp_path / "new" / "data").exists()


def export_with_text(tmp_path: Path, material: str, encoding: str) -> Path:
    folder = tmp_path / "export"
    row = make_row("s0")
    fileio.write_bytes(datafolder.image_path(folder, "s0"), row["image"]["bytes"])
    fileio.write_bytes(datafolder.annotation_path(folder, "s0"), row["annotation"]["bytes"])
    (folder / datafolder.METADATA_FILE).write_bytes(
        f"id,material,content\ns0,{material},Line art\n".encode(encoding))
    return folder


def test_a_metadata_csv_in_excels_encoding_names_line_byte_and_the_encoding_to_pass(tmp_path, capfd):
    folder = export_with_text(tmp_path, "Pergamént", "cp1252")
    code = cli.main(["data", "ingest", "--source", str(folder), "--out", str(tmp_path / "data")])
    offset = len("id,material,content\ns0,Pergam")
    assert_one_line(code, capfd.readouterr().err, "data ingest", errors.EXIT_BAD_INPUT,
                    f"{folder / 'metadata.csv'}: line 2 (row 0), byte offset {offset}", "0xe9", "pass --encoding cp1252")
    assert cli.main(["data", "ingest", "--source", str(folder), "--out", str(tmp_path / "data"),
                     "--encoding", "cp1252"]) == 0
    capfd.readouterr()
    assert datafolder.read_metadata(tmp_path / "data")["material"][0] == "Pergamént"
    # the same in a data folder's own metadata.csv, edited in a spreadsheet
    table = (tmp_path / "data" / "metadata.csv").read_text(encoding="utf-8")
    (tmp_path / "data" / "metadata.csv").write_bytes(table.encode("cp1252"))
    code = cli.main(["data", "stats", "--data", str(tmp_path / "data")])
    assert_one_line(code, capfd.readouterr().err, "data stats", errors.EXIT_BAD_INPUT, "line 2", "save it as UTF-8")


class ConstantNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], taxonomy.NUM_CLASSES, *x.shape[2:])


def test_predict_names_a_non_utf8_file_and_writes_summary_csv_even_when_stopped(tmp_path, monkeypatch):
    scans = tmp_path / "scans"
    scans.mkdir()
    names = [b"a.png", b"caf\xe9.png", b"z.png"]
    for name in names:
        Image.fromarray(np.full((40, 40, 3), 100, np.uint8)).save(os.path.join(os.fsencode(scans), name))
    out = tmp_path / "out"
    window = tiling.SlidingWindow(tile=32)
    quiet = predict.PredictOptions(progress=False)
    assert predict.predict_inputs(ConstantNet(), 32, scans, out, window, torch.device("cpu"), quiet) == []
    summary = pd.read_csv(out / "summary.csv", dtype=str, keep_default_na=False)
    assert list(summary["source"]) == [str(scans / "a.png"), str(scans / "caf\\xe9.png"), str(scans / "z.png")]
    # stopped after the first scan (Ctrl-C): summary.csv still lists what was done
    real = predict.predict_scan
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_scan", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict.predict_inputs(ConstantNet(), 32, scans, tmp_path / "stopped", window, torch.device("cpu"), quiet)
    assert list(pd.read_csv(tmp_path / "stopped" / "summary.csv")["image"]) == ["a"]


def square_sample(orientation: int, annotation_frame: str, with_rgb: bool) -> dict:
    """A square JPEG stored turned (EXIF ``orientation``) and its annotation drawn on the ``upright`` or
    the ``stored`` pixels, with ``annotation_rgb`` (the upright labels in colours) or without."""
    upright = np.zeros((48, 48), np.uint8)
    upright[:12, :30] = 4  # a band at the top-left of the upright image: turned, it is elsewhere
    upright[30:, 40:] = 7
    transpose = decoding._TRANSPOSE[orientation]
    # the stored pixels are what turned by the EXIF orientation gives the upright image
    inverse = {Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90}.get(transpose, transpose)
    stored = np.asarray(Image.fromarray(upright).transpose(inverse))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(np.stack([stored * 20] * 3, axis=2)).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    row = make_row("s0", size=(48, 48), mask=upright if annotation_frame == "upright" else stored)
    row["image"] = {"bytes": buffer.getvalue(), "path": "s0.jpg"}
    row["annotation_rgb"] = ({"bytes": fileio.encode_png(taxonomy.mask_to_rgb(upright)), "path": "s0.png"}
                             if with_rgb else None)
    return row


def test_a_square_scan_turned_by_exif_with_a_mask_of_the_stored_pixels_is_refused_by_its_annotation_rgb(tmp_path):
    source = write_rows(tmp_path / "src" / "x.parquet", [square_sample(6, "stored", with_rgb=True)])
    with pytest.raises(errors.InputError, match=r"row 0 \(id 's0'\): the image's EXIF orientation 6 .*drawn on the "
                                                r"stored \(unrotated\) pixels"):
        ingest.ingest(source, tmp_path / "data", longest_side=None)
    source = write_rows(tmp_path / "good" / "x.parquet", [square_sample(6, "upright", with_rgb=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", decoding.OrientationWarning)  # agreeing annotation_rgb: nothing to say
        ingest.ingest(source, tmp_path / "data", longest_side=None)


@pytest.mark.parametrize("orientation", [3, 6])
def test_without_annotation_rgb_a_turned_scan_whose_sizes_cannot_tell_is_warned_per_row(orientation, tmp_path,
                                                                                        capfd):
    source = write_rows(tmp_path / "src" / "x.parquet", [square_sample(orientation, "stored", with_rgb=False)])
    assert cli.main(["data", "ingest", "--source", str(source), "--out", str(tmp_path / "data")]) == 0
    warned = [line for line in capfd.readouterr().err.splitlines() if "warning:" in line]
    assert len(warned) == 1 and f"row 0 (id 's0'): the image's EXIF orientation {orientation}" in warned[0]
    assert "check that it was drawn on the upright image" in warned[0]


def test_a_malformed_exif_block_is_warned_naming_the_row(tmp_path, capfd):
    row = make_row("s0", size=(16, 16))
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, "JPEG", exif=b"Exif\0\0II*\0\xff\xff\xff\x7fjunk")
    row["image"] = {"bytes": buffer.getvalue(), "path": "s0.jpg"}
    source = write_rows(tmp_path / "src" / "x.parquet", [row])
    assert cli.main(["data", "ingest", "--source", str(source), "--out", str(tmp_path / "data")]) == 0
    warned = [line for line in capfd.readouterr().err.splitlines() if "warning:" in line]
    assert len(warned) == 1 and "row 0 (id 's0'): image: its EXIF block cannot be read" in warned[0]


def test_another_librarys_warning_during_ingest_is_shown_once(tmp_path, monkeypatch):
    real = decoding.decode_sample

    def noisy(sample, **options):  # e.g. PIL's DecompressionBombWarning
        warnings.warn("note " + "from a library", UserWarning)
        return real(sample, **options)

    monkeypatch.setattr(decoding, "decode_sample", noisy)
    source = write_rows(tmp_path / "src" / "x.parquet", [make_row("s0")])
    with pytest.warns(UserWarning) as shown:  # what warnings.showwarning was given (stderr outside pytest)
        assert cli.main(["data", "ingest", "--source", str(source), "--out", str(tmp_path / "data")]) == 0
    assert [str(w.message) for w in shown].count("note from a library") == 1


# -- durable writes -----------------------------------------------------------------------------------


def test_files_that_mark_completion_are_flushed_to_disk_with_their_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    fileio.write_json(tmp_path / "plain.json", {})
    assert synced == []
    runs.write_metrics(tmp_path, {"test": {}})
    assert synced[-1] == str(tmp_path) and ".metrics.json." in synced[-2]
    job = jobs.NotebookJob(name="j", template=tmp_path / "t.ipynb", output=tmp_path / "o.ipynb",
                           html=tmp_path / "o.html", parameters={}, key="k")
    execution.run_job(job, lambda j: (j.output.write_text("{}"), j.html.write_text("")))
    assert synced[-1] == str(tmp_path) and ".o.stamp.json." in synced[-2]
    datafolder.write_metadata(tmp_path, pd.DataFrame([{"id": "a", "material": "Paper", "content": "Line art",
                                                       "width": 1, "height": 1, "source_id": "a",
                                                       "transform": "identity"}]))
    assert synced[-1] == str(tmp_path) and ".metadata.csv." in synced[-2]


# -- kill -9 in the middle of a notebook -----------------------------------------------------------------


PAPER = """
import sys
from heritage import fileio
from heritage.pipeline import execution, jobs, paper, schedulers
planned = [jobs.NotebookJob.from_json(fileio.read_json(path)) for path in sys.argv[1:]]
execution.ensure_kernel()
paper.run_paper(planned[:-1], planned[-1], schedulers.LocalScheduler(execution.execute_notebook))
"""


@pytest.mark.slow  # trainings or Jupyter kernels: make test runs it, test-fast does not
def test_a_paper_killed_mid_notebook_leaves_nothing_that_looks_finished_and_the_rerun_executes_the_rest(tmp_path):
    template = tmp_path / "template.ipynb"
    slow = tmp_path / "slow"
    parameters = nbformat.v4.new_code_cell("marker = ''\nslow = ''")
    parameters.metadata["tags"] = ["parameters"]
    cells = [parameters,
             nbformat.v4.new_code_cell("import os, pathlib, time\npathlib.Path(marker).write_text(str(os.getpid()))"),
             nbformat.v4.new_code_cell("while slow and pathlib.Path(slow).exists():\n    time.sleep(0.2)"),
             nbformat.v4.new_code_cell("print('finished')")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), template)
    planned = [jobs.NotebookJob(name=name, template=template, output=tmp_path / name / "executed.ipynb",
                                html=tmp_path / name / "executed.html", key="k", inputs=(template,),
                                parameters={"marker": str(tmp_path / f"{name}.started"),
                                            "slow": str(slow) if name == "second" else ""})
               for name in ("first", "second", "comparison")]
    files = [str(jobs.write_job_file(job)) for job in planned]
    first, second, comparison = planned
    slow.touch()
    run = subprocess.Popen([sys.executable, "-c", PAPER, *files], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    started = tmp_path / "second.started"
    deadline = time.time() + 240
    while not started.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.2)
    assert started.exists(), run.communicate()
    os.kill(run.pid, signal.SIGKILL)  # kill -9 in the middle of the second notebook
    run.communicate()
    assert jobs.is_up_to_date(first)
    assert not any(path.exists() for path in (second.output, second.html, second.stamp))  # nothing looks finished
    assert [p.name for p in second.output.parent.iterdir() if p.name.startswith(".executed.ipynb.")]  # a temporary
    kernel = int(started.read_text())
    for _ in range(50):  # the killed paper's kernel notices its parent is gone (ipykernel's parent poller)
        if not Path(f"/proc/{kernel}").exists() or Path(f"/proc/{kernel}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.2)
    else:
        os.kill(kernel, signal.SIGKILL)
        pytest.fail(f"the kernel {kernel} of the killed paper kept running")
    slow.unlink()
    rerun = subprocess.run([sys.executable, "-c", PAPER, *files], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    executed = [line.split(":")[0].split("] ")[1] for line in rerun.stdout.splitlines() if ": started," in line]
    assert executed == ["second", "comparison"]  # the finished first notebook is skipped
    assert all(jobs.is_up_to_date(job) for job in planned)
    assert sorted(p.name for p in second.output.parent.iterdir()) == [
        "executed.html", "executed.ipynb", "executed.job.json", "executed.stamp.json"]
    notebook = nbformat.read(str(second.output), as_version=4)
    assert notebook.metadata["papermill"]["output_path"] == str(second.output)
    assert "finished" in notebook.cells[-1]["outputs"][0]["text"]
