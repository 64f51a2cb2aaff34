"""``python -m heritage paper``: the whole compendium, from the data folder to ``paper/index.html``.

1. Make sure the data folder exists: by default the synthetic stand-in (synth -> ingest -> augment
   -> split, each step only when its output is missing); ``--data`` ingests real ARTeFACT shards or
   an exported folder instead.
2. Plan the runs (``config.plan``: POC x variant x encoder x fold).
3. Execute each POC notebook with papermill into its run folder (``notebook.ipynb``) and render it
   to HTML (``report.html``). A run is skipped when its outputs are complete and were made for the
   same inputs: the config hash, the notebook template and the run's ``metrics.json``.
4. Execute ``99_comparison`` last (``paper/99_comparison.ipynb`` + ``.html``), only when a run
   changed or its own outputs are missing, and write ``paper/index.html``.

A scheduler decides where notebooks execute: ``local`` runs them here one after the other, ``slurm``
submits them as batch jobs (heritage.pipeline.slurm). Each job is also a JSON file that
``python -m heritage paper --execute JOB.json`` executes on its own, which is what a batch job runs.
A failed notebook does not stop the others; it is reported with the path of its executed notebook
and the command exits non-zero at the end.

The parts live beside this module: run_configs (a notebook's configuration), jobs, execution,
schedulers (local), on_slurm, preparation (the data folder), index_page (``paper/index.html``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from heritage import errors, fileio
from heritage.training import runs
from heritage.pipeline.execution import (_first_line, check_parameters, ensure_kernel, execute_notebook, render_html,
                                         run_job)
from heritage.pipeline.index_page import write_index
from heritage.pipeline.jobs import (NotebookJob, comparison_job, damage_maps_job, dataset_job, is_up_to_date,
                                    run_job_for)
from heritage.pipeline.on_slurm import SlurmPlanScheduler
from heritage.pipeline.preparation import REAL_DATA_DIR, SYNTHETIC, prepare_data
from heritage.pipeline.run_configs import REPO_ROOT, comparison_parameters, planned_configs
from heritage.pipeline.schedulers import DONE, FAILED, SKIPPED, SUBMITTED, JobResult, LocalScheduler, Scheduler, finals

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def make_scheduler(name: str, args: argparse.Namespace) -> Scheduler:
    if name == "local":
        if args.no_wait or args.attach:
            raise errors.InputError("--no-wait and --attach apply to --scheduler slurm only")
        return LocalScheduler(execute_notebook)
    if name == "slurm":
        return SlurmPlanScheduler(profile=args.profile, runs_root=args.runs_root, wait=not args.no_wait,
                              attach=args.attach)
    raise errors.InputError(f"unknown scheduler {name!r} (local, slurm)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=("smoke", "full"), default="smoke", help="default: %(default)s")
    parser.add_argument("--scheduler", choices=("local", "slurm"), default="local", help="default: %(default)s")
    parser.add_argument("--data", default=None,
                        help="real data: HF parquet shards, an exported folder, or a ready data folder "
                             "(default: the synthetic stand-in of the profile)")
    parser.add_argument("--data-dir", default=None, help="where to put the ingested data folder "
                        f"(default: {SYNTHETIC['smoke']['data_dir']} / {SYNTHETIC['full']['data_dir']} "
                        f"for the synthetic data, {REAL_DATA_DIR} for --data)")
    parser.add_argument("--pocs", nargs="+", default=None, help="POC keys (default: all)")
    parser.add_argument("--set", nargs="+", default=None, metavar="KEY=VALUE", dest="settings",
                        help="RunConfig fields applied to every run of the plan, values parsed as YAML "
                             "(pretrained=false epochs=10); they enter each run's config hash")
    parser.add_argument("--keep-stale", action="store_true",
                        help="keep finished runs made by other code (heritage's data, modeling, config and "
                             "training packages) instead of training them again; every table, figure and the "
                             "index then say which runs predate the current code")
    parser.add_argument("--runs-root", default="runs", type=Path, help="default: %(default)s")
    parser.add_argument("--paper-dir", default="paper", type=Path, help="default: %(default)s")
    parser.add_argument("--notebooks", default=NOTEBOOKS_DIR, type=Path,
                        help="notebook templates (default: %(default)s)")
    parser.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    parser.add_argument("--attach", action="store_true", help="slurm: follow the last submission")
    parser.add_argument("--prepare-data-only", action="store_true", help="make the data folder and stop")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render HTML of already executed notebooks and the index; execute nothing")
    parser.add_argument("--execute", type=Path, default=None, metavar="JOB_JSON",
                        help="execute one job description file (what a batch job runs)")


def main(args: argparse.Namespace) -> int:
    if args.execute is not None:
        return execute_job_file(args.execute)
    started = time.perf_counter()
    scheduler = make_scheduler(args.scheduler, args)  # wrong options fail before minutes of data preparation
    if not (args.prepare_data_only or args.render_only or args.attach):
        check_plan(args.profile, args.pocs, args.settings)  # and so do wrong settings and missing weights
    data_dir = prepare_data(args.profile, args.data, args.data_dir)
    if args.prepare_data_only:
        print(f"data folder ready: {data_dir}")
        return 0
    configs = planned_configs(args.profile, args.pocs, data_dir, args.runs_root, args.settings)
    code = runs.code_hash()
    jobs = [dataset_job(data_dir, args.notebooks, args.paper_dir),
            *(run_job_for(c, args.notebooks, None if args.keep_stale else code) for c in configs)]
    comparison = comparison_job(configs, args.notebooks, args.paper_dir, comparison_parameters(
        args.profile, args.pocs, data_dir, args.runs_root, args.paper_dir, args.settings), code)
    maps = damage_maps_job(configs, args.notebooks, args.paper_dir, code_hash=code)
    if args.render_only:
        for job in [*jobs, comparison, *finals(maps)]:
            if job.output.is_file():
                render_html(job.output, job.html)
        print(f"index: {write_index(args.paper_dir, jobs, comparison, {})}")
        return 0
    for job in [*jobs, comparison, *finals(maps)]:  # a template that lost a parameter fails now, not after hours of runs
        check_parameters(job.template, job.parameters)
    ensure_kernel()  # here, before any batch job needs it
    say_stale(jobs, code, args.keep_stale)
    results = run_paper(jobs, comparison, scheduler, maps)
    return report_results(results, args.paper_dir, jobs, comparison, time.perf_counter() - started)


def check_plan(profile: str, pocs: Sequence[str] | None, settings: Sequence[str] | None) -> None:
    """Before the data is prepared and any job starts: ``--set`` resolves for every run of the plan (keys
    and values, each error naming them), and the encoders of the plan's pretrained runs have their ImageNet
    weights in the Hugging Face cache (else the error names them and the command that fetches them)."""
    from heritage import config

    given = config.parse_overrides(settings)
    for key, option in (("data_dir", "--data / --data-dir (make paper DATA=...)"), ("runs_root", "--runs-root")):
        if key in given:
            raise config.ConfigError(f"--set {key}=...: the paper takes it from {option}; give it there")
    try:
        planned = config.plan_settings(profile, pocs, given)
    except config.ConfigError as err:
        if not settings:
            raise
        raise config.ConfigError(f"--set {' '.join(settings)}: {err}") from None
    pretrained = [setting.encoder for setting in planned if setting.pretrained]
    if pretrained:
        from heritage.modeling import pretrained_weights

        pretrained_weights.require_cached(pretrained, f"the {profile} plan's pretrained runs (pretrained: true)")


def say_stale(jobs: Sequence[NotebookJob], code: str, keep: bool) -> None:
    """One line when finished runs of the plan were made by other code than ``code``: what happens to them."""
    stale = [job.name for job in jobs if job.run_dir is not None and (job.run_dir / runs.METRICS_FILE).is_file()
             and runs.recorded_code_hash(job.run_dir) != code]
    if not stale:
        return
    if keep:
        print(f"paper: {len(stale)} finished run(s) predate the current code (code hash {code}) and are kept "
              "(--keep-stale): the tables, figures and index say which")
    else:
        print(f"paper: {len(stale)} finished run(s) were made by other code than the current (code hash {code}) "
              "and train again (KEEP_STALE=1 / --keep-stale keeps them)")


def execute_job_file(path: Path) -> int:
    """``--execute``: run one job description; exit 75 when training stopped on a signal (requeue me),
    1 (:class:`errors.CommandFailed`) when a cell failed."""
    from papermill.exceptions import PapermillExecutionError

    values = fileio.read_json(path)
    try:
        job = NotebookJob.from_json(values)
    except errors.InputError as err:
        raise errors.InputError(f"{path}: {err}") from None
    check_parameters(job.template, job.parameters)  # before registering a kernel for nothing
    ensure_kernel()
    try:
        run_job(job, execute_notebook)
    except PapermillExecutionError as err:
        if err.ename != "Interrupted":  # heritage.training.engine.Interrupted: checkpoint written, resume later
            raise errors.CommandFailed(f"{job.name}: {_first_line(err)}; executed notebook: {job.output}") from err
        print(f"{job.name}: {err.evalue}; executed notebook: {job.output}", file=sys.stderr)
        return errors.EXIT_REQUEUE
    return 0


def run_paper(jobs: Sequence[NotebookJob], comparison: NotebookJob, scheduler: Scheduler,
              damage_maps: NotebookJob | None = None) -> list[JobResult]:
    """Skip up-to-date runs, hand the rest (and the comparison and damage maps, when needed) to ``scheduler``."""
    pending = [job for job in jobs if not is_up_to_date(job)]
    skipped = [JobResult(job, SKIPPED) for job in jobs if job not in pending]
    for result in skipped:
        print(result.line())
    final = []
    for job in (comparison, damage_maps):
        if job is None:
            continue
        # the comparison follows any executed job; the damage maps only the runs whose metrics they read
        follows = pending if job is comparison else [p for p in pending if p.run_dir is not None
                                                     and p.run_dir / runs.METRICS_FILE in job.inputs]
        if follows or not is_up_to_date(job):
            final.append(job)
        else:
            skipped.append(JobResult(job, SKIPPED))
            print(skipped[-1].line())
    print(f"paper: {len(pending)} of {len(jobs)} notebooks to execute, comparison "
          f"{'to execute' if comparison in final else 'up to date'}"
          + ("" if damage_maps is None else f", damage maps {'to make' if damage_maps in final else 'up to date'}"))
    return [*skipped, *scheduler.run(pending, final)]


def report_results(results: Sequence[JobResult], paper_dir: Path, jobs: Sequence[NotebookJob],
                   comparison: NotebookJob, seconds: float) -> int:
    """Write the index, list failures with their executed notebooks; exit status 1 if any failed."""
    index = write_index(paper_dir, jobs, comparison, {r.job.name: r for r in results})
    failed = [r for r in results if r.state == FAILED]
    counts = {state: sum(r.state == state for r in results) for state in (DONE, SKIPPED, SUBMITTED, FAILED)}
    print(f"paper: {', '.join(f'{n} {s}' for s, n in counts.items() if n)} in {seconds:.0f} s; index: {index}")
    if counts[SUBMITTED]:
        print("paper: jobs submitted; follow them with `python -m heritage paper --scheduler slurm --attach`")
    if failed:
        print(f"paper: {len(failed)} notebook(s) failed:", file=sys.stderr)
        for result in failed:
            print(f"  {result.job.name}: {result.error}\n    see {result.job.output}", file=sys.stderr)
        return 1
    return 0
