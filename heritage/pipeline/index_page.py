"""``paper/index.html``: the reader's landing page, written after the notebooks have run.

Its sections come from heritage.report.publish; this module lays them out with the runs' table.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
from markupsafe import Markup

from heritage import fileio
from heritage.training import runs
from heritage.pipeline.jobs import NotebookJob, is_up_to_date
from heritage.pipeline.schedulers import DONE, JobResult

TEMPLATES = Path(__file__).parents[1] / "templates"
TEMPLATE = "index.html"  # under TEMPLATES: the page's layout; the sections come from heritage.report.publish


def write_index(paper_dir: Path, jobs: Sequence[NotebookJob], comparison: NotebookJob,
                results: Mapping[str, JobResult]) -> Path:
    """``paper/index.html``, a reader's landing page: the provenance banner, each research question's
    verdict and reason, links to ``paper.pdf`` (built first, :func:`heritage.report.publish.build_manuscript`)
    and the damage-map gallery, every table inline, every figure at full width, every run's report.

    ``jobs`` are the run jobs and the dataset job (the one without a run folder); links are relative.
    """
    from heritage.report import publish
    from heritage import report

    built = publish.build_manuscript(paper_dir)
    if built is not None:
        print(f"paper: {built.message}", file=sys.stdout if built.pdf else sys.stderr)
    code = runs.code_hash()
    provenance = publish.read_provenance(paper_dir)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     keep_trailing_newline=True)
    environment.filters["relative"] = lambda path: os.path.relpath(path, paper_dir)
    sections = {name: Markup(text) for name, text in (  # HTML already, escaped where it holds text
        ("banner", report.banner_html(paper_dir)), ("links", publish.links_html(paper_dir)),
        ("findings", publish.findings_html(provenance)), ("tables", publish.tables_html(paper_dir, provenance)),
        ("figures", publish.figures_html(paper_dir, provenance)))}
    page = environment.get_template(TEMPLATE).render(
        **sections, comparison=comparison, provenance=paper_dir / "provenance.json", code=code,
        data_jobs=[job for job in jobs if job.run_dir is None],
        rows=[_run_row(job, results, code) for job in jobs if job.run_dir is not None])
    path = paper_dir / "index.html"
    fileio.write_text(path, page)
    return path


def _run_row(job: NotebookJob, results: Mapping[str, JobResult], code: str) -> dict[str, Any]:
    """One run's row of the runs table: its state, the code that made it, its scores as cells."""
    metrics_path = job.run_dir / runs.METRICS_FILE
    metrics = fileio.read_json(metrics_path) if metrics_path.is_file() else {}
    current = metrics.get("config_hash") == job.key
    miou, clean, per_image = (metrics["test"].get(k) if current else None
                              for k in ("miou", "all_clean_miou", "per_image_miou"))
    state = results[job.name].state if job.name in results else (
        DONE if is_up_to_date(job) else "outdated" if job.output.is_file() else "not run")
    made_by = "—" if not metrics else "current" if metrics.get("code_hash") == code else (
        f"predates the current code ({metrics.get('code_hash') or 'not recorded'})")
    return {"job": job, "state": state, "made_by": made_by,
            "css_class": state.replace(" ", "-") + ("" if made_by in ("—", "current") else " stale"),
            # the per-image mIoU beside the dataset-level one
            "percents": ["—" if v is None else f"{100 * v:.2f}" for v in (miou, per_image, clean)],
            "above": "—" if miou is None or clean is None else "yes" if miou > clean else "no",
            "thin": thin_cells(metrics if current else {})}


def thin_cells(metrics: Mapping) -> list[str]:
    """A run's thin-damage IoU, the residual filter's and whether the model is above it, as three cells' text: "—"
    for a run not (yet) finished; one cell, "not recorded", for one made before thin damage was scored."""
    from heritage.report.tables import NOT_RECORDED
    from heritage.training.provenance import beats_filter, thin_columns

    if not metrics:
        return ["—"] * 3
    if not metrics["test"].get("thin"):
        return [NOT_RECORDED]
    columns = thin_columns(metrics["test"]["thin"])
    model, found = columns["thin_iou"], columns["filter_thin_iou"]
    above = {True: "yes", False: "no", None: "n/a"}[beats_filter(model, found)]
    return [*("n/a" if math.isnan(v) else f"{100 * v:.2f}" for v in (model, found)), above]
