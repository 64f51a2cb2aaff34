"""Executing one notebook job: papermill into its output, nbconvert to HTML, the stamp that marks it
done; checking a template's parameters first, the project's kernel, and a failure said in one line.

Everything that touches papermill, nbconvert or Jupyter is here, behind the jobs the schedulers run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from heritage import errors, fileio
from heritage.pipeline.jobs import NotebookJob, write_run_config

KERNEL_NAME = "heritage"
# The kernel shares our stderr: keep its app's start-up warnings (e.g. "running over TCP without
# encryption") off it, so a failure stays the one line the CLI prints. Cells' output is unaffected.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


Executor = Callable[[NotebookJob], None]


def run_job(job: NotebookJob, execute: Executor) -> None:
    """Execute one job and stamp it; raises on failure, leaving the executed notebook for inspection."""
    from heritage.pipeline import progress

    job.stamp.unlink(missing_ok=True)  # outputs about to be replaced are not up to date until done
    started = time.perf_counter()
    if job.run_dir is not None and job.code_hash is not None:
        from heritage.training import runs

        recorded = runs.retire_stale(job.run_dir, job.code_hash)  # else the notebook would reuse it
        if recorded is not None:
            print(f"{job.name}: made by other code (code hash {recorded}, now {job.code_hash}): training it again",
                  flush=True)
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

