"""Damage maps in the paper: the flagship's best run predicts a few scans of its own test split.

``paper`` runs ``notebooks/damage_maps.ipynb`` after the runs (a job like the comparison, skipped
when up to date); the notebook calls :func:`choose_run`, :func:`test_scan_ids` and
:func:`write_gallery`, which write ``paper/damage-maps/``: one ``heritage predict`` folder per scan
(``<id>/report.html``, mask, overlay, areas) and ``index.html`` (scan | ground truth | prediction
per scan, the run chosen and why, its provenance banner) plus ``gallery.json``.

The run is the one with the highest *validation* mIoU among the finished runs of the flagship's main
configuration: model selection uses validation only, as in training. Picking by test mIoU would
choose the run that happens to do best on the very scans shown. The scans are from that run's
test part (never trained on nor used to select its epoch), those whose ground truth shows the most
damage classes (ties: by id): chosen by annotation, not by how well the model does on them.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from heritage import errors, fileio
from heritage.inference import overlays

POC = "poc59v2_flagship"
GALLERY_DIR = "damage-maps"
NOTEBOOK = "damage_maps"
N_SCANS = 4
INDEX_FILE = "index.html"
RECORD_FILE = "gallery.json"


@dataclass(frozen=True)
class Candidate:
    run_dir: Path
    encoder: str
    fold: str
    val_miou: float
    test_miou: float
    all_clean_miou: float


@dataclass(frozen=True)
class Choice:
    best: Candidate
    candidates: tuple[Candidate, ...]  # finished runs of the plan, in plan order
    not_finished: tuple[str, ...]  # planned run folders without metrics.json of their config hash

    @property
    def reason(self) -> str:
        return (f"highest validation mIoU ({100 * self.best.val_miou:.2f}%) of the {len(self.candidates)} "
                f"finished run(s) of the main configuration; chosen by validation, not test, mIoU so that "
                f"the test scans shown did not pick the model")


def planned_runs(configs: Sequence[Any]) -> list[list[str]]:
    """``[run_dir, config_hash]`` of the planned runs (RunConfigs) of :data:`POC`'s main configuration."""
    from heritage import config as config_module

    return [[str(config_module.run_dir(c)), c.config_hash()] for c in configs
            if c.poc == POC and c.variant is None]


def choose_run(planned: Sequence[Sequence[str]]) -> Choice:
    """The planned run (``[run_dir, config_hash]`` pairs) with the highest validation mIoU.

    Only runs whose ``metrics.json`` holds the planned config hash count; ties go to the first in plan
    order. Raises InputError when none has finished.
    """
    from heritage.training import provenance, runs

    candidates, not_finished = [], []
    for run_dir, config_hash in planned:
        path = Path(run_dir) / runs.METRICS_FILE
        metrics = provenance.load_metrics(path) if path.is_file() else None
        val = ((metrics or {}).get("val") or {}).get("miou")
        if metrics is None or metrics["config_hash"] != config_hash or val is None:
            not_finished.append(str(run_dir))
            continue
        test = metrics["test"]
        candidates.append(Candidate(Path(run_dir), metrics["encoder"], metrics["fold"], float(val),
                                    float(test["miou"]), _number(test.get("all_clean_miou"))))
    if not candidates:
        raise errors.InputError(f"no finished run among the {len(planned)} planned run(s) of {POC}'s main "
                                "configuration: nothing to draw damage maps with")
    best = max(candidates, key=lambda c: c.val_miou)  # max keeps the first of equal values
    return Choice(best, tuple(candidates), tuple(not_finished))


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def run_config(run_dir: str | Path):
    from heritage.config import RunConfig

    from heritage.training import runs

    return RunConfig.from_yaml(Path(run_dir) / runs.CONFIG_FILE)


def test_scan_ids(run_dir: str | Path, n: int = N_SCANS) -> list[str]:
    """``n`` ids of the run's own test part (its manifest and fold), most ground-truth damage classes first."""
    from heritage.data import splits, stats, taxonomy

    config = run_config(run_dir)
    train, _, test = splits.fold_ids(splits.load_manifest(config.data_dir, config.protocol), config.fold)
    leaked = set(test) & set(train)
    if leaked:  # load_manifest checks sources too; this guards the ids shown
        raise errors.InputError(f"{run_dir}: test ids {sorted(leaked)[:3]} are also training ids")
    ids = sorted(test)
    histograms = stats.mask_histograms(config.data_dir, ids)
    n_damages = (histograms[:, 1:taxonomy.NUM_CLASSES] > 0).sum(axis=1)
    order = sorted(range(len(ids)), key=lambda i: (-n_damages[i], ids[i]))
    return [ids[i] for i in order[:n]]


def write_gallery(choice: Choice, ids: Sequence[str], out_dir: str | Path, device: str = "auto",
                  progress: bool = False) -> Path:
    """Predict ``ids`` with the chosen run into ``out_dir`` and write its ``index.html``; returns it."""
    import pandas as pd

    from heritage.data import datafolder
    from heritage.inference import damage_report, predict, scans
    from heritage.modeling import thin_prior, tiling

    out_dir = Path(out_dir)
    config = run_config(choice.best.run_dir)
    torch_device = predict.resolve_device(device)
    model, checkpoint_config = predict.load_model(choice.best.run_dir, torch_device)
    image_size = int(checkpoint_config["image_size"])
    options = tiling.SlidingWindow(tile=image_size, dtype=predict.run_dtype(checkpoint_config, torch_device),
                                   class_scale=thin_prior.class_scale(predict.run_thin_factor(choice.best.run_dir)))
    provenance = damage_report.provenance_html(choice.best.run_dir)
    sources = [scans.file_source(datafolder.image_path(config.data_dir, i), i) for i in ids]
    settings = {"run": choice.best.run_dir, "encoder": checkpoint_config["encoder"], "scale": "auto",
                "tile": options.tile, "overlap": options.overlap, "window": options.window,
                "device": torch_device.type}
    failures = predict.predict_sources(model, image_size, sources, out_dir, options, torch_device,
                                       predict.PredictOptions(settings=settings, progress=progress,
                                                              provenance=provenance,
                                                              **predict.run_scale(choice.best.run_dir,
                                                                                  checkpoint_config)))
    if failures:
        raise errors.CommandFailed(f"damage maps: {len(failures)} scan(s) failed: {failures[0][1]}")
    summary = pd.read_csv(out_dir / "summary.csv", keep_default_na=False)
    rows = []
    for sample_id, damage in zip(summary["image"], summary["damage %"]):
        rgb = fileio.read_rgb(datafolder.image_path(config.data_dir, sample_id))
        truth = fileio.read_mask(datafolder.annotation_path(config.data_dir, sample_id))
        labels = fileio.read_mask(out_dir / sample_id / "mask.png")
        scan_view, predicted_view, factor = damage_report.display_pair(rgb, labels, max_side=768)
        _, truth_view, _ = damage_report.display_pair(rgb, truth, max_side=768)
        shown = sorted(set(np.unique(truth).tolist()) | set(np.unique(labels).tolist()))
        rows.append(_gallery_row(sample_id, scan_view, truth_view, predicted_view, factor, shown, float(damage)))
    fileio.write_json(out_dir / RECORD_FILE, {
        "run_dir": str(choice.best.run_dir), "reason": choice.reason, "scans": list(ids),
        "selection": "test part of the run's own fold; most ground-truth damage classes first, ties by id",
        "candidates": [{"run_dir": str(c.run_dir), "val_miou": c.val_miou, "test_miou": c.test_miou,
                        "all_clean_miou": c.all_clean_miou} for c in choice.candidates],
        "not_finished": list(choice.not_finished)})
    index = out_dir / INDEX_FILE
    fileio.write_text(index, _page(choice, config, provenance, rows))
    return index


def _gallery_row(sample_id: str, scan: np.ndarray, truth: np.ndarray, predicted: np.ndarray, factor: int,
                 shown: list[int], damage_percent: float) -> str:
    from heritage.inference import damage_report

    lossless = factor > 1
    cells = "".join(f"<figure><img src='{damage_report.image_src(picture, lossless)}' alt='{what} of "
                    f"{html.escape(sample_id)}'><figcaption>{what}</figcaption></figure>"
                    for picture, what in ((scan, "scan"), (truth, "ground truth"), (predicted, "prediction")))
    enlarged = f", shown enlarged {factor}&times; (nearest neighbour)" if factor > 1 else ""
    return (f"<section><h2><a href='{html.escape(sample_id)}/report.html'>{html.escape(sample_id)}</a></h2>"
            f"<p>Predicted damage: {damage_percent:.2f}% of the artwork{enlarged}. "
            f"<a href='{html.escape(sample_id)}/report.html'>damage-map report</a> (areas per class, "
            f"full-resolution files).</p><div class='row'>{cells}</div>{overlays.legend_html(shown)}</section>")


def _page(choice: Choice, config, provenance: str, rows: list[str]) -> str:
    def percent(value: float) -> str:
        return "—" if math.isnan(value) else f"{100 * value:.2f}"

    table = "".join(
        f"<tr{' class=chosen' if c is choice.best else ''}><td>{html.escape(c.encoder)}</td><td>{html.escape(c.fold)}"
        f"</td><td>{percent(c.val_miou)}</td><td>{percent(c.test_miou)}</td><td>{percent(c.all_clean_miou)}</td></tr>"
        for c in choice.candidates)
    missing = (f"<p>Planned but not finished (not considered): {html.escape(', '.join(choice.not_finished))}.</p>"
               if choice.not_finished else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Damage maps: {POC}</title>
<style>body{{font-family:sans-serif;max-width:100em;margin:2em auto}} .banner{{font-weight:bold}}
.warning{{color:#b00000}} .row{{display:flex;flex-wrap:wrap;gap:1em}} figure{{margin:0}}
figure img{{width:100%;max-width:768px;image-rendering:pixelated;border:1px solid #ccc}}
.row figure{{flex:1 1 0;min-width:0}} td,th{{padding:2px 8px;text-align:left}} tr.chosen td{{font-weight:bold}}
{overlays.LEGEND_CSS}</style></head><body>
<h1>Damage maps of held-out test scans ({POC}, main configuration)</h1>
{provenance}
<p>Run: <code>{html.escape(str(choice.best.run_dir))}</code> ({html.escape(choice.best.encoder)},
{html.escape(config.protocol)} {html.escape(choice.best.fold)}): {html.escape(choice.reason)}.
Scans: {len(rows)} of the test part of that run's fold (never trained on, not used to pick its epoch),
those whose ground truth shows the most damage classes. Damage is blended at
{overlays.ALPHA:.0%} opacity with a dark outline; Clean and Background are untinted.</p>
<table><tr><th>encoder</th><th>fold</th><th>val mIoU (%)</th><th>test mIoU (%)</th>
<th>all-Clean test mIoU (%)</th></tr>{table}</table>{missing}
{''.join(rows)}
</body></html>
"""
