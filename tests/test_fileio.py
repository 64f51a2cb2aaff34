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


def test_a_new_file_gets_the_mode_of_a_plain_open_not_mkstemps_0600(tmp_path, monkeypatch, umask_027):
    monkeypatch.setattr(fileio, "_UMASK", umask_027)  # read once at import in real use
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
