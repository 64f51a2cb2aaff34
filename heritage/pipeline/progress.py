"""Progress of ``heritage paper`` you can trust: a line per event, ETAs from measured times.

While a run's notebook executes, :class:`EpochWatcher` polls its ``history.csv`` (the training loop
rewrites it atomically after every epoch) and prints one line per finished epoch: epochs done of
planned, validation mIoU, and the time left from this run's own epochs. Before a job starts,
:func:`expected_seconds` estimates it from measured times of the same configuration but another
fold (or of this job's previous execution): the ``seconds`` a finished job's stamp records (whole
notebook), else ``metrics.json``'s ``wall_time_s`` (training only, said so); otherwise the estimate
is stated as unknown, never guessed.
"""

from __future__ import annotations

import csv
import math
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from heritage import fileio
from heritage.pipeline.jobs import RUN_NOTEBOOK, stamp_of
from heritage.training.runs import HISTORY_FILE, METRICS_FILE

POLL_SECONDS = 2.0


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``; ``unknown`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    basis: str  # what it is made of, e.g. "2 measured runs of poc58_baseline/convnext_tiny"

    def text(self) -> str:
        return f"unknown ({self.basis})" if self.seconds is None else f"~{duration(self.seconds)} ({self.basis})"


def _same_setting(record: dict[str, Any], config: dict[str, Any]) -> bool:
    return all(record.get(key) == config.get(key) for key in ("profile", "epochs", "image_size", "batch_size"))


def expected_seconds(name: str, config: dict[str, Any] | None, run_dir: Path | None,
                     previous: float | None = None) -> Estimate:
    """How long a job should take, from measurements only.

    ``previous`` is this job's own last measured time (its stamp, read before it is replaced). For a
    run, the other folds of its POC/variant x encoder (``run_dir.parent/*``) with the same profile,
    epochs, image size and batch size count: their stamps' ``seconds``, else their ``wall_time_s``.
    """
    if previous is not None:
        return Estimate(previous, "its last execution")
    if config is None or run_dir is None:
        return Estimate(None, "not measured yet")
    setting = f"{run_dir.parent.parent.name}/{run_dir.parent.name}"
    stamped, trained = [], []
    for sibling in sorted(p for p in run_dir.parent.iterdir() if p.is_dir() and p != run_dir) \
            if run_dir.parent.is_dir() else []:
        stamp, metrics = _read(stamp_of(sibling / RUN_NOTEBOOK)), _read(sibling / METRICS_FILE)
        if stamp.get("seconds") is not None and _same_setting(stamp.get("setting") or {}, config):
            stamped.append(float(stamp["seconds"]))
        elif metrics.get("wall_time_s") is not None and _same_setting(metrics, config):
            trained.append(float(metrics["wall_time_s"]))
    if stamped:
        return Estimate(statistics.median(stamped), f"median of {len(stamped)} measured run(s) of {setting}")
    if trained:
        return Estimate(statistics.median(trained), f"training time of {len(trained)} run(s) of {setting}, "
                                                    "without the notebook's overhead")
    return Estimate(None, f"no finished run of {setting} with these settings")


def _read(path: Path) -> dict[str, Any]:
    try:
        value = fileio.read_json(path) if path.is_file() else {}
    except (OSError, ValueError):  # a file being replaced or damaged: no measurement
        return {}
    return value if isinstance(value, dict) else {}


def stamp_setting(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fields a stamp records so its time is only compared with runs of the same shape."""
    if config is None:
        return None
    return {key: config.get(key) for key in ("profile", "epochs", "image_size", "batch_size")}


def remaining(estimates: Iterable[Estimate]) -> str:
    """The summed estimate of queued jobs, saying how many have none."""
    estimates = list(estimates)
    known = [e.seconds for e in estimates if e.seconds is not None]
    unknown = len(estimates) - len(known)
    if not estimates:
        return "nothing queued"
    if not known:
        return f"unknown ({unknown} job(s) not measured yet)"
    text = f"~{duration(sum(known))}"
    return text + (f" + {unknown} job(s) not measured yet" if unknown else "")


def read_history(path: Path) -> list[dict[str, str]]:
    """Rows of a ``history.csv`` ([] while it does not exist or cannot be read)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error):
        return []


class EpochWatcher:
    """Prints a line per epoch a running job's ``history.csv`` gains (polled on a thread).

    ``poll()`` reads the file once and reports every epoch not reported yet; the thread calls it every
    ``poll_seconds`` and :meth:`stop` once more, so every epoch written is reported exactly once.
    ``after`` (e.g. "~2 min for the 5 queued jobs") ends each line.
    """

    def __init__(self, name: str, run_dir: Path, planned_epochs: int | None, write: Callable[[str], None],
                 after: str = "", poll_seconds: float = POLL_SECONDS) -> None:
        self.name, self.path, self.planned = name, run_dir / HISTORY_FILE, planned_epochs
        self.write, self.after, self.poll_seconds = write, after, poll_seconds
        self.reported = self._last_epoch(read_history(self.path))  # a resumed run's earlier epochs
        self.started_at = self.reported
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _last_epoch(rows: list[dict[str, str]]) -> int:
        epochs = [int(float(r["epoch"])) for r in rows if (r.get("epoch") or "").strip()]
        return max(epochs, default=0)

    def poll(self) -> list[str]:
        with self._lock:
            rows = read_history(self.path)
            if self._last_epoch(rows) < self.reported:  # rewritten from scratch (a new configuration)
                self.reported = self.started_at = 0
            lines = [self._line(row, rows) for row in rows
                     if (row.get("epoch") or "").strip() and int(float(row["epoch"])) > self.reported]
            self.reported = max(self.reported, self._last_epoch(rows))
        for line in lines:
            self.write(line)
        return lines

    def _line(self, row: dict[str, str], rows: list[dict[str, str]]) -> str:
        epoch = int(float(row["epoch"]))
        elapsed = _float(row.get("elapsed_s"))
        planned = f"/{self.planned}" if self.planned else ""
        parts = [f"epoch {epoch}{planned}"]
        val = _float(row.get("val_miou"))
        if val is not None:
            parts.append(f"val mIoU {100 * val:.1f}%")
        if elapsed is not None:
            parts.append(f"{duration(elapsed)} of training")
            # the time per epoch measured in this execution (a resumed run's earlier epochs excluded)
            first = next((r for r in rows if int(float(r["epoch"])) == self.started_at), None)
            since = elapsed - (_float(first.get("elapsed_s")) or 0.0) if first else elapsed
            done = epoch - self.started_at
            if self.planned and done > 0 and epoch < self.planned:
                parts.append(f"~{duration(since / done * (self.planned - epoch))} left in this run")
        return f"  {self.name}: " + ", ".join(parts) + (f"; {self.after}" if self.after else "")

    def __enter__(self) -> EpochWatcher:
        self._thread = threading.Thread(target=self._loop, name=f"watch {self.name}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
