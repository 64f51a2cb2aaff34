"""Executing one notebook job: papermill into its output, nbconvert to HTML, the stamp that marks it
done; checking a template's parameters first, the project's kernel, and a failure said in one line.

Everything that touches papermill, nbconvert or Jupyter is here, behind the jobs the schedulers run.

A half-executed notebook never looks finished: a job first removes its stamp, executed notebook and
HTML (about to be replaced, so no longer up to date), papermill executes into a temporary file beside
the output, the HTML is rendered from it, and only then is it renamed to the output and the stamp
written (durably, last). A job killed meanwhile (kill -9, a lost node) leaves a temporary named after
its dead owner, which the next execution removes, and no stamp: ``paper`` executes it again and skips
the jobs whose stamps match. A notebook whose cell failed is still renamed to the output, for
inspection (papermill marks the failed cell), without HTML or stamp.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from heritage import errors, fileio, process
from heritage.pipeline.jobs import NotebookJob, write_run_config

KERNEL_NAME = "heritage"
# The kernel shares our stderr: keep its app's start-up warnings (e.g. "running over TCP without
# encryption") off it, so a failure stays the one line the CLI prints. Cells' output is unaffected.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


Executor = Callable[[NotebookJob], None]


def run_job(job: NotebookJob, execute: Executor) -> None:
    """Execute one job and stamp it; raises on failure, leaving the executed notebook for inspection."""
    from heritage.pipeline import progress

    for path in (job.stamp, job.output, job.html):  # about to be replaced: not up to date until done
        path.unlink(missing_ok=True)
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
                                  "setting": progress.stamp_setting(job.config)}, durable=True)


def execute_notebook(job: NotebookJob) -> None:
    """papermill into a temporary beside ``job.output``, nbconvert to ``job.html``, then the rename to
    ``job.output`` (a notebook whose cell failed is renamed too, for inspection, without HTML).

    A SIGUSR1 received meanwhile (SLURM's warning before the time limit) is passed on to the
    kernel, where the training loop checkpoints and stops: the kernel runs in a session of its own,
    so a batch job's signals would not reach it. (SIGTERM is nbclient's: it shuts the kernel down,
    and the run resumes from its last epoch's checkpoint.)
    """
    import papermill

    check_parameters(job.template, job.parameters)  # papermill would only warn and run without them
    job.output.parent.mkdir(parents=True, exist_ok=True)
    fileio.remove_stale_temporaries(job.output.parent)  # what an execution killed mid-notebook left
    with fileio.atomic_path(job.output) as partial:
        try:
            with _forwarding_to_children(signal.SIGUSR1), warnings.catch_warnings():
                # the temporary's name ends in .tmp (so a dead owner's is recognised), not .ipynb
                warnings.filterwarnings("ignore", message=r"The specified file .* does not end in one of")
                papermill.execute_notebook(str(job.template), str(partial), parameters=job.parameters,
                                           kernel_name=KERNEL_NAME, language="python", cwd=str(job.template.parent),
                                           progress_bar=False, extra_arguments=KERNEL_ARGUMENTS)
        except Exception:
            if partial.is_file():  # a failed cell: keep the executed notebook for inspection (no HTML, no stamp)
                os.replace(partial, job.output)
            raise
        _record_output_path(partial, job.output)
        render_html(partial, job.html)


def _record_output_path(notebook: Path, output: Path) -> None:
    """papermill's metadata names the file it executed into (the temporary): name the output instead."""
    import nbformat

    executed = nbformat.read(str(notebook), as_version=4)
    if "papermill" in executed.metadata:
        executed.metadata["papermill"]["output_path"] = str(output)
        nbformat.write(executed, str(notebook))


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

    Notebooks then run in the project's environment whichever ``python3`` kernel Jupyter knows, with
    :data:`heritage.process.QUIET_ENVIRONMENT` (also in JupyterLab, which does not run ``python -m heritage``).
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        # the same environment's bin folder (not resolved: a venv's python links to the system one)
        same_python = bool(spec.argv) and (Path(os.path.abspath(spec.argv[0])).parent
                                           == Path(os.path.abspath(sys.executable)).parent)
        if same_python and spec.env == process.QUIET_ENVIRONMENT:
            return
    except NoSuchKernel:
        pass  # not registered yet: install it below
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name=f"{name} ({Path(sys.prefix).name})", prefix=sys.prefix,
            env=process.QUIET_ENVIRONMENT)


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

