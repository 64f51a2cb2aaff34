"""heritage.fileio: atomic writes leave the old file or the new one, with the permissions open() gives."""

from __future__ import annotations

import os
import stat

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
