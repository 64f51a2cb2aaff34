"""Where notebook jobs run and what became of each: the job states, :class:`JobResult`, the
:class:`Scheduler` protocol and :class:`LocalScheduler` (one job after the other on this machine).

The SLURM adapter (heritage.pipeline.on_slurm) implements the same protocol.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

from heritage import fileio
from heritage.pipeline import slurm
from heritage.pipeline.execution import Executor, _first_line, run_job
from heritage.pipeline.jobs import NotebookJob

# A job's states are the scheduler's (heritage.pipeline.slurm), plus two of paper's own: skipped (up to date,
# not run) and submitted (handed to SLURM without waiting).
DONE, FAILED = slurm.DONE, slurm.FAILED
SKIPPED, SUBMITTED = "skipped", "submitted"


@dataclass(frozen=True)
class JobResult:
    job: NotebookJob
    state: str  # done | failed | skipped | submitted
    seconds: float = 0.0
    error: str = ""

    def line(self) -> str:
        if self.state == FAILED:
            return (f"[failed  {self.seconds:7.1f} s] {self.job.name}: {self.error}\n"
                    f"    executed notebook: {self.job.output}")
        shown = self.job.html if self.state in (DONE, SKIPPED) else self.job.output
        return f"[{self.state:<7} {self.seconds:7.1f} s] {self.job.name} -> {shown}"


def finals(final: NotebookJob | Sequence[NotebookJob] | None) -> list[NotebookJob]:
    """``final`` as a list: the jobs that run once every other job has finished."""
    return [] if final is None else [final] if isinstance(final, NotebookJob) else list(final)


class Scheduler(Protocol):
    """Executes run jobs, then ``final`` (the comparison, the damage maps) once they have finished."""

    waits: bool  # False: run() only submitted the jobs (their results come later)

    def run(self, jobs: Sequence[NotebookJob], final: NotebookJob | Sequence[NotebookJob] | None
            ) -> list[JobResult]: ...


class LocalScheduler:
    """One job after the other on this machine: a line when each starts and ends, and one per epoch of a
    run (heritage.pipeline.progress polls its history.csv), with ETAs from measured times or said unknown."""

    waits = True

    def __init__(self, execute: Executor, poll_seconds: float | None = None) -> None:
        self.execute = execute
        self.poll_seconds = poll_seconds

    def run(self, jobs: Sequence[NotebookJob], final: NotebookJob | Sequence[NotebookJob] | None
            ) -> list[JobResult]:
        from heritage.pipeline import progress

        queue = [*jobs, *finals(final)]
        # each job's own last time, read before run_job replaces its stamp
        previous = {job.name: _stamp_seconds(job) for job in queue}

        def estimate(job: NotebookJob) -> progress.Estimate:
            return progress.expected_seconds(job.name, job.config, job.run_dir, previous[job.name])

        if queue:
            print(f"paper: {len(queue)} job(s) to execute, expected {progress.remaining(map(estimate, queue))}",
                  flush=True)
        results = []
        for index, job in enumerate(queue):
            later = progress.remaining(map(estimate, queue[index + 1:]))  # re-read: new stamps measure more
            print(f"[{index + 1}/{len(queue)}] {job.name}: started, expected {estimate(job).text()}; "
                  f"then {later}", flush=True)
            watcher = contextlib.nullcontext()
            if job.run_dir is not None:
                epochs = (job.config or {}).get("epochs")
                watcher = progress.EpochWatcher(job.name, job.run_dir, epochs, lambda line: print(line, flush=True),
                                                after=f"then {later}",
                                                poll_seconds=self.poll_seconds or progress.POLL_SECONDS)
            start = time.perf_counter()
            try:
                with watcher:
                    run_job(job, self.execute)
                result = JobResult(job, DONE, time.perf_counter() - start)
            except Exception as err:  # noqa: BLE001 - one failed notebook must not stop the others
                result = JobResult(job, FAILED, time.perf_counter() - start, _first_line(err))
            results.append(result)
            print(result.line(), flush=True)
        return results


def _stamp_seconds(job: NotebookJob) -> float | None:
    """The measured seconds of ``job``'s last execution for the same key (config), from its stamp."""
    try:
        stamp = fileio.read_json(job.stamp) if job.stamp.is_file() else {}
    except (OSError, ValueError):
        return None
    seconds = stamp.get("seconds") if isinstance(stamp, dict) and stamp.get("key") == job.key else None
    return float(seconds) if isinstance(seconds, (int, float)) else None

