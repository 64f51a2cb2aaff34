"""``paper/index.html``: the reader's landing page, written after the notebooks have run.

Its sections come from heritage.report.publish; this module lays them out with the runs' table.
"""

from __future__ import annotations

import html
import math
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

from heritage import fileio
from heritage.training import runs
from heritage.pipeline.jobs import NotebookJob, is_up_to_date
from heritage.pipeline.schedulers import DONE, JobResult


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
    code = runs.code_hash()
    for job in jobs:
        if job.run_dir is None:
            others.append(f"The data at a glance: {link(job.html, 'report (HTML)')}, {link(job.output, 'notebook')}")
            continue
        metrics_path = job.run_dir / runs.METRICS_FILE
        metrics = fileio.read_json(metrics_path) if metrics_path.is_file() else {}
        current = metrics.get("config_hash") == job.key
        miou, clean, per_image = (metrics["test"].get(k) if current else None
                                  for k in ("miou", "all_clean_miou", "per_image_miou"))
        above = "—" if miou is None or clean is None else "yes" if miou > clean else "no"
        state = results[job.name].state if job.name in results else (
            DONE if is_up_to_date(job) else "outdated" if job.output.is_file() else "not run")
        css_class = state.replace(" ", "-")
        made_by = "—" if not metrics else "current" if metrics.get("code_hash") == code else (
            f"predates the current code ({metrics.get('code_hash') or 'not recorded'})")
        css_class += "" if made_by in ("—", "current") else " stale"
        cells = "".join(f"<td class='num'>{'—' if v is None else f'{100 * v:.2f}'}</td>"
                        for v in (miou, per_image, clean))  # the per-image mIoU beside the dataset-level one
        rows.append(f"<tr class='{css_class}'><td>{html.escape(job.name)}</td><td>{state}</td><td>{made_by}</td>{cells}"
                    f"<td>{above}</td>{thin_cells(metrics if current else {})}"
                    f"<td>{link(job.html, 'report')}</td><td>{link(job.output, 'notebook')}</td></tr>")
    provenance_path = paper_dir / "provenance.json"
    provenance = publish.read_provenance(paper_dir)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>heritage: the compendium</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em}}
td,th{{padding:2px 8px;text-align:left;vertical-align:top}} td.num,table.data td{{text-align:right}}
table.data td:first-child{{text-align:left}} table{{border-collapse:collapse;margin:0.5em 0}}
tr:nth-child(even){{background:#f6f6f6}} th{{border-bottom:1px solid #999}}
tr.failed td{{background:#fdd}} tr.stale td{{background:#ffe9c0}} .missing{{color:#999}} .banner{{color:#555}}
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
<h2>Runs</h2><p>Code: whether a run was made by the current code (heritage's data, modeling, config and training
packages, code hash {code}) or predates it (kept with --keep-stale).</p>
<table><tr><th>run</th><th>state</th><th>code</th><th>test mIoU (%), dataset-level</th>
<th>per-image mIoU (%)</th><th>all-Clean mIoU (%)</th><th>above all-Clean (dataset-level)</th>
<th>thin-damage IoU (%)</th><th>residual filter, thin damage (%)</th><th>above the filter</th><th>report</th><th>notebook</th></tr>
{''.join(rows)}</table></body></html>
"""
    path = paper_dir / "index.html"
    fileio.write_text(path, page)
    return path


def thin_cells(metrics: Mapping) -> str:
    """A run's thin-damage IoU, the residual filter's and whether the model is above it, as table cells: "—" for a
    run not (yet) finished, "not recorded" for one made before thin damage was scored."""
    from heritage.report.tables import NOT_RECORDED
    from heritage.training.provenance import beats_filter, thin_columns

    if not metrics:
        return "<td class='num'>—</td>" * 2 + "<td>—</td>"
    if not metrics["test"].get("thin"):
        return f"<td class='missing' colspan='3'>{NOT_RECORDED}</td>"
    columns = thin_columns(metrics["test"]["thin"])
    model, found = columns["thin_iou"], columns["filter_thin_iou"]
    above = {True: "yes", False: "no", None: "n/a"}[beats_filter(model, found)]
    return "".join(f"<td class='num'>{'n/a' if math.isnan(v) else f'{100 * v:.2f}'}</td>"
                   for v in (model, found)) + f"<td>{above}</td>"
