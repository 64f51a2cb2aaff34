"""Notebook jobs: what one executed notebook is made from and for, when it is up to date, and the files
that describe it (its job description, a run's ``config.yaml``).

A job is plain data, so that a batch job can execute it from its JSON file (``paper --execute``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from heritage import errors, fileio
from heritage.config import RunConfig
from heritage.training.runs import METRICS_FILE
from heritage.pipeline.run_configs import CONFIG_PARAMETER, notebook_parameters

# A run folder's executed POC notebook and its HTML report (the training files: heritage.training.runs).
RUN_NOTEBOOK, RUN_REPORT = "notebook.ipynb", "report.html"
COMPARISON_NOTEBOOK = "99_comparison"
DATASET_NOTEBOOK = "00_dataset"


@dataclass(frozen=True)
class NotebookJob:
    """Execute ``template`` with ``parameters`` into ``output`` and render it to ``html``.

    ``key`` names what the outputs are made for (a config hash, or the plan's hashes for the
    comparison); ``inputs`` are files whose content the outputs depend on. The stamp written after
    success records both, and a job whose stamp matches and whose outputs exist is up to date.
    ``config`` (runs only: the RunConfig as a dict) must also pass ``runs.is_complete`` in ``run_dir``, and
    a run made by other code than ``code_hash`` (runs only: :func:`heritage.training.runs.code_hash` as
    ``paper`` saw it; None keeps a run whatever code made it) is not up to date and trains again.
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
    code_hash: str | None = None

    @property
    def stamp(self) -> Path:
        return stamp_of(self.output)

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


def stamp_of(output: Path) -> Path:
    """The stamp beside an executed notebook (``notebook.ipynb`` -> ``notebook.stamp.json``)."""
    return output.with_suffix(".stamp.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def run_job_for(config: RunConfig, notebooks_dir: Path, code_hash: str | None = None) -> NotebookJob:
    """The notebook job of one planned run: ``notebooks/<poc>.ipynb`` into the run folder; ``code_hash``:
    the code the run must have been trained by (None: any, ``paper --keep-stale``)."""
    from heritage import config as config_module

    folder = config_module.run_dir(config)
    template = notebooks_dir / f"{config.poc}.ipynb"
    return NotebookJob(
        name=f"{config.poc_key}/{config.encoder}/{config.split_name}", template=template,
        output=folder / RUN_NOTEBOOK, html=folder / RUN_REPORT, parameters=notebook_parameters(config),
        key=config.config_hash(), inputs=(template, folder / METRICS_FILE), required=(folder / METRICS_FILE,),
        run_dir=folder, config=config.to_dict(), code_hash=code_hash,
    )


def dataset_job(data_dir: Path, notebooks_dir: Path, paper_dir: Path) -> NotebookJob:
    """``00_dataset`` into ``paper_dir``; its inputs are the data folder's metadata and split manifests."""
    from heritage.data import datafolder, splits

    template = notebooks_dir / f"{DATASET_NOTEBOOK}.ipynb"
    manifests = tuple(splits.manifest_path(data_dir, protocol) for protocol in splits.ALL_PROTOCOLS)
    return NotebookJob(
        name="dataset", template=template, output=paper_dir / f"{DATASET_NOTEBOOK}.ipynb",
        html=paper_dir / f"{DATASET_NOTEBOOK}.html", parameters={"data_dir": str(data_dir.resolve())},
        key=str(data_dir.resolve()), inputs=(template, data_dir / datafolder.METADATA_FILE, *manifests),
    )


def comparison_job(configs: Sequence[RunConfig], notebooks_dir: Path, paper_dir: Path,
                   parameters: dict[str, Any], code_hash: str = "") -> NotebookJob:
    """The comparison notebook into ``paper_dir``; its inputs are every planned run's ``metrics.json``, its
    key the plan's config hashes and ``code_hash`` (the current code's: which runs predate it is shown)."""
    from heritage import config as config_module

    template = notebooks_dir / f"{COMPARISON_NOTEBOOK}.ipynb"
    plan_key = hashlib.sha256(" ".join([*(c.config_hash() for c in configs), code_hash]).encode()).hexdigest()
    return NotebookJob(
        name="comparison", template=template, output=paper_dir / f"{COMPARISON_NOTEBOOK}.ipynb",
        html=paper_dir / f"{COMPARISON_NOTEBOOK}.html", parameters=parameters, key=plan_key,
        inputs=(template, *(config_module.run_dir(c) / METRICS_FILE for c in configs)),
        required=(paper_dir / "provenance.json",),
    )


def damage_maps_job(configs: Sequence[RunConfig], notebooks_dir: Path, paper_dir: Path,
                    n_scans: int | None = None, code_hash: str = "") -> NotebookJob | None:
    """``damage_maps`` into ``paper_dir/damage-maps`` (heritage.report.gallery): the flagship's best main run
    predicts a few of its test scans. Its inputs are those runs' ``metrics.json``, its key includes
    ``code_hash`` (the current code's: the run's banner says when it predates it); None when the plan
    holds no main flagship run."""
    from heritage.report import gallery

    runs = gallery.planned_runs(configs)
    if not runs:
        return None
    n_scans = gallery.N_SCANS if n_scans is None else n_scans
    folder = paper_dir / gallery.GALLERY_DIR
    template = notebooks_dir / f"{gallery.NOTEBOOK}.ipynb"
    key = hashlib.sha256(" ".join([str(n_scans), *(h for _, h in runs), code_hash]).encode()).hexdigest()
    return NotebookJob(
        name="damage-maps", template=template, output=folder / f"{gallery.NOTEBOOK}.ipynb",
        html=folder / f"{gallery.NOTEBOOK}.html",
        parameters={"runs": runs, "out_dir": str(folder.resolve()), "n_scans": n_scans}, key=key,
        inputs=(template, *(Path(run_dir) / METRICS_FILE for run_dir, _ in runs)),
        required=(folder / gallery.INDEX_FILE,),
    )


def is_up_to_date(job: NotebookJob) -> bool:
    """Outputs complete and made for the same key and inputs (and, for a run, ``runs.is_complete``, by the
    job's ``code_hash`` when it has one)."""
    if not all(path.is_file() for path in (job.output, job.html, job.stamp, *job.required)):
        return False
    if job.config is not None:
        from heritage import config
        from heritage.training import runs

        if not runs.is_complete(job.run_dir, config.RunConfig.from_dict(job.config, source=job.name), job.code_hash):
            return False
    stamp = fileio.read_json(job.stamp)
    return stamp.get("fingerprint") == job.fingerprint()


def write_run_config(job: NotebookJob) -> None:
    """Write a run job's resolved config where its notebook reads it (the file ``train`` writes there
    too, with the same content)."""
    if job.config is None or CONFIG_PARAMETER not in job.parameters:
        return
    path = Path(job.parameters[CONFIG_PARAMETER])
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text(path, RunConfig.from_dict(job.config, source=job.name).to_yaml())


def job_command(job_file: Path) -> list[str]:
    """The command a batch job runs to execute one job description file."""
    return [sys.executable, "-m", "heritage", "paper", "--execute", str(job_file)]


def write_job_file(job: NotebookJob) -> Path:
    """Write the job description next to its executed notebook (``<output>.job.json``)."""
    path = job.output.with_suffix(".job.json")
    fileio.write_json(path, job.to_json())
    return path

