"""A POC notebook's configuration and folders: what ``heritage paper`` passes a notebook, and what the
notebook, run by papermill, by hand or under nbval, resolves it to.

The notebooks import this module alone, so it stays free of job execution and scheduling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from heritage import errors
from heritage.config import RunConfig
from heritage.pipeline.preparation import SYNTHETIC

REPO_ROOT = Path(__file__).resolve().parents[2]
# A POC notebook's one parameter: the resolved config.yaml of its run (None: the POC's smoke run).
CONFIG_PARAMETER = "config_path"
# Environment defaults for notebooks run by hand or under nbval (parameters left at None).
ENV_DATA = "HERITAGE_DATA"
ENV_RUNS = "HERITAGE_RUNS"
ENV_PAPER = "HERITAGE_PAPER"


def notebook_parameters(config: RunConfig) -> dict[str, Any]:
    """The papermill parameters of ``config``'s POC notebook: the path of the run folder's
    ``config.yaml``, which :func:`heritage.pipeline.jobs.write_run_config` writes before the notebook
    executes."""
    return {CONFIG_PARAMETER: str(run_config_path(config))}


def run_config_path(config: RunConfig) -> Path:
    from heritage import config as config_module
    from heritage.training import runs

    return config_module.run_dir(config).resolve() / runs.CONFIG_FILE


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
                          paper_dir: Path, settings: Sequence[str] | None = None) -> dict[str, Any]:
    """The comparison notebook's parameters: the plan it reads (profile, POCs, ``settings``: the ``--set``
    strings) and its folders."""
    return {"profile": profile, "pocs": list(pocs) if pocs else None, "settings": list(settings) if settings else None,
            "data_dir": str(data_dir.resolve()), "runs_root": str(runs_root.resolve()),
            "paper_dir": str(paper_dir.resolve())}


class NotebookFolders(NamedTuple):
    """A notebook's absolute folders (:func:`resolve_paths`)."""

    data_dir: Path
    runs_root: Path
    paper_dir: Path


def resolve_paths(data_dir: str | os.PathLike | None, runs_root: str | os.PathLike | None,
                  paper_dir: str | os.PathLike | None, profile: str = "smoke") -> NotebookFolders:
    """Absolute data, runs and paper folders of a notebook: the parameter when given, else
    $HERITAGE_DATA / $HERITAGE_RUNS / $HERITAGE_PAPER, else the compendium's layout in the repository
    (the profile's synthetic data, ``runs/``, ``paper/``), whatever the notebook's working directory.
    """
    from heritage import config

    if profile not in SYNTHETIC:
        raise config.ConfigError(f"unknown profile {profile!r}; profiles: {', '.join(SYNTHETIC)}")
    def pick(given: str | os.PathLike | None, variable: str, default: str) -> Path:
        return Path(given or os.environ.get(variable) or REPO_ROOT / default).resolve()

    return NotebookFolders(pick(data_dir, ENV_DATA, SYNTHETIC[profile]["data_dir"]),
                           pick(runs_root, ENV_RUNS, config.DEFAULT_RUNS_ROOT), pick(paper_dir, ENV_PAPER, "paper"))


def planned_configs(profile: str, pocs: Sequence[str] | None, data_dir: str | os.PathLike,
                    runs_root: str | os.PathLike, settings: Sequence[str] | None = None) -> list[RunConfig]:
    """``config.plan`` with absolute data and runs folders (the same hashes from any working directory) and
    ``settings`` (``key=value`` strings, ``paper --set``) applied to every run."""
    from heritage import config

    return config.plan(profile, pocs, Path(data_dir).resolve(),
                       overrides={**config.parse_overrides(settings), "runs_root": str(Path(runs_root).resolve())})


def ensure_trained(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """The metrics of ``config``'s run: read when the run is complete, else trained (or resumed) first."""
    from heritage import config as config_module
    from heritage import report
    from heritage.training import runs, train

    folder = config_module.run_dir(config)
    if runs.is_complete(folder, config):
        return report.load_metrics(folder / runs.METRICS_FILE)
    return train.run_training(config, progress=progress)

