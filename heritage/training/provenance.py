"""A finished run's record and the provenance banner that says where shown numbers come from.

Its readers are every page that shows a run's numbers: the comparison's tables and figures
(``heritage.report``), predict's ``report.html`` and the damage-map gallery (:func:`run_banner`),
the paper's index (:func:`banner_html`). It reads ``metrics.json`` (:func:`load_metrics`, one row
per run: :func:`run_row`) and states the :class:`Banner`: profile, data and its fingerprint,
pretrained or from scratch, epochs, how many runs beat their all-Clean baseline, which runs predate the
current code (their ``code_hash`` differs from :func:`heritage.training.runs.code_hash`). It sits below
``predict`` and ``report`` (ARCHITECTURE.md, "Layers"), so both may import it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from heritage import errors, fileio
from heritage.training.runs import CONFIG_FILE, METRICS_FILE, code_hash

# heritage.data.synthetic.plan.sample_id starts every stand-in id with it; ARTeFACT's own ids are cuids ("c...").
SYNTHETIC_ID_PREFIX = "syn"
SYNTHETIC, ARTEFACT = "synthetic stand-in", "ARTeFACT"
# Stale runs a banner's text names (all are in its stale_runs, hence in provenance.json).
STALE_NAMED = 6
RUN_COLUMNS = [
    "run_dir", "poc", "variant", "encoder", "family", "architecture", "loss", "class_weights",
    "protocol", "fold", "profile", "pretrained", "seed", "config_hash", "code_hash", "image_size", "batch_size", "lr",
    "epochs",
    "sampling", "working_resolution", "max_train_samples",
    "params_m", "device", "best_epoch", "miou", "per_image_miou", "all_clean_miou", "pixel_accuracy", "binary_miou", "coarse_miou",
    "fine_miou", "train_images_per_s", "eval_images_per_s", "peak_memory_mb", "wall_time_s", "per_class",
    "seeds_miou", "seeds_all_clean_miou",  # test.seeds_convention: the seeds' metric on the same predictions
    # test.thin: thin damage as one class, the model's and the residual filter's (thin_recorded False: a run made
    # before it was recorded), the tolerant clIoU, and per thin class {"iou", "cliou", "filter_recall"}
    "thin_recorded", "thin_iou", "filter_thin_iou", "thin_cliou", "filter_thin_cliou", "filter_k", "thin_per_class",
]


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read one run's ``metrics.json`` and check the keys the tables need; errors name the file."""
    metrics = fileio.read_json(path)
    if not isinstance(metrics, dict):
        raise errors.InputError(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    missing = [k for k in ("poc", "encoder", "protocol", "fold", "config_hash", "test") if k not in metrics]
    missing += [f"test.{k}" for k in ("miou", "per_class") if k not in (metrics.get("test") or {})]
    if missing:
        raise errors.InputError(f"{path}: lacks {', '.join(missing)}")
    return metrics


def _pretrained(run_dir: Path, recorded: Any) -> bool | None:
    """``pretrained`` from metrics.json, else from the run's config.yaml; None when neither says."""
    if recorded is not None:
        return bool(recorded)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    import yaml

    value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("pretrained")
    return None if value is None else bool(value)


def run_row(metrics: dict[str, Any], run_dir: str) -> dict[str, Any]:
    test = metrics["test"]
    hierarchical = metrics.get("hierarchical") or {}
    throughput = metrics.get("throughput") or {}
    seeds = test.get("seeds_convention") or {}  # runs made before it was recorded: NaN
    row = {key: metrics.get(key) for key in RUN_COLUMNS}
    row.update(
        run_dir=run_dir, variant=metrics.get("variant") or "", miou=_number(test["miou"]),
        per_image_miou=_number(test.get("per_image_miou")),  # runs made before it was recorded: NaN
        pixel_accuracy=_number(test.get("pixel_accuracy")),
        all_clean_miou=_number(test.get("all_clean_miou")),  # runs made before it was recorded: NaN
        binary_miou=_number(hierarchical.get("binary_miou")),
        coarse_miou=_number(hierarchical.get("coarse_miou")),
        fine_miou=_number(hierarchical.get("fine_miou")),
        train_images_per_s=_number(throughput.get("train_images_per_s")),
        eval_images_per_s=_number(throughput.get("eval_images_per_s")),
        peak_memory_mb=_number(metrics.get("peak_memory_mb")),
        wall_time_s=_number(metrics.get("wall_time_s")),
        params_m=_number(metrics.get("params_m")),
        per_class={name: entry.get("iou") for name, entry in test["per_class"].items()},
        seeds_miou=_number(seeds.get("miou")), seeds_all_clean_miou=_number(seeds.get("all_clean_miou")),
        **thin_columns(test.get("thin")),
    )
    return row


def thin_columns(thin: dict[str, Any] | None) -> dict[str, Any]:
    """A run's ``test.thin`` as RUN_COLUMNS' thin columns (NaN and ``thin_recorded`` False for a run without it)."""
    if not thin:
        return {"thin_recorded": False, "thin_iou": math.nan, "filter_thin_iou": math.nan, "thin_cliou": math.nan,
                "filter_thin_cliou": math.nan, "filter_k": math.nan, "thin_per_class": {}}
    return {"thin_recorded": True, "thin_iou": _number(thin["model_iou"]), "filter_thin_iou": _number(thin["filter_iou"]),
            "thin_cliou": _number(thin["model"]["cliou"]), "filter_thin_cliou": _number(thin["filter"]["cliou"]),
            "filter_k": _number(thin["filter"]["k"]),
            "thin_per_class": {name: {"iou": entry["model_iou"], "cliou": entry["model_cliou"],
                                      "filter_recall": entry["filter_recall"]}
                               for name, entry in thin["per_class"].items()}}


def beats_filter(thin_iou: float, filter_thin_iou: float) -> bool | None:
    """Whether a model's thin-damage IoU is above the residual filter's on the same pixels (None: either undefined,
    e.g. a run without the record or a test part with no thin damage in truth, prediction or detections)."""
    if math.isnan(thin_iou) or math.isnan(filter_thin_iou):
        return None
    return thin_iou > filter_thin_iou


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Banner:
    """What every table and figure says about where its numbers come from."""

    profile: str  # the runs' profile(s), e.g. "smoke"
    data: str  # SYNTHETIC, ARTEFACT, or "unknown"
    data_fingerprint: str | None  # sha256 of the data folder's metadata.csv
    weights: str  # "trained from scratch", "ImageNet-pretrained", ...
    epochs: str  # "3" or "3-50"
    n_runs: int
    n_above_all_clean: int  # runs whose test mIoU is above their all-Clean mIoU
    n_with_all_clean: int  # runs that recorded an all-Clean mIoU
    n_above_filter: int = 0  # runs whose thin-damage IoU is above the residual filter's
    n_with_filter: int = 0  # runs that recorded both (test.thin, with thin damage in their test part)
    code_hash: str | None = None  # the current code's (runs.code_hash)
    stale_runs: tuple[str, ...] = ()  # runs made by other code (or not recording theirs): kept, not retrained

    @property
    def text(self) -> str:
        data = self.data + (f" (metadata.csv sha256 {self.data_fingerprint[:12]})" if self.data_fingerprint else "")
        if self.n_runs == 0:
            baseline = "no finished run"
        else:
            baseline = f"{self.n_above_all_clean} of {self.n_with_all_clean} runs beat their all-Clean baseline"
            if self.n_with_all_clean < self.n_runs:
                baseline += f" ({self.n_runs - self.n_with_all_clean} recorded none)"
            baseline += f"; {self.filter_text}"
        text = f"Provenance: {self.profile} profile; data: {data}; {self.weights}; {self.epochs} epochs; {baseline}."
        if self.stale_runs and self.n_runs == 1:
            text += (f" This run ({self.stale_runs[0]}) predates the current code (code hash {self.code_hash}): "
                     "kept, not retrained.")
        elif self.stale_runs:
            which = f"All {self.n_runs} runs" if len(self.stale_runs) == self.n_runs else (
                f"{len(self.stale_runs)} of {self.n_runs} runs")
            named = ", ".join(self.stale_runs[:STALE_NAMED]) + (
                f" and {len(self.stale_runs) - STALE_NAMED} more (provenance.json lists them)"
                if len(self.stale_runs) > STALE_NAMED else "")
            text += (f" {which} predate the current code (code hash {self.code_hash}) and were kept, not retrained: "
                     f"{named}.")
        if "smoke" in self.profile.split(", "):
            text += " Smoke profile: a pipeline check, not a measurement of the models."
        if self.data == SYNTHETIC:
            text += " Synthetic stand-in: these numbers say nothing about real artworks."
        return text

    @property
    def filter_text(self) -> str:
        """How many runs beat the residual filter on thin damage, as the banner says it."""
        if self.n_with_filter == 0:
            return "thin damage against the residual filter: not recorded"
        text = f"{self.n_above_filter} of {self.n_with_filter} beat the residual filter on thin damage"
        missing = self.n_runs - self.n_with_filter
        return text + (f" ({missing} not recorded or without thin damage)" if missing else "")

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "stale_runs": list(self.stale_runs), "text": self.text}


def data_kind(data_dir: str | Path) -> str:
    """SYNTHETIC when every original sample id is a stand-in id, ARTEFACT when none is."""
    from heritage.data import datafolder

    metadata = datafolder.read_metadata(data_dir)
    synthetic = metadata.loc[metadata["transform"] == datafolder.IDENTITY, "id"].str.startswith(SYNTHETIC_ID_PREFIX)
    return SYNTHETIC if synthetic.all() else ARTEFACT if not synthetic.any() else f"mixed ({SYNTHETIC} and other)"


def make_banner(runs: pd.DataFrame, planned: pd.DataFrame | None = None, data_dir: str | Path | None = None,
                profile: str | None = None) -> Banner:
    """The banner of a comparison: from the runs, or from the plan (and ``profile``) before any run."""
    from heritage.data import datafolder

    source = runs if len(runs) or planned is None else planned
    profiles = sorted({str(p) for p in runs["profile"].dropna()}) if len(runs) else []
    epochs = sorted({int(e) for e in source["epochs"].dropna()}) if "epochs" in source else []
    pretrained = list(source["pretrained"]) if "pretrained" in source else [None] * len(source)
    known = [bool(v) for v in pretrained if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not pretrained or len(known) < len(pretrained):
        weights = f"pretrained or from scratch: not recorded for {len(pretrained) - len(known)} of {len(pretrained)} runs"
    elif not any(known):
        weights = "trained from scratch"
    elif all(known):
        weights = "ImageNet-pretrained encoders"
    else:
        weights = f"{sum(known)} of {len(known)} runs ImageNet-pretrained, the rest trained from scratch"
    has_baseline = runs["all_clean_miou"].notna()
    current = code_hash()
    against_filter = [beats_filter(a, b) for a, b in zip(runs["thin_iou"], runs["filter_thin_iou"])]
    return Banner(
        profile=", ".join(profiles) or profile or "unknown",
        data=data_kind(data_dir) if data_dir is not None else "unknown",
        data_fingerprint=datafolder.metadata_fingerprint(data_dir) if data_dir is not None else None,
        weights=weights,
        epochs="unknown" if not epochs else str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}",
        n_runs=len(runs), n_with_all_clean=int(has_baseline.sum()),
        n_above_all_clean=int((runs["miou"][has_baseline] > runs["all_clean_miou"][has_baseline]).sum()),
        n_above_filter=sum(v is True for v in against_filter), n_with_filter=sum(v is not None for v in against_filter),
        code_hash=current, stale_runs=tuple(runs.loc[runs["code_hash"] != current, "run_dir"]),
    )


def run_banner(run_dir: str | Path) -> Banner:
    """The banner of one finished run (``metrics.json``; data from its config's ``data_dir`` when present)."""
    import yaml

    run_dir = Path(run_dir)
    row = run_row(load_metrics(run_dir / METRICS_FILE), "/".join(run_dir.parts[-3:]))  # <poc>/<encoder>/<split>
    row["pretrained"] = _pretrained(run_dir, row["pretrained"])
    config_path = run_dir / CONFIG_FILE
    config = (yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}) if config_path.is_file() else {}
    data_dir = config.get("data_dir")
    known = data_dir is not None and (Path(data_dir) / "metadata.csv").is_file()
    banner = make_banner(pd.DataFrame([row], columns=RUN_COLUMNS), data_dir=data_dir if known else None)
    if not known and (config.get("data_fingerprint") or {}).get("metadata"):
        banner = dataclasses.replace(banner, data_fingerprint=config["data_fingerprint"]["metadata"])
    return banner


def banner_html(paper_dir: str | Path) -> str:
    """The banner of ``paper_dir/provenance.json`` as an HTML paragraph for the index page ("" without one)."""
    import html

    path = Path(paper_dir) / "provenance.json"
    if not path.is_file():
        return ""
    banner = fileio.read_json(path).get("banner")
    if not banner:
        return ("<p class='banner'><strong>provenance.json has no provenance banner: run the comparison "
                "(99_comparison) again.</strong></p>")
    return f"<p class='banner'><strong>{html.escape(banner['text'])}</strong></p>"
