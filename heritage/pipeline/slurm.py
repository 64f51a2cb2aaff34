"""A generic SLURM scheduler: sbatch scripts, job arrays, dependencies, requeue, progress.

Why plain sbatch scripts and not submitit: every job here is a command line (papermill executing a
notebook, ``python -m heritage train``), not a pickled Python callable. A script the project writes
into the run folder (``slurm.sbatch``) is readable, can be resubmitted by hand with ``sbatch``, and
gives the four things needed with no extra layer: ``--requeue``, ``--dependency``, ``--array`` and
``--output`` inside the run folder.

What a batch script does (see ``_BODY``):

- runs the command in the background and waits for it, so the shell can handle signals meanwhile;
- ``--signal=B:USR1@<signal_seconds>``: SLURM sends USR1 to the batch shell before the time limit
  (and ``scancel --signal=USR1 --batch`` sends it by hand). The shell forwards it to the training
  process, which finishes its step, writes ``checkpoint_last.pt`` and exits 75 (EX_TEMPFAIL);
- on exit code 75 after USR1 the script calls ``scontrol requeue $SLURM_JOB_ID``: the job goes back
  to the queue under the same id and, when it starts again, SLURM reruns the whole script, whose
  command resumes from ``checkpoint_last.pt`` in the same run folder. Nothing else is needed to
  resume, so the same mechanism also serves preemption and ``scontrol requeue`` from outside
  (SLURM then kills the job with SIGTERM, the engine checkpoints, SLURM restarts the script);
- SIGTERM (``scancel``, time limit reached, preemption) is forwarded too, but never leads to a
  requeue from the script: a cancel must stay a cancel, and SLURM requeues preempted jobs itself;
- writes ``slurm-exit.json`` (job id, state, exit code, start/end times) into the run folder, so the
  outcome is known without an accounting database (``sacct`` is often unavailable).
- with several tasks per node (one per GPU), ``srun`` launches them; the engine reads its rank, world
  size and local rank from ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID``, and the
  rendezvous from ``MASTER_ADDR`` (first host of the allocation) and ``MASTER_PORT`` (from the job id,
  so jobs sharing a node do not collide).

The command is responsible for turning USR1 into "checkpoint, exit 75" (``heritage train`` does);
a command that does not handle USR1 is ended by it. A requeued job waits ``AuthInfo=cred_expire``
(default 120 s) before it is eligible again.

It knows jobs (a name, a command line, a run folder), not what they compute: it imports nothing of
the pipeline (``tests/test_layering.py``). ``heritage paper --scheduler slurm`` turns its notebook
jobs into :class:`Job` s in :func:`heritage.pipeline.on_slurm.run_plan_on_slurm`; resources per profile and kind
of job come from a site file (:func:`heritage.pipeline.slurm_site.load_site`,
``heritage/configs/slurm/site.example.yaml``).

Run folder files: ``slurm.sbatch`` (the script; array jobs share one next to their run folders),
``slurm.json`` (submission record: job id, script, log, dependencies), ``slurm-<id>.out`` (the log,
appended across requeues) and ``slurm-exit.json`` (outcome, written by the script).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tqdm.auto import tqdm

from heritage import errors, fileio
from heritage.pipeline.slurm_site import Resources

SUBMISSION_FILE = ".slurm-submission.json"  # inside the runs root
POLL_SECONDS_VARIABLE = "HERITAGE_SLURM_POLL_SECONDS"
MAX_FAILED_POLLS = 10  # consecutive squeue failures before wait() gives up

# A job's states, here and in heritage.pipeline.schedulers (which adds its own "skipped" and "submitted").
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINISHED = (DONE, FAILED)
# SLURM job states (squeue/scontrol/sacct names) -> what a run is doing.
_SLURM_STATES = {
    "PENDING": QUEUED, "REQUEUED": QUEUED, "REQUEUE_HOLD": QUEUED, "REQUEUE_FED": QUEUED,
    "CONFIGURING": QUEUED, "RESV_DEL_HOLD": QUEUED, "SUSPENDED": RUNNING, "RUNNING": RUNNING,
    "COMPLETING": RUNNING, "STAGE_OUT": RUNNING, "SIGNALING": RUNNING, "RESIZING": RUNNING,
    "COMPLETED": DONE,
    "FAILED": FAILED, "CANCELLED": FAILED, "TIMEOUT": FAILED, "NODE_FAIL": FAILED, "PREEMPTED": FAILED,
    "BOOT_FAIL": FAILED, "DEADLINE": FAILED, "OUT_OF_MEMORY": FAILED, "SPECIAL_EXIT": FAILED,
    "REVOKED": FAILED,
}
# Pending reasons that mean the job can never start.
_NEVER_STARTS = ("DependencyNeverSatisfied", "InvalidAccount", "InvalidQOS", "PartitionConfig")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+:/=@-]*$")


class SlurmError(errors.CommandFailed):
    """sbatch/squeue failed, or jobs failed; the message names the jobs and their log files."""


# -- jobs and batch scripts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One command to run in one run folder.

    ``depends_on`` names jobs earlier in the same submission that must succeed first (``afterok``).
    Jobs sharing an ``array`` key (same resources, dependencies and requeue policy) are submitted as
    one job array, task index = position in the group (e.g. the folds of one POC x encoder).
    ``requeue``: checkpoint-and-requeue on USR1 (see the module docstring); off for jobs that
    cannot resume, which then simply end at their time limit.
    """

    name: str
    command: tuple[str, ...]
    run_dir: Path
    resources: Resources = Resources()
    depends_on: tuple[str, ...] = ()
    requeue: bool = True
    array: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"job name {self.name!r}: use letters, digits and _.+:/=@- (no spaces)")
        if isinstance(self.command, str) or not self.command:
            raise ValueError(f"job {self.name}: command must be a non-empty argv list, got {self.command!r}")
        object.__setattr__(self, "command", tuple(str(a) for a in self.command))
        object.__setattr__(self, "run_dir", Path(self.run_dir).absolute())
        object.__setattr__(self, "depends_on", tuple(self.depends_on))


@dataclass(frozen=True)
class SubmittedJob:
    name: str
    job_id: str  # "123", or "123_4" for task 4 of array job 123
    run_dir: Path
    log: Path

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "job_id": self.job_id, "run_dir": str(self.run_dir), "log": str(self.log)}


@dataclass(frozen=True)
class JobStatus:
    name: str
    job_id: str
    state: str  # queued | running | done | failed
    log: Path
    slurm_state: str = ""  # SLURM's own word (PENDING, RUNNING, FAILED, ...) or the exit record's
    exit_code: int | None = None
    reason: str = ""

    def describe(self) -> str:
        details = ", ".join(d for d in (self.slurm_state,
                                        f"exit {self.exit_code}" if self.exit_code is not None else "",
                                        self.reason if self.reason not in ("", "None") else "") if d)
        text = f"{self.name} (job {self.job_id}): {self.state}" + (f" [{details}]" if details else "")
        if self.state != FAILED:
            return text
        return text + f", log: {self.log}" + ("" if self.log.exists() else " (not written: the job never started)")


_HEADER = """#!/bin/bash
# Written by heritage.pipeline.slurm for: {title}
# Resubmit by hand with `sbatch {script}` (dependencies are given on the sbatch command line).
#SBATCH --job-name={job_name}
#SBATCH --output={output}
#SBATCH --open-mode=append
#SBATCH --chdir={workdir}
{options}
set -uo pipefail
"""

# Common to every job; see the module docstring. RUN_DIR, JOB_KEY and the command ("$@") are set
# by the case block above it.
_BODY = r"""
REQUEUE_ON_USR1={requeue}
started=$(date +%s.%N)
child=""
got_usr1=0
got_term=0
interrupted=0
# Signals interrupt `wait`; the handlers pass them on to the command and mark the interruption.
trap 'got_usr1=1; interrupted=1; [ -n "$child" ] && kill -USR1 "$child" 2>/dev/null' USR1
trap 'got_term=1; interrupted=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM

write_exit_record() {  # state exit_code
    local tmp="$RUN_DIR/.slurm-exit.json.$$"
    printf '{"job_id": "%s", "slurm_job_id": "%s", "restart_count": %s, "state": "%s", "exit_code": %s, "node": "%s", "started": %s, "finished": %s}\n' \
        "$JOB_KEY" "$SLURM_JOB_ID" "${SLURM_RESTART_COUNT:-0}" "$1" "$2" "$(hostname -s)" "$started" "$(date +%s.%N)" >"$tmp"
    mv -f "$tmp" "$RUN_DIR/slurm-exit.json"
}

# Distributed training: rank, world size and local rank come from srun (SLURM_PROCID, SLURM_NTASKS,
# SLURM_LOCALID); the rendezvous is the allocation's first host and a port derived from the job id.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
export MASTER_ADDR MASTER_PORT

echo "heritage.pipeline.slurm: job $JOB_KEY (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname -s) at $(date -Is): $*"
{launch}"$@" &
child=$!
while :; do
    interrupted=0
    wait "$child"
    code=$?
    [ "$interrupted" = 1 ] || break  # a real exit, not a handled signal
done

if [ "$REQUEUE_ON_USR1" = 1 ] && [ "$code" -eq {requeue_code} ] && [ "$got_usr1" = 1 ] && [ "$got_term" = 0 ]; then
    # Checkpointed on USR1 (time limit near, or sent by hand): back to the queue under the same id;
    # the rerun of this script resumes from checkpoint_last.pt.
    write_exit_record requeued "$code"
    echo "heritage.pipeline.slurm: exit $code after USR1: requeueing job $SLURM_JOB_ID"
    if scontrol requeue "$SLURM_JOB_ID"; then
        exit "$code"
    fi
    echo "heritage.pipeline.slurm: scontrol requeue failed; the run stops here and resumes when resubmitted" >&2
    write_exit_record failed "$code"
    exit "$code"
fi
if [ "$code" -eq 0 ]; then
    write_exit_record completed 0
elif [ "$got_term" = 1 ]; then  # scancel, time limit, preemption or requeue from outside
    write_exit_record terminated "$code"
else
    write_exit_record failed "$code"
fi
echo "heritage.pipeline.slurm: job $JOB_KEY ended with exit code $code at $(date -Is)"
exit "$code"
"""


def batch_script(jobs: Sequence[Job], *, title: str, script: Path, output: str, workdir: Path) -> str:
    """The sbatch script for one job, or for the tasks of one array (``jobs[i]`` = task ``i``)."""
    first = jobs[0]
    options = first.resources.sbatch_lines()
    if len(jobs) > 1:
        options.append(f"#SBATCH --array=0-{len(jobs) - 1}")
    if first.requeue:
        options += ["#SBATCH --requeue", f"#SBATCH --signal=B:USR1@{first.resources.signal_seconds}"]
    else:
        options.append("#SBATCH --no-requeue")
    header = _HEADER.format(title=title, script=script, job_name=_quote_option(first.array or first.name),
                            output=_quote_option(output), workdir=_quote_option(str(workdir)),
                            options="\n".join(options))
    if len(jobs) > 1:
        key = '${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}'
        cases = "".join(f"    {i}) RUN_DIR={shlex.quote(str(job.run_dir))}; set -- {shlex.join(job.command)} ;;\n"
                        for i, job in enumerate(jobs))
        selection = (f'JOB_KEY="{key}"\ncase "$SLURM_ARRAY_TASK_ID" in\n{cases}'
                     '    *) echo "heritage.pipeline.slurm: no task $SLURM_ARRAY_TASK_ID in this array" >&2; exit 2 ;;\nesac\n')
    else:
        selection = (f'JOB_KEY="$SLURM_JOB_ID"\nRUN_DIR={shlex.quote(str(first.run_dir))}\n'
                     f"set -- {shlex.join(first.command)}\n")
    setup = "".join(f"{line}\n" for line in first.resources.setup)
    body = (_BODY.replace("{launch}", "srun " if first.resources.tasks * first.resources.nodes > 1 else "")
            .replace("{requeue_code}", str(errors.EXIT_REQUEUE)).replace("{requeue}", "1" if first.requeue else "0"))
    return header + selection + setup + body


def _quote_option(value: str) -> str:
    """A value for an ``#SBATCH`` line: sbatch accepts spaces inside double quotes there."""
    if '"' in value:
        raise ValueError(f"an sbatch option value cannot contain a double quote: {value!r}")
    return f'"{value}"' if any(c.isspace() for c in value) else value


# -- the scheduler -------------------------------------------------------------------------------------------


class SlurmScheduler:
    """Submit jobs with sbatch, then follow them with squeue (sacct and exit records as fallbacks).

    ``submission_file`` (default ``runs/.slurm-submission.json``) records every submitted job, so
    :meth:`attach` can follow a submission from another process (``heritage paper --attach``).
    """

    def __init__(self, submission_file: str | os.PathLike | None = None, *, workdir: str | os.PathLike | None = None,
                 poll_seconds: float = 15.0) -> None:
        self.submission_file = Path(submission_file or Path("runs") / SUBMISSION_FILE).absolute()
        self.workdir = Path(workdir or Path.cwd()).absolute()
        self.poll_seconds = poll_seconds
        self.jobs: dict[str, SubmittedJob] = {}
        self._sacct_works = True

    @classmethod
    def attach(cls, submission_file: str | os.PathLike, *, poll_seconds: float = 15.0) -> SlurmScheduler:
        """A scheduler following the jobs recorded in ``submission_file``."""
        record = fileio.read_json(submission_file)
        try:
            scheduler = cls(submission_file, workdir=record["workdir"], poll_seconds=poll_seconds)
            for entry in record["jobs"]:
                scheduler.jobs[entry["name"]] = SubmittedJob(entry["name"], entry["job_id"], Path(entry["run_dir"]),
                                                             Path(entry["log"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{submission_file}: not a heritage SLURM submission record ({err!r})") from None
        return scheduler

    # -- submission ------------------------------------------------------------------------------------------

    def submit(self, jobs: Iterable[Job], *, chain: bool = False) -> dict[str, str]:
        """Submit ``jobs`` (dependencies before dependents); returns job name -> SLURM job id.

        ``chain=True`` runs the jobs one after another in the given order (each ``afterany`` the
        previous one, no arrays): one job at a time gets the GPUs, for fair throughput numbers.
        """
        jobs = list(jobs)
        _check_submission(jobs)
        ids: dict[str, str] = {}
        previous: str | None = None
        try:
            for unit in _units(jobs, chain):
                after_ok = sorted({ids[d] for d in unit[0].depends_on}, key=_id_order)
                dependency = [f"afterok:{':'.join(after_ok)}"] if after_ok else []
                if chain and previous:
                    dependency.append(f"afterany:{previous}")
                try:
                    job_id, script = self._submit_unit(unit, dependency)
                except SlurmError as err:
                    if not ids:
                        raise
                    raise SlurmError(f"{err}\nthe {len(ids)} jobs submitted before it are recorded in "
                                     f"{self.submission_file}; cancel them with: scancel "
                                     f"{' '.join(sorted({i.split('_')[0] for i in ids.values()}, key=int))}") from None
                for index, job in enumerate(unit):
                    ids[job.name] = f"{job_id}_{index}" if len(unit) > 1 else job_id
                    self._record_job(job, ids, script)
                previous = job_id
        finally:
            self._save()
        return ids

    def _submit_unit(self, unit: list[Job], dependency: list[str]) -> tuple[str, Path]:
        """sbatch one job or one array; returns its SLURM job id and its script."""
        first = unit[0]
        if len(unit) == 1:
            script = first.run_dir / "slurm.sbatch"
            output = str(first.run_dir / "slurm-%j.out")
        else:
            # One --output pattern serves all tasks; %a picks the task's link to its run folder,
            # so each task's log is written inside its own run folder.
            folder = Path(os.path.commonpath([j.run_dir for j in unit])) / f".slurm-array-{slug(first.array)}"
            folder.mkdir(parents=True, exist_ok=True)
            for index, job in enumerate(unit):
                link = folder / str(index)
                link.unlink(missing_ok=True)
                link.symlink_to(job.run_dir, target_is_directory=True)
            script = folder / "slurm.sbatch"
            output = str(folder / "%a" / "slurm-%A_%a.out")
        for job in unit:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            # An outcome from an earlier submission must not be read as this one's.
            (job.run_dir / "slurm-exit.json").unlink(missing_ok=True)
        title = first.name if len(unit) == 1 else f"array {first.array}: " + ", ".join(j.name for j in unit)
        fileio.write_text(script, batch_script(unit, title=title, script=script, output=output, workdir=self.workdir))
        command = ["sbatch", "--parsable"]
        if dependency:
            # A job whose dependency failed is cancelled instead of pending forever.
            command += [f"--dependency={','.join(dependency)}", "--kill-on-invalid-dep=yes"]
        result = _run(command + [str(script)], what=f"sbatch for {first.array or first.name}")
        return result.stdout.strip().split(";")[0], script

    def _record_job(self, job: Job, ids: Mapping[str, str], script: Path) -> None:
        job_id = ids[job.name]
        log = job.run_dir / f"slurm-{job_id}.out"  # %j for a single job, %A_%a for an array task
        fileio.write_json(job.run_dir / "slurm.json", {
            "name": job.name, "job_id": job_id, "script": str(script), "log": str(log),
            "command": list(job.command), "depends_on": {d: ids[d] for d in job.depends_on},
            "requeue": job.requeue, "submitted_at": _now(),
        })
        self.jobs[job.name] = SubmittedJob(job.name, job_id, job.run_dir, log)

    def _save(self) -> None:
        if self.jobs:
            fileio.write_json(self.submission_file, {
                "workdir": str(self.workdir), "saved_at": _now(),
                "jobs": [job.to_json() for job in self.jobs.values()],
            })

    # -- following -------------------------------------------------------------------------------------------

    def status(self, job_ids: Mapping[str, str] | None = None) -> dict[str, JobStatus]:
        """One look at the jobs (default: all submitted): name -> :class:`JobStatus`."""
        jobs = self._selected(job_ids)
        queue = self._squeue([job.job_id for job in jobs])
        missing = [job.job_id for job in jobs if job.job_id not in queue]
        accounted = self._sacct(missing) if missing else {}
        return {job.name: self._status(job, queue.get(job.job_id), accounted.get(job.job_id)) for job in jobs}

    def wait(self, job_ids: Mapping[str, str] | None = None, *, progress: bool = True,
             timeout_seconds: float | None = None) -> dict[str, JobStatus]:
        """Poll until every job is done or failed; shows a progress bar and each state change.

        Returns the final statuses; see :func:`check_statuses` to turn failures into an error.
        """
        jobs = self._selected(job_ids)
        selection = {job.name: job.job_id for job in jobs}
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        seen: dict[str, str] = {}
        failed_polls = 0
        with tqdm(total=len(jobs), desc="SLURM jobs", unit="job", disable=not progress) as bar:
            while True:
                try:
                    statuses = self.status(selection)
                    failed_polls = 0
                except SlurmError as err:
                    # A busy or restarting slurmctld times out now and then; the jobs run on.
                    failed_polls += 1
                    if failed_polls > MAX_FAILED_POLLS:
                        raise
                    bar.write(f"slurm: {err} (retrying, {failed_polls}/{MAX_FAILED_POLLS})")
                    time.sleep(self.poll_seconds)
                    continue
                for name, status in statuses.items():
                    if seen.get(name) != status.state:
                        seen[name] = status.state
                        if progress:
                            bar.write(status.describe())
                counts = {state: sum(s.state == state for s in statuses.values())
                          for state in (QUEUED, RUNNING, DONE, FAILED)}
                bar.n = counts[DONE] + counts[FAILED]
                bar.set_postfix(counts, refresh=True)
                if bar.n == len(jobs):
                    return statuses
                if deadline is not None and time.monotonic() > deadline:
                    waiting = ", ".join(s.describe() for s in statuses.values() if s.state not in FINISHED)
                    raise TimeoutError(f"SLURM jobs still unfinished after {timeout_seconds} s: {waiting}")
                time.sleep(self.poll_seconds)

    def _selected(self, job_ids: Mapping[str, str] | None) -> list[SubmittedJob]:
        if job_ids is None:
            return list(self.jobs.values())
        unknown = [name for name in job_ids if name not in self.jobs]
        if unknown:
            raise KeyError(f"not submitted by this scheduler: {', '.join(unknown)}")
        return [self.jobs[name] for name in job_ids]

    def _squeue(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        """job id -> (SLURM state, reason) for the jobs the controller still knows."""
        bases = sorted({job_id.split("_")[0] for job_id in job_ids}, key=_id_order)
        if not bases:
            return {}
        result = _run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r",
                       f"--jobs={','.join(bases)}"], what="squeue", check=False)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:  # every job has left the controller's memory
                return {}
            raise SlurmError(f"squeue failed (exit {result.returncode}): {result.stderr.strip()}")
        queue = {}
        for line in result.stdout.splitlines():
            job_id, state, reason = line.strip().split("|", 2)
            queue[job_id] = (state, reason)
        return queue

    def _sacct(self, job_ids: list[str]) -> dict[str, tuple[str, int | None]]:
        """job id -> (SLURM state, exit code) from accounting, where the cluster has it."""
        if not self._sacct_works or shutil.which("sacct") is None:
            return {}
        result = _run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State,ExitCode",
                       f"--jobs={','.join(job_ids)}"], what="sacct", check=False)
        if result.returncode != 0:  # e.g. "Slurm accounting storage is disabled"
            self._sacct_works = False
            return {}
        accounted = {}
        for line in result.stdout.splitlines():
            job_id, state, exit_code = line.split("|")
            accounted[job_id] = (state.split()[0], int(exit_code.split(":")[0]) if exit_code else None)
        return accounted

    def _status(self, job: SubmittedJob, queued: tuple[str, str] | None,
                accounted: tuple[str, int | None] | None) -> JobStatus:
        record = exit_record(job)
        exit_code = record.get("exit_code") if record else None
        if queued is not None:
            slurm_state, reason = queued
            state = _SLURM_STATES.get(slurm_state.split()[0], RUNNING)
            if state == QUEUED and reason in _NEVER_STARTS:
                state = FAILED
            if state == DONE and record and record.get("state") == "failed":
                state = FAILED
            return JobStatus(job.name, job.job_id, state, job.log, slurm_state, exit_code, reason)
        if record is not None:  # gone from the controller: the script's own record decides
            state = {"completed": DONE, "requeued": QUEUED}.get(record.get("state"), FAILED)
            return JobStatus(job.name, job.job_id, state, job.log, f"record: {record.get('state')}", exit_code)
        if accounted is not None:
            slurm_state, code = accounted
            return JobStatus(job.name, job.job_id, _SLURM_STATES.get(slurm_state, FAILED), job.log, slurm_state, code)
        return JobStatus(job.name, job.job_id, FAILED, job.log, "UNKNOWN", None,
                         "no longer known to SLURM and no slurm-exit.json: it never ran or was killed")


def check_statuses(statuses: Mapping[str, JobStatus]) -> None:
    """Raise :class:`SlurmError` listing every failed job with its log file."""
    failed = [status for status in statuses.values() if status.state == FAILED]
    if failed:
        raise SlurmError(f"{len(failed)} of {len(statuses)} SLURM jobs failed:\n" +
                         "\n".join(f"  {status.describe()}" for status in failed))


def _check_submission(jobs: list[Job]) -> None:
    names: set[str] = set()
    run_dirs: dict[Path, str] = {}
    for job in jobs:
        if job.name in names:
            raise ValueError(f"two jobs are named {job.name!r}")
        if job.run_dir in run_dirs:
            raise ValueError(f"jobs {run_dirs[job.run_dir]!r} and {job.name!r} share the run folder {job.run_dir}")
        for dependency in job.depends_on:
            if dependency not in names:
                raise ValueError(f"job {job.name!r} depends on {dependency!r}, which is not submitted before it")
        names.add(job.name)
        run_dirs[job.run_dir] = job.name
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        if job.array is not None:
            groups.setdefault(job.array, []).append(job)
    for key, members in groups.items():
        for job in members[1:]:
            for attribute in ("resources", "depends_on", "requeue"):
                if getattr(job, attribute) != getattr(members[0], attribute):
                    raise ValueError(f"array {key!r}: {job.name!r} and {members[0].name!r} differ in {attribute}; "
                                     "tasks of one array share resources, dependencies and requeue policy")


def _units(jobs: list[Job], chain: bool) -> list[list[Job]]:
    """Submission units in order: single jobs, and arrays at the position of their first task."""
    if chain:
        return [[job] for job in jobs]
    units: list[list[Job]] = []
    arrays: dict[str, list[Job]] = {}
    for job in jobs:
        if job.array is None:
            units.append([job])
        elif job.array in arrays:
            arrays[job.array].append(job)
        else:
            arrays[job.array] = [job]
            units.append(arrays[job.array])
    return units


def exit_record(job: SubmittedJob) -> dict[str, Any] | None:
    """The job's ``slurm-exit.json`` (state, exit code, start and end), when written for this job id."""
    path = job.run_dir / "slurm-exit.json"
    if not path.exists():
        return None
    record = fileio.read_json(path)
    return record if record.get("job_id") == job.job_id else None


def _run(command: list[str], *, what: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise SlurmError(f"{command[0]} not found: is SLURM installed and on PATH?") from None
    if check and result.returncode != 0:
        raise SlurmError(f"{what} failed (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return result


def _id_order(job_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in job_id.split("_"))


def slug(text: str | None) -> str:
    """``text`` as one safe file-name component (for the SLURM folders of jobs and arrays)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text or "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
