"""The run folder: its layout, what is written into it, and when a run counts as finished.

``runs_root/<poc>[-<variant>]/<encoder>/<protocol>-<fold>/`` (see ARCHITECTURE.md) holds
``config.yaml``, ``environment.json``, ``class_weights.json``, ``history.csv``,
``checkpoint_last.pt`` (with the one before it, ``checkpoint_last.prev.pt``), ``checkpoint_best.pt``,
``predictions/<id>.png``, ``per_image.csv`` and, written last, ``metrics.json``: its presence (with a matching config
hash) means the run finished, and the resume checkpoints are then deleted.
Every file is written atomically (temporary file + rename), so an interrupted job never leaves a
half-written file behind; checkpoints are also flushed to disk before the rename, and resume falls
back to ``checkpoint_last.prev.pt`` when ``checkpoint_last.pt`` cannot be read anyway (a full disk,
a copy cut short).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import pickle
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from heritage import errors, fileio
from heritage.data import taxonomy
from heritage.config import RunConfig, run_dir

if TYPE_CHECKING:  # torch is imported where it is used: predict takes this module's names at import
    import torch

CONFIG_FILE = "config.yaml"
ENVIRONMENT_FILE = "environment.json"
CLASS_WEIGHTS_FILE = "class_weights.json"
HISTORY_FILE = "history.csv"
LAST_CHECKPOINT = "checkpoint_last.pt"
# The resume state before checkpoint_last.pt: resume falls back to it when the newest is unreadable.
PREVIOUS_CHECKPOINT = "checkpoint_last.prev.pt"
RESUME_CHECKPOINTS = (LAST_CHECKPOINT, PREVIOUS_CHECKPOINT)  # newest first
# What engine.fit needs from a resume state (a file without them is not one, e.g. a copied best).
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step", "loss_sum", "best",
               "history", "config_hash")
BEST_CHECKPOINT = "checkpoint_best.pt"
METRICS_FILE = "metrics.json"
# Per test image: its scores and class counts (ARCHITECTURE.md, run folder); written just before metrics.json.
PER_IMAGE_FILE = "per_image.csv"
PREDICTIONS_DIR = "predictions"
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME",
                   "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODELIST", "SLURM_RESTART_COUNT")
_PACKAGES = ("torch", "torchvision", "segmentation-models-pytorch", "timm", "albumentations", "numpy")
# The heritage packages whose code decides a run's numbers (what is read, learned, resolved, trained and
# scored); report/, pipeline/ and inference/ only show or apply finished runs and stay out of the code hash.
CODE_PACKAGES = ("data", "modeling", "config", "training")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def prepare(config: RunConfig) -> Path:
    """Create the run folder and write ``config.yaml`` and ``environment.json``; return the folder.

    Both contents are made first (the config hash needs the data folder), so a config that cannot be
    hashed leaves no folder behind.
    """
    folder = run_dir(config)
    text = config.to_yaml()
    environment = capture_environment()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission: the user's runs_root, not a bug
        raise errors.OutputError(f"{folder}: cannot create the run folder ({err.strerror or err}); "
                                 "check runs_root") from None
    fileio.write_text(folder / CONFIG_FILE, text)
    fileio.write_json(folder / ENVIRONMENT_FILE, environment)
    return folder


def is_complete(folder: str | os.PathLike, config: RunConfig, code: str | None = None) -> bool:
    """True when ``metrics.json`` exists and was written for exactly this configuration (and, given
    ``code``, by the code of that :func:`code_hash`)."""
    path = Path(folder) / METRICS_FILE
    if not path.exists():
        return False
    metrics = fileio.read_json(path)
    return metrics.get("config_hash") == config.config_hash() and (code is None or metrics.get("code_hash") == code)


def recorded_code_hash(folder: str | os.PathLike) -> str | None:
    """The ``code_hash`` a finished run's ``metrics.json`` records (None: unfinished, or made before it was recorded)."""
    path = Path(folder) / METRICS_FILE
    return fileio.read_json(path).get("code_hash") if path.is_file() else None


def retire_stale(folder: str | os.PathLike, code: str) -> str | None:
    """Make a run that other code than ``code`` made train again, from scratch: remove its ``metrics.json``
    (as ``train`` itself does when it starts), or, for an unfinished run whose last start recorded other code
    in ``environment.json``, its resume checkpoints. Returns the code hash found ("not recorded" for runs made
    before it was recorded), None when the run was made by ``code`` or there was nothing to retire."""
    folder = Path(folder)
    metrics = folder / METRICS_FILE
    if metrics.is_file():
        recorded = fileio.read_json(metrics).get("code_hash")
        if recorded == code:
            return None
        metrics.unlink()
        return recorded or "not recorded"
    environment = folder / ENVIRONMENT_FILE
    if not any((folder / name).is_file() for name in RESUME_CHECKPOINTS):
        return None
    recorded = fileio.read_json(environment).get("code_hash") if environment.is_file() else None
    if recorded == code:
        return None
    remove_resume_checkpoints(folder)
    return recorded or "not recorded"


def code_hash() -> str:
    """The hash of the code a run depends on: :func:`hash_code` of this installation, computed once per process
    (the code a process runs is the code it loaded)."""
    return _installed_code_hash()


@functools.lru_cache(maxsize=1)
def _installed_code_hash() -> str:
    return hash_code(PACKAGE_ROOT)


def hash_code(package_root: str | os.PathLike, packages: Sequence[str] = CODE_PACKAGES) -> str:
    """sha256 (16 hex digits) of the ``.py`` files under ``package_root/<package>`` for ``packages``, in the
    order of their paths relative to ``package_root``, each path with its content: the same on every machine
    and checkout of the same code (no mtimes, no git), changed by any edit, file added, removed or renamed."""
    root = Path(package_root)
    files = sorted((path.relative_to(root).as_posix(), path) for package in packages
                   for path in (root / package).rglob("*.py")
                   if not any(part.startswith(".") for part in path.relative_to(root).parts))  # editors' temp files
    digest = hashlib.sha256()
    for relative, path in files:
        digest.update(relative.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def capture_environment() -> dict[str, Any]:
    """Versions, device, git commit, host and scheduler ids: what is needed to explain a number."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "device": device_name(torch.device("cuda" if cuda else "cpu")),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "code_hash": code_hash(),
        "hostname": socket.gethostname(),
        "slurm": {k: os.environ[k] for k in SLURM_VARIABLES if k in os.environ},
        "command": sys.argv,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def device_name(device: torch.device) -> str:
    """"NVIDIA H100 80GB HBM3" or the CPU model: what a throughput number was measured on."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """``<sha>`` of the checkout holding this package (``<sha>-dirty`` with local changes), or None."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an installed wheel) or git missing: nothing to record
    return f"{sha}-dirty" if dirty else sha


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# -- history and checkpoints -------------------------------------------------------------------


def write_history(folder: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``history.csv`` (atomically) from all epoch rows so far."""
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    fileio.write_text(folder / HISTORY_FILE, buffer.getvalue())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file, so a kill mid-write keeps the previous checkpoint."""
    import torch

    with fileio.atomic_path(path) as tmp:
        torch.save(state, tmp)
        _fsync(tmp)


def _fsync(path: Path) -> None:
    """Flush the file's data to disk before it is renamed into place: a node crash after the rename
    must not leave an empty or truncated checkpoint under the final name."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def save_resume_checkpoint(folder: Path, state: dict[str, Any], rotate: bool = True) -> Path:
    """Write ``checkpoint_last.pt`` new-then-rotate: the new state is written and flushed in full, then the
    current ``checkpoint_last.pt`` becomes ``checkpoint_last.prev.pt`` and the new one takes its name.

    ``rotate=False`` overwrites ``checkpoint_last.pt`` and keeps ``checkpoint_last.prev.pt``: for the
    first write after resuming from the previous one (the newest was unreadable and must not become
    the fallback). Returns the path of ``checkpoint_last.pt``.
    """
    import torch

    last, previous = folder / LAST_CHECKPOINT, folder / PREVIOUS_CHECKPOINT
    with fileio.atomic_path(last) as tmp:
        torch.save(state, tmp)
        _fsync(tmp)
        if rotate and last.exists():  # a kill between the two renames leaves .prev, which resume takes
            os.replace(last, previous)
    return last


def load_resume_checkpoint(folder: Path, log: Callable[[str], None] | None = None
                           ) -> tuple[dict[str, Any], Path] | None:
    """The newest usable resume state of a run folder and its path, or None when there is none.

    ``checkpoint_last.pt`` first; when it is missing or unreadable (truncated, not a resume state),
    ``checkpoint_last.prev.pt`` with a warning through ``log`` (default: stderr). When checkpoint files
    exist but none is usable, raises :class:`~heritage.errors.InputError` naming the files to delete.
    """
    log = log or _warn
    found = [folder / name for name in RESUME_CHECKPOINTS if (folder / name).exists()]
    if not found:
        return None
    problems: list[str] = []
    for path in found:
        try:
            state = load_checkpoint(path)
            if not isinstance(state, dict) or not set(RESUME_KEYS) <= set(state):
                missing = sorted(set(RESUME_KEYS) - set(state)) if isinstance(state, dict) else list(RESUME_KEYS)
                raise errors.InputError(f"{path}: not a resume checkpoint (missing {missing})")
        except errors.InputError as err:
            problems.append(str(err))
            continue
        if path.name != LAST_CHECKPOINT:
            reason = problems[0] if problems else f"{folder / LAST_CHECKPOINT}: missing"
            log(f"warning: {reason}; resuming from {path} (the checkpoint before it)")
        return state, path
    names = " and ".join(str(path) for path in found)
    remove = " ".join(shlex.quote(str(path)) for path in found)
    raise errors.InputError(f"cannot resume the run in {folder}: {'; '.join(problems)}. Delete {names} to "
                            f"train this run from the start (`rm {remove}`)")


def remove_resume_checkpoints(folder: Path) -> None:
    """Delete ``checkpoint_last.pt`` and ``checkpoint_last.prev.pt`` (the run finished)."""
    for name in reversed(RESUME_CHECKPOINTS):  # the older first: a kill in between keeps the newest
        (folder / name).unlink(missing_ok=True)


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint this package wrote (tensors and plain containers only: ``weights_only``)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise errors.MissingInputError(f"{path}: checkpoint not found") from None
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        # torch reports a truncated file as RuntimeError, a damaged pickle as UnpicklingError
        reason = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise errors.InputError(f"{path}: cannot read checkpoint, the file is damaged or truncated "
                                f"({reason})") from None


def load_best_checkpoint(run: str | os.PathLike) -> dict[str, Any]:
    """A run folder's ``checkpoint_best.pt``: a dict holding ``model`` (the weights) and ``config`` (the
    run's config dict, with ``architecture``, ``encoder`` and ``image_size``). A missing, damaged or
    foreign file is one InputError line naming it."""
    path = Path(run) / BEST_CHECKPOINT
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: no best checkpoint (is {run} a finished run folder?)")
    checkpoint = load_checkpoint(path)  # a damaged file is an InputError there, not an UnpicklingError
    if not isinstance(checkpoint, dict):
        raise errors.InputError(f"{path}: not a heritage checkpoint (holds a {type(checkpoint).__name__})")
    missing = [k for k in ("model", "config") if k not in checkpoint]
    if missing:
        raise errors.InputError(f"{path}: checkpoint lacks {missing}")
    missing = [k for k in ("architecture", "encoder", "image_size") if k not in checkpoint["config"]]
    if missing:
        raise errors.InputError(f"{path}: checkpoint config lacks {missing}")
    return checkpoint


def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json``; call it last, its presence marks the run finished."""
    fileio.write_json(folder / METRICS_FILE, metrics)


def per_image_columns() -> dict[str, list[str]]:
    """per_image.csv's column groups: per class IoU and the counts IoU is made of (class names in taxonomy order)."""
    return {kind: [f"{kind}_{name}" for name in taxonomy.CLASS_NAMES] for kind in ("iou", "tp", "true", "pred")}


def per_image_table(ids: Sequence[str], source_ids: Sequence[str], confusion: np.ndarray) -> Any:
    """One row per image of its ``(16, 16)`` confusion: the per_image.csv contract (ARCHITECTURE.md).

    ``n_pixels`` (labelled), ``miou`` (over the classes present in the image's truth or prediction),
    ``all_clean_miou`` (predicting Clean on its labelled pixels), ``iou_<class>`` (NaN: absent from both),
    and ``tp_``/``true_``/``pred_<class>`` pixel counts: summed over images they give the dataset-level
    IoU (what the artwork bootstrap recomputes), their sums are the dataset confusion's diagonal, row and
    column sums.
    """
    import pandas as pd

    from heritage.modeling import metrics

    confusion = np.asarray(confusion, dtype=np.int64)
    if not len(ids) == len(source_ids) == len(confusion):
        raise ValueError(f"{len(ids)} ids, {len(source_ids)} source ids and {len(confusion)} confusions")
    true_positive, truth, predicted = metrics.class_counts(confusion)
    ious = metrics.iou_per_class(true_positive, truth, predicted)
    columns = per_image_columns()
    table = pd.DataFrame({"id": list(ids), "source_id": list(source_ids), "n_pixels": truth.sum(axis=1),
                          "miou": metrics.mean_iou(ious), "all_clean_miou": metrics.constant_prediction_mious(truth)})
    blocks = [pd.DataFrame(values, columns=columns[kind])
              for kind, values in (("iou", ious), ("tp", true_positive), ("true", truth), ("pred", predicted))]
    return pd.concat([table, *blocks], axis=1)


def write_per_image(folder: Path, table: Any) -> None:
    """Write ``per_image.csv`` (atomic; NaN written as ``NaN``; floats in full precision: deterministic)."""
    fileio.write_text(folder / PER_IMAGE_FILE, table.to_csv(index=False, na_rep="NaN", lineterminator="\n"))


def read_per_image(folder: str | os.PathLike) -> Any:
    """A run's ``per_image.csv``; a missing file or column is one InputError line naming the file."""
    import pandas as pd

    path = Path(folder) / PER_IMAGE_FILE
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: file not found (runs made before per-image scores were "
                                       "recorded lack it: re-run the run)")
    table = pd.read_csv(path, dtype={"id": str, "source_id": str}, keep_default_na=False, na_values=["NaN"])
    wanted = ["id", "source_id", "n_pixels", "miou", "all_clean_miou", *sum(per_image_columns().values(), [])]
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise errors.InputError(f"{path}: lacks column(s) {', '.join(missing)}")
    return table


def write_class_weights(folder: Path, weights: Sequence[float] | None, method: str | None,
                        max_ratio: float | None) -> None:
    per_class = None if weights is None else dict(zip(taxonomy.CLASS_NAMES, map(float, weights)))
    fileio.write_json(folder / CLASS_WEIGHTS_FILE,
                      {"method": method, "max_ratio": max_ratio, "weights": per_class})


# -- prediction panels -------------------------------------------------------------------------


def save_prediction_panel(path: Path, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                          title: str) -> None:
    """``image | ground truth | prediction`` in the taxonomy palette, with a legend of the classes shown.

    ``image`` is (H, W, 3) uint8; ``truth`` and ``prediction`` are (H, W) class ids (255 = Background).
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend
    from matplotlib.patches import Patch

    fig = Figure(figsize=(10.5, 4.0), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (("image", image), ("ground truth", taxonomy.mask_to_rgb(truth)),
              ("prediction", taxonomy.mask_to_rgb(prediction)))
    for ax, (name, picture) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    shown = sorted(set(np.unique(truth).tolist()) | set(np.unique(prediction).tolist()))
    handles = [Patch(facecolor=np.asarray(taxonomy.palette_array()[c]) / 255, edgecolor="grey",
                     label=taxonomy.CLASS_NAMES[c] if c < taxonomy.NUM_CLASSES else taxonomy.BACKGROUND_NAME)
               for c in shown]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize="small")
    fig.suptitle(title)
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)

