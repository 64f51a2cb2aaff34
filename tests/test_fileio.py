"""heritage.fileio: atomic writes leave the old file or the new one, with the permissions open() gives."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from heritage import fileio


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(previous)


def test_a_new_file_gets_the_mode_of_a_plain_open_not_mkstemps_0600(tmp_path, umask_027):
    assert fileio.process_umask() == umask_027 and os.umask(umask_027) == umask_027  # read, left as it was
    fileio.write_text(tmp_path / "metrics.json", "{}")
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("{}")
    assert mode_of(tmp_path / "metrics.json") == mode_of(tmp_path / "plain.txt") == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "plain.txt"]


def test_replacing_a_file_keeps_its_mode(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    target.chmod(0o604)
    fileio.write_text(target, "new")
    assert target.read_text() == "new" and mode_of(target) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "history.csv"
    target.write_text("epoch,train_loss\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "epoch,train_loss\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


# --- leftovers of killed writers (issue 10, item 7) ------------------------------------------------

KILLED_MID_WRITE = """
import os, signal, sys
from heritage import fileio
with fileio.atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a png")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_temporary_left_by_kill_9_is_removed_and_live_or_unrelated_files_are_kept(tmp_path):
    target = tmp_path / "s0.png"
    result = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(target)], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    (junk,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert fileio.TEMP_FILE_PATTERN.fullmatch(junk.name) and not target.exists()
    unrelated = [tmp_path / name for name in (".s1.png.tmp", "notes.tmp", ".hidden")]
    for path in unrelated:
        path.write_text("mine")
    with fileio.atomic_path(tmp_path / "s2.png") as live:  # a writer that is still running
        live.write_bytes(b"in progress")
        assert fileio.remove_stale_temporaries(tmp_path) == [junk]
        assert live.exists()
    assert not junk.exists() and all(p.exists() for p in unrelated)


def test_temporaries_of_another_host_or_without_owner_are_removed_only_once_stale(tmp_path):
    recent = tmp_path / ".a.png.123@other-node.abcd1234.tmp"
    stale = tmp_path / ".b.png.456@other-node.efgh5678.tmp"
    legacy = tmp_path / ".c.png.ijkl9012.tmp"  # atomic_path's name before owners were recorded
    for path in (recent, stale, legacy):
        path.write_bytes(b"x")
    old = time.time() - fileio.STALE_AFTER_S - 60
    for path in (stale, legacy):
        os.utime(path, (old, old))
    assert sorted(fileio.remove_stale_temporaries(tmp_path)) == sorted([stale, legacy])
    assert recent.exists()


def test_importing_the_package_changes_no_process_wide_setting():
    # PIL's bomb guard, the environment and the warning filters are the importing program's; each read
    # sets its own pixel limit, python -m heritage and the kernel its environment (heritage.process).
    code = """
import os, warnings
import PIL.Image
import albumentations, cv2, pandas, scipy.stats, torch  # their own import-time settings come first
before = (PIL.Image.MAX_IMAGE_PIXELS, dict(os.environ), list(warnings.filters))
import heritage, heritage.fileio, heritage.data.datasets, heritage.training.train, heritage.pipeline.paper
assert (PIL.Image.MAX_IMAGE_PIXELS, dict(os.environ), list(warnings.filters)) == before
"""
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("NO_ALBUMENTATIONS_UPDATE", "PYTHONWARNINGS")}
    environment["NO_ALBUMENTATIONS_UPDATE"] = "1"  # offline: albumentations would ask PyPI on import
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_scan_above_pils_own_guard_reads_and_one_above_the_read_limit_is_refused_naming_it(tmp_path,
                                                                                            monkeypatch):
    from PIL import Image

    path = tmp_path / "scan.png"
    Image.new("1", (20_000, 10_000)).save(path)  # 200 MP: PIL's default guard (89 MP) raises above 178 MP
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # PIL's default, whatever ran before
    assert fileio.open_lazy(path).size == (20_000, 10_000)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # restored after the read
    with pytest.raises(fileio.errors.InputError, match=r"scan\.png: 20000x10000 = 200,000,000 pixels is above"):
        fileio.open_lazy(path, max_pixels=100_000_000)
