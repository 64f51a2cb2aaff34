"""``--scheduler slurm``: notebook jobs as batch jobs of the generic scheduler (heritage.pipeline.slurm),
and their outcomes as JobResults.

The adapter is apart from slurm.py, which knows nothing of notebooks, and from the local scheduler.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from heritage.pipeline import slurm, slurm_site
from heritage.pipeline.jobs import NotebookJob, job_command, write_job_file
from heritage.pipeline.schedulers import DONE, FAILED, SUBMITTED, JobResult, finals


@dataclass(frozen=True)
class SlurmPlanOptions:
    """How :func:`run_plan_on_slurm` submits and follows: the site's ``profile`` of resources, the
    ``runs_root`` holding the submission record, whether to ``wait`` for the jobs or ``attach`` to the
    recorded submission, ``chain`` (one job after another), the ``site`` file (None: loaded) and the
    ``poll_seconds`` (None: ``$HERITAGE_SLURM_POLL_SECONDS`` or 15 s)."""

    profile: str
    runs_root: str | os.PathLike
    wait: bool = True
    attach: bool = False
    chain: bool = False
    site: slurm_site.Site | None = None
    poll_seconds: float | None = None


class SlurmPlanScheduler:
    """``--scheduler slurm``: the jobs as SLURM batch jobs (:func:`run_plan_on_slurm`).

    Each job becomes a batch job running ``job_command(write_job_file(job))``; ``final`` depends on
    all of them. It returns one JobResult per job (state ``submitted`` when not waiting); with
    ``attach`` it follows the recorded submission instead of submitting.
    """

    def __init__(self, *, profile: str, runs_root: Path, wait: bool, attach: bool) -> None:
        self.waits = wait
        self.options = SlurmPlanOptions(profile=profile, runs_root=Path(runs_root), wait=wait, attach=attach)

    def run(self, jobs: Sequence[NotebookJob], final: NotebookJob | Sequence[NotebookJob] | None
            ) -> list[JobResult]:
        return run_plan_on_slurm(jobs, finals(final), write_job_file=write_job_file, job_command=job_command,
                                 options=self.options)


def run_plan_on_slurm(jobs: Sequence[NotebookJob], final: Sequence[NotebookJob], *,
                      job_command: Callable[[Path], list[str]], write_job_file: Callable[[NotebookJob], Path],
                      options: SlurmPlanOptions) -> list[JobResult]:
    """Run the notebook jobs as batch jobs of :class:`heritage.pipeline.slurm.SlurmScheduler`; one JobResult per job.

    Each job becomes a batch job running ``job_command(write_job_file(job))``. Runs (jobs with a
    ``run_dir``, named ``<poc>/<encoder>/<split>``) of one POC x encoder form an array; ``final`` (the
    comparison, the damage maps) depends ``afterok`` on every other job. Jobs without a run folder
    (dataset, comparison, damage-maps) keep their SLURM files in ``<runs_root>/.slurm-<name>``.
    Resources come from the site file (:func:`heritage.pipeline.slurm_site.load_site`): kind ``run`` for runs, else
    the job's name (``dataset``, ``comparison``, ``damage-maps``). ``options.wait=False`` returns after
    submitting (state ``submitted``); ``options.attach=True`` submits nothing and follows
    ``<runs_root>/.slurm-submission.json`` instead; ``options.chain=True`` runs the jobs one after another
    (fair throughput measurements). The poll interval defaults to ``$HERITAGE_SLURM_POLL_SECONDS`` or 15 s.
    """
    submission_file = Path(options.runs_root) / slurm.SUBMISSION_FILE
    poll_seconds = options.poll_seconds or float(os.environ.get(slurm.POLL_SECONDS_VARIABLE, 15))
    notebook_jobs = {job.name: job for job in [*jobs, *final]}
    if options.attach:
        scheduler = slurm.SlurmScheduler.attach(submission_file, poll_seconds=poll_seconds)
        print(f"slurm: following {len(scheduler.jobs)} jobs of {submission_file}")
        return _slurm_results(scheduler, notebook_jobs)
    if not notebook_jobs:
        return []
    if submission_file.exists():  # two jobs must never train into one run folder at once
        previous = slurm.SlurmScheduler.attach(submission_file).status()
        active = sorted({s.job_id.split("_")[0] for s in previous.values() if s.state in (slurm.QUEUED, slurm.RUNNING)},
                        key=int)
        if active:
            raise slurm.SlurmError(f"jobs of the previous submission ({submission_file}) are still queued or running: "
                                   f"follow them with --attach, or cancel them first: scancel {' '.join(active)}")
    batch = slurm_jobs(jobs, final, [job_command(write_job_file(job)) for job in [*jobs, *final]],
                       options.site or slurm_site.load_site(), options.profile, options.runs_root)
    scheduler = slurm.SlurmScheduler(submission_file, poll_seconds=poll_seconds)
    ids = scheduler.submit(batch, chain=options.chain)
    slurm_ids = sorted({job_id.split("_")[0] for job_id in ids.values()}, key=int)
    print(f"slurm: submitted {len(ids)} jobs as SLURM jobs {', '.join(slurm_ids)}; record: {submission_file}")
    if not options.wait:
        return [JobResult(job, SUBMITTED) for job in notebook_jobs.values()]
    return _slurm_results(scheduler, notebook_jobs)


def slurm_jobs(jobs: Sequence[NotebookJob], final: Sequence[NotebookJob], commands: Sequence[Sequence[str]],
               site: slurm_site.Site, profile: str, runs_root: str | os.PathLike) -> list[slurm.Job]:
    """The batch jobs of ``[*jobs, *final]`` (``commands`` in that order): a run's array key is its
    ``<poc>/<encoder>`` (the name without the split), its resources the site's kind ``run``; the
    others' SLURM files go to ``<runs_root>/.slurm-<name>``, their kind is their name; each of
    ``final`` depends on every job."""
    batch = []
    for index, job in enumerate([*jobs, *final]):
        depends_on = tuple(other.name for other in jobs) if index >= len(jobs) else ()
        if job.run_dir is not None:
            batch.append(slurm.Job(job.name, tuple(commands[index]), job.run_dir, resources=site.resources(profile, "run"),
                                   depends_on=depends_on, array=job.name.rsplit("/", 1)[0]))
        else:
            batch.append(slurm.Job(job.name, tuple(commands[index]), Path(runs_root) / f".slurm-{slurm.slug(job.name)}",
                                   resources=site.resources(profile, job.name), depends_on=depends_on))
    return batch


def _slurm_results(scheduler: slurm.SlurmScheduler, notebook_jobs: Mapping[str, NotebookJob]) -> list[JobResult]:
    """Wait for the jobs, then one JobResult each (a failure names the job's log)."""
    followed = {name: scheduler.jobs[name].job_id for name in notebook_jobs if name in scheduler.jobs}
    statuses = scheduler.wait(followed)
    results = []
    for name, job in notebook_jobs.items():
        status = statuses.get(name)
        if status is None:
            results.append(JobResult(job, FAILED, error=f"not in the followed submission {scheduler.submission_file}"))
            continue
        record = slurm.exit_record(scheduler.jobs[name]) or {}
        seconds = float(record["finished"]) - float(record["started"]) if "started" in record else 0.0
        results.append(JobResult(job, DONE if status.state == DONE else FAILED, seconds,
                                 "" if status.state == DONE else status.describe()))
    return results

