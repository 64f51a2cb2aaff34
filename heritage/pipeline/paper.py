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
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import html
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from heritage import errors, fileio
from heritage.pipeline import slurm
from heritage.config import DEFAULT_DATA_DIRS, RunConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
COMPARISON_NOTEBOOK = "99_comparison"
DATASET_NOTEBOOK = "00_dataset"
KERNEL_NAME = "heritage"
# The kernel shares our stderr: keep its app's start-up warnings (e.g. "running over TCP without
# encryption") off it, so a failure stays the one line the CLI prints. Cells' output is unaffected.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
# Synthetic stand-in per profile. Smoke: small images, so the whole smoke paper runs in minutes on
# a CPU (its runs train on 32 samples whatever the size of the set), and enough of them that a test
# fold holds ~50 images (holdout ~30) rather than a handful; full: the size of ARTeFACT. The folders
# are config's (DEFAULT_DATA_DIRS, a RunConfig's default data_dir).
SYNTHETIC = {
    "smoke": {"data_dir": DEFAULT_DATA_DIRS["smoke"], "n_images": 160, "longest_side": 96},
    "full": {"data_dir": DEFAULT_DATA_DIRS["full"], "n_images": 417, "longest_side": 512},
}
REAL_DATA_DIR = "data/artefact"
# A POC notebook's one parameter: the resolved config.yaml of its run (None: the POC's smoke run).
CONFIG_PARAMETER = "config_path"
# Environment defaults for notebooks run by hand or under nbval (parameters left at None).
ENV_DATA = "HERITAGE_DATA"
ENV_RUNS = "HERITAGE_RUNS"
ENV_PAPER = "HERITAGE_PAPER"
# A job's states are the scheduler's (heritage.pipeline.slurm), plus two of paper's own: skipped (up to date,
# not run) and submitted (handed to SLURM without waiting).
DONE, FAILED = slurm.DONE, slurm.FAILED
SKIPPED, SUBMITTED = "skipped", "submitted"
REQUEUE_EXIT_CODE = errors.EXIT_REQUEUE  # "checkpointed, run me again"


# -- a POC notebook's configuration ---------------------------------------------------------------------


def notebook_parameters(config: RunConfig) -> dict[str, Any]:
    """The papermill parameters of ``config``'s POC notebook: the path of the run folder's
    ``config.yaml``, which :func:`write_run_config` writes before the notebook executes."""
    return {CONFIG_PARAMETER: str(run_config_path(config))}


def run_config_path(config: RunConfig) -> Path:
    from heritage import config as config_module
    from heritage.training import runs

    return config_module.run_dir(config).resolve() / runs.CONFIG_FILE


def write_run_config(job: NotebookJob) -> None:
    """Write a run job's resolved config where its notebook reads it (the file ``train`` writes there
    too, with the same content)."""
    if job.config is None or CONFIG_PARAMETER not in job.parameters:
        return
    path = Path(job.parameters[CONFIG_PARAMETER])
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text(path, RunConfig.from_dict(job.config, source=job.name).to_yaml())


def poc_config(poc: str, config_path: str | os.PathLike | None = None) -> RunConfig:
    """A POC notebook's configuration: the resolved ``config_path`` (a run folder's ``config.yaml``, as
    ``heritage paper`` writes it), or without one the POC's smoke configuration, its data and runs
    folders from :func:`resolve_paths` (for a notebook run by hand or under nbval)."""
    from heritage import config

    if config_path is None:
        data_dir, runs_root, _ = resolve_paths(None, None, None, "smoke")
        return config.load_run_config(poc, "smoke", overrides={"data_dir": str(data_dir), "runs_root": str(runs_root)})
    path = Path(config_path)
    if not path.is_file():
        raise errors.MissingInputError(f"{CONFIG_PARAMETER}: {path} not found (a resolved config.yaml, as a "
                                       "run folder holds; None for this POC's smoke run)")
    resolved = RunConfig.from_yaml(path)
    if resolved.poc != poc:
        raise config.ConfigError(f"{path}: a configuration of {resolved.poc!r}, not of this notebook's {poc!r}")
    return resolved


def comparison_parameters(profile: str, pocs: Sequence[str] | None, data_dir: Path, runs_root: Path,
                          paper_dir: Path) -> dict[str, Any]:
    return {"profile": profile, "pocs": list(pocs) if pocs else None, "data_dir": str(data_dir.resolve()),
            "runs_root": str(runs_root.resolve()), "paper_dir": str(paper_dir.resolve())}


def resolve_paths(data_dir: str | os.PathLike | None, runs_root: str | os.PathLike | None,
                  paper_dir: str | os.PathLike | None, profile: str = "smoke") -> tuple[Path, Path, Path]:
    """Absolute data, runs and paper folders of a notebook: the parameter when given, else
    $HERITAGE_DATA / $HERITAGE_RUNS / $HERITAGE_PAPER, else the compendium's layout in the repository
    (the profile's synthetic data, ``runs/``, ``paper/``), whatever the notebook's working directory.
    """
    from heritage import config

    if profile not in SYNTHETIC:
        raise config.ConfigError(f"unknown profile {profile!r}; profiles: {', '.join(SYNTHETIC)}")
    def pick(given: str | os.PathLike | None, variable: str, default: str) -> Path:
        return Path(given or os.environ.get(variable) or REPO_ROOT / default).resolve()

    return (pick(data_dir, ENV_DATA, SYNTHETIC[profile]["data_dir"]),
            pick(runs_root, ENV_RUNS, config.DEFAULT_RUNS_ROOT), pick(paper_dir, ENV_PAPER, "paper"))


def planned_configs(profile: str, pocs: Sequence[str] | None, data_dir: str | os.PathLike,
                    runs_root: str | os.PathLike) -> list[RunConfig]:
    """``config.plan`` with absolute data and runs folders (the same hashes from any working directory)."""
    from heritage import config

    return config.plan(profile, pocs, Path(data_dir).resolve(),
                       overrides={"runs_root": str(Path(runs_root).resolve())})


def ensure_trained(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """The metrics of ``config``'s run: read when the run is complete, else trained (or resumed) first."""
    from heritage import config as config_module
    from heritage import report
    from heritage.training import runs, train

    folder = config_module.run_dir(config)
    if runs.is_complete(folder, config):
        return report.load_metrics(folder / runs.METRICS_FILE)
    return train.run_training(config, progress=progress)


# -- jobs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotebookJob:
    """Execute ``template`` with ``parameters`` into ``output`` and render it to ``html``.

    ``key`` names what the outputs are made for (a config hash, or the plan's hashes for the
    comparison); ``inputs`` are files whose content the outputs depend on. The stamp written after
    success records both, and a job whose stamp matches and whose outputs exist is up to date.
    ``config`` (runs only: the RunConfig as a dict) must also pass ``runs.is_complete`` in ``run_dir``.
    """

    name: str
    template: Path
    output: Path
    html: Path
    parameters: dict[str, Any]
    key: str
    inputs: tuple[Path, ...] = ()
    required: tuple[Path, ...] = ()
    run_dir: Path | None = None
    config: dict[str, Any] | None = None

    @property
    def stamp(self) -> Path:
        return self.output.with_suffix(".stamp.json")

    def fingerprint(self) -> str:
        """Hash of the key and the current content of every input (a missing input counts as such)."""
        digest = hashlib.sha256(self.key.encode())
        for path in self.inputs:
            digest.update(b"\0" + (hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"missing"))
        return digest.hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> NotebookJob:
        paths = {"template", "output", "html", "run_dir"}
        if not isinstance(values, Mapping):
            raise errors.InputError(f"a job description is a JSON object, got {type(values).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise errors.InputError(f"job description has unknown keys {unknown}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.name not in values]
        if required:
            raise errors.InputError(f"job description lacks the keys {required}")
        if not isinstance(values["parameters"], Mapping):
            raise errors.InputError("job description: 'parameters' must be a JSON object")
        converted = {k: (Path(v) if k in paths and v is not None else v) for k, v in values.items()}
        converted["inputs"] = tuple(Path(p) for p in values.get("inputs", ()))
        converted["required"] = tuple(Path(p) for p in values.get("required", ()))
        return cls(**converted)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def run_job_for(config: RunConfig, notebooks_dir: Path) -> NotebookJob:
    """The notebook job of one planned run: ``notebooks/<poc>.ipynb`` into the run folder."""
    from heritage import config as config_module

    folder = config_module.run_dir(config)
    template = notebooks_dir / f"{config.poc}.ipynb"
    return NotebookJob(
        name=f"{config.poc_key}/{config.encoder}/{config.split_name}", template=template,
        output=folder / "notebook.ipynb", html=folder / "report.html", parameters=notebook_parameters(config),
        key=config.config_hash(), inputs=(template, folder / "metrics.json"), required=(folder / "metrics.json",),
        run_dir=folder, config=config.to_dict(),
    )


def dataset_job(data_dir: Path, notebooks_dir: Path, paper_dir: Path) -> NotebookJob:
    """``00_dataset`` into ``paper_dir``; its inputs are the data folder's metadata and split manifests."""
    from heritage.data import ingest, splits

    template = notebooks_dir / f"{DATASET_NOTEBOOK}.ipynb"
    manifests = tuple(splits.manifest_path(data_dir, protocol) for protocol in splits.ALL_PROTOCOLS)
    return NotebookJob(
        name="dataset", template=template, output=paper_dir / f"{DATASET_NOTEBOOK}.ipynb",
        html=paper_dir / f"{DATASET_NOTEBOOK}.html", parameters={"data_dir": str(data_dir.resolve())},
        key=str(data_dir.resolve()), inputs=(template, data_dir / ingest.METADATA_FILE, *manifests),
    )


def comparison_job(configs: Sequence[RunConfig], notebooks_dir: Path, paper_dir: Path,
                   parameters: dict[str, Any]) -> NotebookJob:
    """The comparison notebook into ``paper_dir``; its inputs are every planned run's ``metrics.json``."""
    from heritage import config as config_module

    template = notebooks_dir / f"{COMPARISON_NOTEBOOK}.ipynb"
    plan_key = hashlib.sha256(" ".join(c.config_hash() for c in configs).encode()).hexdigest()
    return NotebookJob(
        name="comparison", template=template, output=paper_dir / f"{COMPARISON_NOTEBOOK}.ipynb",
        html=paper_dir / f"{COMPARISON_NOTEBOOK}.html", parameters=parameters, key=plan_key,
        inputs=(template, *(config_module.run_dir(c) / "metrics.json" for c in configs)),
        required=(paper_dir / "provenance.json",),
    )


def damage_maps_job(configs: Sequence[RunConfig], notebooks_dir: Path, paper_dir: Path,
                    n_scans: int | None = None) -> NotebookJob | None:
    """``damage_maps`` into ``paper_dir/damage-maps`` (heritage.report.gallery): the flagship's best main run
    predicts a few of its test scans. Its inputs are those runs' ``metrics.json``; None when the plan
    holds no main flagship run."""
    from heritage.report import gallery

    runs = gallery.planned_runs(configs)
    if not runs:
        return None
    n_scans = gallery.N_SCANS if n_scans is None else n_scans
    folder = paper_dir / gallery.GALLERY_DIR
    template = notebooks_dir / f"{gallery.NOTEBOOK}.ipynb"
    key = hashlib.sha256(" ".join([str(n_scans), *(h for _, h in runs)]).encode()).hexdigest()
    return NotebookJob(
        name="damage-maps", template=template, output=folder / f"{gallery.NOTEBOOK}.ipynb",
        html=folder / f"{gallery.NOTEBOOK}.html",
        parameters={"runs": runs, "out_dir": str(folder.resolve()), "n_scans": n_scans}, key=key,
        inputs=(template, *(Path(run_dir) / "metrics.json" for run_dir, _ in runs)),
        required=(folder / gallery.INDEX_FILE,),
    )


def is_up_to_date(job: NotebookJob) -> bool:
    """Outputs complete and made for the same key and inputs (and, for a run, ``runs.is_complete``)."""
    if not all(path.is_file() for path in (job.output, job.html, job.stamp, *job.required)):
        return False
    if job.config is not None:
        from heritage import config
        from heritage.training import runs

        if not runs.is_complete(job.run_dir, config.RunConfig.from_dict(job.config, source=job.name)):
            return False
    stamp = fileio.read_json(job.stamp)
    return stamp.get("fingerprint") == job.fingerprint()


Executor = Callable[[NotebookJob], None]


def run_job(job: NotebookJob, execute: Executor) -> None:
    """Execute one job and stamp it; raises on failure, leaving the executed notebook for inspection."""
    from heritage.pipeline import progress

    job.stamp.unlink(missing_ok=True)  # outputs about to be replaced are not up to date until done
    started = time.perf_counter()
    write_run_config(job)
    execute(job)
    missing = [str(p) for p in (job.output, job.html, *job.required) if not p.is_file()]
    if missing:
        raise errors.CommandFailed(f"{job.name}: the notebook ran but did not write {', '.join(missing)}")
    # seconds and setting: what later ETAs of runs like this one are estimated from (heritage.pipeline.progress)
    fileio.write_json(job.stamp, {"name": job.name, "key": job.key, "fingerprint": job.fingerprint(),
                                  "seconds": round(time.perf_counter() - started, 1),
                                  "setting": progress.stamp_setting(job.config)})


def execute_notebook(job: NotebookJob) -> None:
    """papermill into ``job.output`` (kept even when a cell fails), then nbconvert to ``job.html``.

    A SIGUSR1 received meanwhile (SLURM's warning before the time limit) is passed on to the
    kernel, where the training loop checkpoints and stops: the kernel runs in a session of its own,
    so a batch job's signals would not reach it. (SIGTERM is nbclient's: it shuts the kernel down,
    and the run resumes from its last epoch's checkpoint.)
    """
    import papermill

    check_parameters(job.template, job.parameters)  # papermill would only warn and run without them
    job.output.parent.mkdir(parents=True, exist_ok=True)
    with _forwarding_to_children(signal.SIGUSR1):
        papermill.execute_notebook(str(job.template), str(job.output), parameters=job.parameters,
                                   kernel_name=KERNEL_NAME, language="python", cwd=str(job.template.parent),
                                   progress_bar=False, extra_arguments=KERNEL_ARGUMENTS)
    render_html(job.output, job.html)


def notebook_parameter_names(template: Path) -> list[str] | None:
    """The names assigned in ``template``'s cell tagged ``parameters`` (papermill's own inspection of a
    Python cell), or None when it has no such cell."""
    import nbformat
    from papermill.translators import PythonTranslator

    try:
        notebook = nbformat.read(str(template), as_version=4)
    except FileNotFoundError:
        raise errors.MissingInputError(f"{template}: notebook template not found") from None
    except (OSError, ValueError, nbformat.ValidationError) as err:
        raise errors.InputError(f"{template}: not a readable notebook ({_one_line(str(err))})") from None
    cells = [cell for cell in notebook.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    return [parameter.name for parameter in PythonTranslator.inspect(cells[0])] if cells else None


def check_parameters(template: Path, parameters: Mapping[str, Any]) -> None:
    """Refuse parameters ``template`` does not declare, naming each with the nearest declared name."""
    import difflib

    known = notebook_parameter_names(template)  # read even without parameters: a missing template is ours to report
    if not parameters:
        return
    if known is None:
        raise errors.InputError(f"{template}: no cell tagged 'parameters', so the parameters "
                                f"{', '.join(map(repr, parameters))} would set nothing the notebook reads")
    unknown = [name for name in parameters if name not in known]
    if unknown:
        def named(name: str) -> str:
            close = difflib.get_close_matches(name, known, n=1)
            return f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")

        raise errors.InputError(f"{template}: unknown notebook parameter(s) {', '.join(map(named, unknown))}; "
                                f"its parameters: {', '.join(known) or 'none'}")


@contextlib.contextmanager
def _forwarding_to_children(signum: int) -> Iterator[None]:
    """While active, ``signum`` sent to this process goes to its child processes (the kernel) instead."""
    def forward(received: int, frame: Any) -> None:
        for pid in _child_pids():
            os.kill(pid, received)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signum, forward)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def _child_pids() -> list[int]:
    """Direct children of this process (Linux /proc; elsewhere none, and nothing is forwarded)."""
    return [int(pid) for children in Path(f"/proc/{os.getpid()}/task").glob("*/children")
            for pid in children.read_text().split()]


def render_html(notebook: Path, target: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    fileio.write_text(target, body)


def ensure_kernel(name: str = KERNEL_NAME) -> None:
    """Register the Jupyter kernel ``name`` for this interpreter (in ``sys.prefix``) unless it is there.

    Notebooks then run in the project's environment whichever ``python3`` kernel Jupyter knows.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        # the same environment's bin folder (not resolved: a venv's python links to the system one)
        if spec.argv and Path(os.path.abspath(spec.argv[0])).parent == Path(os.path.abspath(sys.executable)).parent:
            return
    except NoSuchKernel:
        pass  # not registered yet: install it below
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name=f"{name} ({Path(sys.prefix).name})", prefix=sys.prefix)


# -- schedulers ----------------------------------------------------------------------------------------


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


def _first_line(err: BaseException) -> str:
    """One line saying what failed: for a failed cell its exception, message, cell and first source line."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):  # str() of it is only a banner and the traceback
        source = next((line.strip() for line in (err.source or "").splitlines() if line.strip()), "")
        # In [n] as Jupyter shows it (papermill's cell_index misses the banner cell it adds on top)
        cell = f"In [{err.exec_count}]" if err.exec_count is not None else f"#{err.cell_index}, not executed"
        return f"{err.ename}: {_one_line(str(err.evalue))[:300]} (cell {cell}: {source[:120]})"
    text = str(err).strip().splitlines()
    # papermill's error text starts with a banner line; the exception name and message follow it
    lines = [line for line in text if line.strip() and not set(line.strip()) <= set("-=")]
    return (f"{type(err).__name__}: " + " | ".join(lines[:3]))[:500] if lines else type(err).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def job_command(job_file: Path) -> list[str]:
    """The command a batch job runs to execute one job description file."""
    return [sys.executable, "-m", "heritage", "paper", "--execute", str(job_file)]


def write_job_file(job: NotebookJob) -> Path:
    """Write the job description next to its executed notebook (``<output>.job.json``)."""
    path = job.output.with_suffix(".job.json")
    fileio.write_json(path, job.to_json())
    return path


def make_scheduler(name: str, args: argparse.Namespace) -> Scheduler:
    if name == "local":
        if args.no_wait or args.attach:
            raise errors.InputError("--no-wait and --attach apply to --scheduler slurm only")
        return LocalScheduler(execute_notebook)
    if name == "slurm":
        return SlurmPlanScheduler(profile=args.profile, runs_root=args.runs_root, wait=not args.no_wait,
                              attach=args.attach)
    raise errors.InputError(f"unknown scheduler {name!r} (local, slurm)")


class SlurmPlanScheduler:
    """``--scheduler slurm``: the jobs as SLURM batch jobs (:func:`run_plan_on_slurm`).

    Each job becomes a batch job running ``job_command(write_job_file(job))``; ``final`` depends on
    all of them. It returns one JobResult per job (state ``submitted`` when not waiting); with
    ``attach`` it follows the recorded submission instead of submitting.
    """

    def __init__(self, *, profile: str, runs_root: Path, wait: bool, attach: bool) -> None:
        self.waits = wait
        self.options = {"profile": profile, "runs_root": Path(runs_root), "wait": wait, "attach": attach}

    def run(self, jobs: Sequence[NotebookJob], final: NotebookJob | Sequence[NotebookJob] | None
            ) -> list[JobResult]:
        return run_plan_on_slurm(jobs, finals(final), write_job_file=write_job_file, job_command=job_command,
                                 **self.options)


def run_plan_on_slurm(jobs: Sequence[NotebookJob], final: Sequence[NotebookJob], *,
                      job_command: Callable[[Path], list[str]], write_job_file: Callable[[NotebookJob], Path],
                      profile: str, runs_root: str | os.PathLike, wait: bool = True, attach: bool = False,
                      chain: bool = False, site: slurm.Site | None = None,
                      poll_seconds: float | None = None) -> list[JobResult]:
    """Run the notebook jobs as batch jobs of :class:`heritage.pipeline.slurm.SlurmScheduler`; one JobResult per job.

    Each job becomes a batch job running ``job_command(write_job_file(job))``. Runs (jobs with a
    ``run_dir``, named ``<poc>/<encoder>/<split>``) of one POC x encoder form an array; ``final`` (the
    comparison, the damage maps) depends ``afterok`` on every other job. Jobs without a run folder
    (dataset, comparison, damage-maps) keep their SLURM files in ``<runs_root>/.slurm-<name>``.
    Resources come from the site file (:func:`heritage.pipeline.slurm.load_site`): kind ``run`` for runs, else
    the job's name (``dataset``, ``comparison``, ``damage-maps``). ``wait=False`` returns after
    submitting (state ``submitted``); ``attach=True`` submits nothing and follows
    ``<runs_root>/.slurm-submission.json`` instead; ``chain=True`` runs the jobs one after another
    (fair throughput measurements). The poll interval defaults to ``$HERITAGE_SLURM_POLL_SECONDS`` or 15 s.
    """
    submission_file = Path(runs_root) / slurm.SUBMISSION_FILE
    poll_seconds = poll_seconds or float(os.environ.get(slurm.POLL_SECONDS_VARIABLE, 15))
    notebook_jobs = {job.name: job for job in [*jobs, *final]}
    if attach:
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
                       site or slurm.load_site(), profile, runs_root)
    scheduler = slurm.SlurmScheduler(submission_file, poll_seconds=poll_seconds)
    ids = scheduler.submit(batch, chain=chain)
    slurm_ids = sorted({job_id.split("_")[0] for job_id in ids.values()}, key=int)
    print(f"slurm: submitted {len(ids)} jobs as SLURM jobs {', '.join(slurm_ids)}; record: {submission_file}")
    if not wait:
        return [JobResult(job, SUBMITTED) for job in notebook_jobs.values()]
    return _slurm_results(scheduler, notebook_jobs)


def slurm_jobs(jobs: Sequence[NotebookJob], final: Sequence[NotebookJob], commands: Sequence[Sequence[str]],
               site: slurm.Site, profile: str, runs_root: str | os.PathLike) -> list[slurm.Job]:
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


# -- data ------------------------------------------------------------------------------------------------


def prepare_data(profile: str, source: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None) -> Path:
    """Make sure a complete data folder exists and return it; every step runs only when its output is missing.

    Without ``source``: the synthetic stand-in of ``profile`` (SYNTHETIC). With ``source``: a data
    folder already (its ``metadata.csv`` has ``transform``) is used in place, anything else
    (parquet shards or an exported folder) is ingested into ``data_dir`` (default data/artefact).
    """
    from heritage.data import augment, ingest, splits, synthetic as synth

    if source is not None and _is_data_folder(Path(source)):
        target = Path(source)
    else:
        default = SYNTHETIC[profile]["data_dir"] if source is None else REAL_DATA_DIR
        target = Path(data_dir or default)
    if not (target / ingest.METADATA_FILE).is_file():
        if source is None:
            spec = SYNTHETIC[profile]
            shards = target.parent / f".{target.name}-parquet"
            if shards.exists():  # an interrupted earlier attempt: start the shards again
                shutil.rmtree(shards)
            print(f"data: writing the synthetic stand-in ({spec['n_images']} images) into {target}")
            synth.write_parquet(shards, n_images=spec["n_images"], longest_side=spec["longest_side"])
            ingest.ingest(shards, target, longest_side=None)
            shutil.rmtree(shards)
        else:
            print(f"data: ingesting {source} into {target}")
            ingest.ingest(source, target)
    metadata = ingest.read_metadata(target)
    if (metadata["transform"] == ingest.IDENTITY).all():
        augment.augment(target)
    outdated = [p for p in splits.ALL_PROTOCOLS if _manifest_outdated(target, p)]  # leaky too: the seeds' table
    if outdated:
        splits.write_manifests(target, outdated)
    return target


def _manifest_outdated(data_dir: Path, protocol: str) -> bool:
    """True when ``protocol``'s manifest is missing, or stale for the data folder as it is now (said)."""
    from heritage.data import splits

    if not splits.manifest_path(data_dir, protocol).is_file():
        return True
    try:
        splits.load_manifest(data_dir, protocol)
    except errors.InputError as err:
        print(f"data: rebuilding the {protocol} manifest: {err}")
        return True
    return False


def _is_data_folder(folder: Path) -> bool:
    from heritage.data import ingest

    metadata = folder / ingest.METADATA_FILE
    return metadata.is_file() and "transform" in metadata.read_text(encoding="utf-8").splitlines()[0].split(",")


# -- the index page ----------------------------------------------------------------------------------------


def write_index(paper_dir: Path, jobs: Sequence[NotebookJob], comparison: NotebookJob,
                results: Mapping[str, JobResult]) -> Path:
    """``paper/index.html``, a reader's landing page: the provenance banner, each research question's
    verdict and reason, links to ``paper.pdf`` (built first, :func:`heritage.report.publish.build_manuscript`)
    and the damage-map gallery, every table inline, every figure at full width, every run's report.

    ``jobs`` are the run jobs and the dataset job (the one without a run folder); links are relative.
    """
    from heritage.report import publish
    from heritage import report

    def link(path: Path, text: str) -> str:
        if not path.is_file():
            return f"<span class='missing'>{html.escape(text)} (missing)</span>"
        return f"<a href='{html.escape(os.path.relpath(path, paper_dir))}'>{html.escape(text)}</a>"

    built = publish.build_manuscript(paper_dir)
    if built is not None:
        print(f"paper: {built.message}", file=sys.stdout if built.pdf else sys.stderr)
    rows, others = [], []
    for job in jobs:
        if job.run_dir is None:
            others.append(f"The data at a glance: {link(job.html, 'report (HTML)')}, {link(job.output, 'notebook')}")
            continue
        metrics = fileio.read_json(job.run_dir / "metrics.json") if (job.run_dir / "metrics.json").is_file() else {}
        current = metrics.get("config_hash") == job.key
        miou, clean, per_image = (metrics["test"].get(k) if current else None
                                  for k in ("miou", "all_clean_miou", "per_image_miou"))
        above = "—" if miou is None or clean is None else "yes" if miou > clean else "no"
        state = results[job.name].state if job.name in results else (
            DONE if is_up_to_date(job) else "outdated" if job.output.is_file() else "not run")
        css_class = state.replace(" ", "-")
        cells = "".join(f"<td class='num'>{'—' if v is None else f'{100 * v:.2f}'}</td>"
                        for v in (miou, per_image, clean))  # the per-image mIoU beside the dataset-level one
        rows.append(f"<tr class='{css_class}'><td>{html.escape(job.name)}</td><td>{state}</td>{cells}"
                    f"<td>{above}</td><td>{link(job.html, 'report')}</td><td>{link(job.output, 'notebook')}</td></tr>")
    provenance_path = paper_dir / "provenance.json"
    provenance = publish.read_provenance(paper_dir)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>heritage: the compendium</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em}}
td,th{{padding:2px 8px;text-align:left;vertical-align:top}} td.num,table.data td{{text-align:right}}
table.data td:first-child{{text-align:left}} table{{border-collapse:collapse;margin:0.5em 0}}
tr:nth-child(even){{background:#f6f6f6}} th{{border-bottom:1px solid #999}}
tr.failed td{{background:#fdd}} .missing{{color:#999}} .banner{{color:#555}}
figure{{margin:1.5em 0}} figure.table{{overflow-x:auto}} li.verdict{{margin:0.4em 0}}
.files{{font-size:small}}</style></head>
<body><h1>Semantic segmentation of damage in heritage artworks</h1>
{report.banner_html(paper_dir)}
{publish.links_html(paper_dir)}
<h2>Research questions</h2>
{publish.findings_html(provenance)}
<p>Comparison: {link(comparison.html, 'report (HTML)')}, {link(comparison.output, 'notebook')},
{link(provenance_path, 'provenance.json')} (which runs made each table and figure).</p>
{''.join(f'<p>{item}</p>' for item in others)}
<h2>Tables</h2>
{publish.tables_html(paper_dir, provenance)}
<h2>Figures</h2>
{publish.figures_html(paper_dir, provenance)}
<h2>Runs</h2><table><tr><th>run</th><th>state</th><th>test mIoU (%), dataset-level</th>
<th>per-image mIoU (%)</th><th>all-Clean mIoU (%)</th><th>above all-Clean (dataset-level)</th><th>report</th><th>notebook</th></tr>
{''.join(rows)}</table></body></html>
"""
    path = paper_dir / "index.html"
    fileio.write_text(path, page)
    return path


# -- the command ---------------------------------------------------------------------------------------------


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
    data_dir = prepare_data(args.profile, args.data, args.data_dir)
    if args.prepare_data_only:
        print(f"data folder ready: {data_dir}")
        return 0
    configs = planned_configs(args.profile, args.pocs, data_dir, args.runs_root)
    jobs = [dataset_job(data_dir, args.notebooks, args.paper_dir), *(run_job_for(c, args.notebooks) for c in configs)]
    comparison = comparison_job(configs, args.notebooks, args.paper_dir, comparison_parameters(
        args.profile, args.pocs, data_dir, args.runs_root, args.paper_dir))
    maps = damage_maps_job(configs, args.notebooks, args.paper_dir)
    if args.render_only:
        for job in [*jobs, comparison, *finals(maps)]:
            if job.output.is_file():
                render_html(job.output, job.html)
        print(f"index: {write_index(args.paper_dir, jobs, comparison, {})}")
        return 0
    for job in [*jobs, comparison, *finals(maps)]:  # a template that lost a parameter fails now, not after hours of runs
        check_parameters(job.template, job.parameters)
    ensure_kernel()  # here, before any batch job needs it
    results = run_paper(jobs, comparison, scheduler, maps)
    return report_results(results, args.paper_dir, jobs, comparison, time.perf_counter() - started)


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
        return REQUEUE_EXIT_CODE
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
                                                     and p.run_dir / "metrics.json" in job.inputs]
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
