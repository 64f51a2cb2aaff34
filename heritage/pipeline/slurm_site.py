"""What a SLURM job asks for: :class:`Resources`, and the site file that sets them per profile and kind of job.

A site file (``heritage/configs/slurm/site.example.yaml``) is the one thing a cluster's user writes:
partition, account, GPUs, time limits, module loads. :func:`load_site` reads it (or
``$HERITAGE_SLURM_SITE_FILE``), checks every key against :class:`Resources` (a typo names the key and
the closest known one), and lets the environment override partition, account and QoS.
:meth:`Resources.sbatch_lines` turns one job's resources into ``#SBATCH`` lines for
:mod:`heritage.pipeline.slurm`. Like the scheduler, it imports nothing of the pipeline.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from heritage import fileio

SITE_FILE_VARIABLE = "HERITAGE_SLURM_SITE_FILE"
# Environment variables that override the site file, for one submission or one shell.
ENV_OVERRIDES = {
    "partition": "HERITAGE_SLURM_PARTITION",
    "account": "HERITAGE_SLURM_ACCOUNT",
    "qos": "HERITAGE_SLURM_QOS",
}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEMORY = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class Resources:
    """What one job asks SLURM for. ``gpus`` and ``mem`` are per node; one task per GPU by default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus: int = 0
    gpu_type: str | None = None
    tasks_per_node: int | None = None
    cpus_per_task: int = 1
    mem: str | None = None  # sbatch syntax: "32G", "500M" or megabytes
    time: str | None = None  # sbatch syntax: "MM", "HH:MM:SS", "D-HH:MM:SS"; None: the partition's default
    signal_seconds: int = 300  # USR1 this long before the time limit: checkpoint and requeue
    setup: tuple[str, ...] = ()  # shell lines before the command: module loads, venv activation
    sbatch_options: tuple[str, ...] = ()  # anything else, e.g. "--reservation=paper"

    def __post_init__(self) -> None:
        for name in ("nodes", "cpus_per_task"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f"gpus must be an integer >= 0, got {self.gpus!r}")
        if self.tasks_per_node is not None and (not isinstance(self.tasks_per_node, int) or self.tasks_per_node < 1):
            raise ValueError(f"tasks_per_node must be a positive integer, got {self.tasks_per_node!r}")
        if self.mem is not None and not _MEMORY.match(str(self.mem)):
            raise ValueError(f"mem must look like 32G, 500M or a number of megabytes, got {self.mem!r}")
        if self.time is not None and not isinstance(self.time, str):
            # YAML reads an unquoted 01:30:00 as the number 5400 (base 60), which sbatch takes as minutes.
            raise ValueError(f"time must be a quoted string such as \"01:30:00\", got the number {self.time!r}")
        limit = time_limit_seconds(self.time) if self.time is not None else None
        if not isinstance(self.signal_seconds, int) or self.signal_seconds <= 0:
            raise ValueError(f"signal_seconds must be a positive integer, got {self.signal_seconds!r}")
        if limit is not None and self.signal_seconds >= limit:
            raise ValueError(f"signal_seconds ({self.signal_seconds}) must be below the time limit "
                             f"({self.time} = {limit} s)")
        for name in ("setup", "sbatch_options"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(line, str) for line in value):
                raise ValueError(f"{name} must be a list of strings, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        for option in self.sbatch_options:
            if not option.startswith("--"):
                raise ValueError(f"sbatch_options entries are long options like '--reservation=x', got {option!r}")

    @property
    def tasks(self) -> int:
        """Tasks per node: one per GPU unless set."""
        return self.tasks_per_node or max(self.gpus, 1)

    def sbatch_lines(self) -> list[str]:
        options = [f"--nodes={self.nodes}", f"--ntasks-per-node={self.tasks}", f"--cpus-per-task={self.cpus_per_task}"]
        if self.time is not None:
            options.append(f"--time={self.time}")
        if self.mem is not None:
            options.append(f"--mem={self.mem}")
        if self.gpus:
            options.append(f"--gres=gpu:{self.gpu_type + ':' if self.gpu_type else ''}{self.gpus}")
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name):
                options.append(f"--{name}={getattr(self, name)}")
        options.extend(self.sbatch_options)
        return [f"#SBATCH {option}" for option in options]


_RESOURCE_KEYS = {f.name for f in dataclasses.fields(Resources)}
_SITE_KEYS = {"defaults", "profiles", "kinds"}


def time_limit_seconds(limit: str) -> int:
    """Seconds in an sbatch ``--time`` value (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``)."""
    match = _TIME.match(str(limit))
    if not match:
        raise ValueError(f"time must look like 90, 01:30:00 or 2-00:00:00, got {limit!r}")
    days, first, second, third = match.groups()
    fields = [int(f) for f in (first, second, third) if f is not None]
    if days is not None:  # D-HH | D-HH:MM | D-HH:MM:SS
        hours, minutes, seconds = fields + [0] * (3 - len(fields))
    elif len(fields) == 3:  # HH:MM:SS
        hours, minutes, seconds = fields
    else:  # MM | MM:SS
        hours, (minutes, seconds) = 0, fields + [0] * (2 - len(fields))
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class Site:
    """Resources per profile (``smoke``, ``full``) and per kind of job (``run``, ``dataset``, ``comparison``).

    Resolution, later layers win: ``defaults`` -> ``profiles[profile]`` -> ``kinds[kind]`` ->
    environment (``HERITAGE_SLURM_PARTITION``, ``_ACCOUNT``, ``_QOS``). A key replaces the earlier
    value (lists such as ``setup`` are replaced, not merged).
    """

    defaults: Mapping[str, Any] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    kinds: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "<no site file>"
    overrides: Mapping[str, str] = field(default_factory=dict)  # from the environment, win over the file

    def resources(self, profile: str, kind: str = "run") -> Resources:
        if self.profiles and profile not in self.profiles:
            raise ValueError(f"{self.source}: no SLURM resources for profile {profile!r} "
                             f"(profiles: {', '.join(self.profiles)})")
        values = {**self.defaults, **self.profiles.get(profile, {}), **self.kinds.get(kind, {}), **self.overrides}
        try:
            return Resources(**values)
        except ValueError as err:
            raise ValueError(f"{self.source}: profile {profile!r}, kind {kind!r}: {err}") from None


def load_site(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Site:
    """The site file ``path`` (else ``$HERITAGE_SLURM_SITE_FILE``; none: SLURM's defaults + environment)."""
    environ = os.environ if environ is None else environ
    overrides = {key: environ[variable] for key, variable in ENV_OVERRIDES.items() if environ.get(variable)}
    path = path or environ.get(SITE_FILE_VARIABLE)
    if not path:
        return Site(overrides=overrides)
    path = Path(path)
    spec = fileio.read_yaml(path, invalid=ValueError, missing=FileNotFoundError,
                            missing_text="SLURM site file not found") or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a site file is a mapping with {sorted(_SITE_KEYS)}")
    _check_keys(spec, _SITE_KEYS, f"{path}")
    defaults = spec.get("defaults") or {}
    _check_keys(defaults, _RESOURCE_KEYS, f"{path}: defaults")
    sections = {}
    for section in ("profiles", "kinds"):
        entries = spec.get(section) or {}
        if not isinstance(entries, dict):
            raise ValueError(f"{path}: {section} must map names to resources")
        for name, values in entries.items():
            _check_keys(values or {}, _RESOURCE_KEYS, f"{path}: {section}.{name}")
        sections[section] = {name: dict(values or {}) for name, values in entries.items()}
    return Site(defaults=dict(defaults), source=str(path), overrides=overrides, **sections)


def _check_keys(values: Any, known: set[str], where: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {values!r}")
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"
            raise ValueError(f"{where}: unknown key {key!r}{hint}")
