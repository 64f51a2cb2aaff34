"""What durable writes cost: the fsync of a file and its folder for the files that mark work as finished.

    python bench/durable_writes.py [--rounds 3] [--writes 200] [--folder build/bench-durable]

A/B in one process, the arms interleaved (durable, plain, durable, ...), on the file system of
``--folder`` (default ``build/``, the repository's disk, where ``make paper`` writes ``data/`` and ``runs/``).
"plain" replaces ``os.fsync`` and ``fileio.flush_files`` (one syncfs) with no-ops: the writes stay atomic
(temporary + rename), only the flush to disk is left out; everything else runs the same code.

1. ``json``: one ``metrics.json``-sized write (``fileio.write_json``, ~20 KB), median of ``--writes``.
2. ``data_preparation``: the smoke profile's data folder made from its 160-image synthetic shards, as
   ``make paper`` does (``preparation.prepare_data``: ingest, whose images are flushed before its
   metadata.csv, then augment, the same, and the split manifests), median of ``--rounds``; the shards are
   written once.
3. ``smoke_paper_estimate``: the rest of the smoke paper's durable writes, per planned run (``config.plan``):
   ``metrics.json``, the notebook's stamp (a file and a folder fsync each) and the folder fsync added to
   the best checkpoint's (its file fsync is older than durable writes), at (1)'s measured cost; plus (2).

Writes ``bench/results/durable-writes-<cpu>-<date>.json`` with the CPU, the load average and the commit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from heritage import config, fileio
from heritage.data import synthetic as synth
from heritage.pipeline import preparation
from heritage.training import runs
from train_bench import result_path  # bench/ is on sys.path when this runs as a script

REPO = Path(__file__).resolve().parents[1]
METRICS_LIKE = {"per_class": {f"class{i}": {"iou": 0.1 * i, "precision": 0.5, "recall": 0.5, "f1": 0.5,
                                             "support": 1234567} for i in range(16)},
                "confusion_matrix": [[123456] * 16 for _ in range(16)], "history": list(range(1500))}


class FsyncCounter:
    """``os.fsync`` and ``fileio.flush_files`` (one syncfs) counted, and no-ops while ``plain``."""

    def __init__(self) -> None:
        self.real, self.real_flush, self.calls, self.flushes, self.plain = os.fsync, fileio.flush_files, 0, 0, False

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if not self.plain:
            self.real(fd)

    def flush_files(self, folder, paths) -> None:
        self.flushes += 1
        if not self.plain:
            self.real_flush(folder, paths)

    @contextlib.contextmanager
    def arm(self, durable: bool) -> Iterator[None]:
        self.plain = not durable
        try:
            yield
        finally:
            self.plain = False


def interleaved(measure: Callable[[], float], rounds: int, fsyncs: FsyncCounter) -> dict:
    """Median seconds of ``measure`` per arm, the arms alternating; fsync calls per round of each arm."""
    times: dict[str, list[float]] = {"durable": [], "plain": []}
    calls: dict[str, list[tuple[int, int]]] = {"durable": [], "plain": []}
    for _ in range(rounds):
        for arm in ("durable", "plain"):
            before = fsyncs.calls, fsyncs.flushes
            with fsyncs.arm(arm == "durable"):
                times[arm].append(measure())
            calls[arm].append((fsyncs.calls - before[0], fsyncs.flushes - before[1]))
    durable, plain = statistics.median(times["durable"]), statistics.median(times["plain"])
    return {"durable_s": durable, "plain_s": plain, "extra_s": durable - plain,
            "fsync_calls_per_round": calls["durable"][0][0], "syncfs_calls_per_round": calls["durable"][0][1],
            "all_s": times}


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--folder", type=Path, default=REPO / "build" / "bench-durable")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    folder = args.folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    fsyncs = FsyncCounter()
    os.fsync = fsyncs  # what fileio's durable writes call (fsync_file, fsync_directory)
    fileio.flush_files = fsyncs.flush_files  # ingest and augment: the images before metadata.csv
    load_before = os.getloadavg()

    json_path = folder / "metrics.json"
    single = interleaved(lambda: timed(lambda: fileio.write_json(json_path, METRICS_LIKE, durable=not fsyncs.plain)),
                         args.writes, fsyncs)
    single.pop("all_s")

    spec = preparation.SYNTHETIC["smoke"]
    shards = folder / "shards"
    synth.write_parquet(shards, n_images=spec["n_images"], longest_side=spec["longest_side"], progress=False)

    def prepare() -> float:
        target = folder / "data"
        shutil.rmtree(target, ignore_errors=True)
        return timed(lambda: preparation.prepare_data("smoke", shards, target))

    with contextlib.redirect_stdout(sys.stderr):
        data = interleaved(prepare, args.rounds, fsyncs)
    planned = config.plan("smoke", data_dir=folder / "data")
    per_run_s = 2 * single["extra_s"] + single["extra_s"] / 2  # metrics.json, stamp, the checkpoint's folder
    estimate = data["extra_s"] + len(planned) * per_run_s
    cpu = runs.cpu_name()
    record = {
        "benchmark": "durable_writes", "cpu": cpu, "git_commit": runs.git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1_5_15_before": load_before, "load_average_1_5_15_after": os.getloadavg(),
        "folder": str(folder), "file_system": _file_system(folder),
        "json": {**single, "writes": args.writes, "bytes": json_path.stat().st_size},
        "data_preparation": {**data, "rounds": args.rounds, "n_images": spec["n_images"]},
        "smoke_paper_estimate": {
            "planned_runs": len(planned), "extra_s_per_run": per_run_s, "extra_s": estimate,
            "note": "data_preparation.extra_s + planned_runs x (2 JSON writes + a folder fsync) at json.extra_s, "
                    "to compare with the smoke paper's wall time (minutes)"},
    }
    shutil.rmtree(folder, ignore_errors=True)
    path = result_path(args.out, cpu, dt.date.today().isoformat(), prefix="durable-writes-")
    fileio.write_json(path, record)
    print(json.dumps(record, indent=2))
    print(f"written: {path}")
    return path


def _file_system(folder: Path) -> str:
    """The mount's file system type (Linux /proc/mounts), e.g. ext4, overlay, tmpfs."""
    best = ("", "unknown")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            if str(folder.resolve()).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, kind)
    except OSError:
        pass
    return best[1]


if __name__ == "__main__":
    main()
