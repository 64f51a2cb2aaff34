"""heritage.report.publish: the index page's sections and the manuscript, from fabricated run folders."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import pytest
from test_report import planned, runs_root, smoke_like_runs, thin_record  # noqa: F401 - fixtures and run writers

from heritage import fileio, report
from heritage.pipeline import index_page
from heritage.pipeline.jobs import NotebookJob
from heritage.report import publish


def write_paper(runs: Path, paper_dir: Path, planned_runs=None) -> dict:
    comparison = report.build_comparison(runs, planned_runs, profile="smoke")
    return report.write_comparison(comparison, paper_dir, runs)


def test_findings_come_from_the_verdicts(runs_root, planned, tmp_path) -> None:  # noqa: F811
    provenance = write_paper(runs_root, tmp_path / "paper", planned)
    found = {f["table"]: f for f in provenance["findings"]}
    assert list(found) == ["rq1_family", "rq2_multitask", "rq3_resolution", "rq4_sampling", "ablation_paired",
                           "rq6_thin"]
    # MiT-B3 beats ConvNeXt and MaxViT on 3 folds (test_report's numbers); RQ2 has 1 holdout pair
    assert found["rq1_family"]["verdict"] == "supported" and found["rq1_family"]["n_supported"] == 2
    assert "SegFormer MiT-B3 beats POC-5.9-v2 ConvNeXt-Tiny" in found["rq1_family"]["reason"]
    assert found["rq2_multitask"]["verdict"] == "not supported"
    assert found["rq2_multitask"]["reason"] == (
        "None of the 1 pair meets the verdict rules, so no difference is claimed. "
        "Reasons: 1 paired fold: too few (in 1 of 1).")
    # wide tables go on landscape pages, by the columns the comparison recorded (no pdflatex needed)
    # the RQ tables: A, B, folds, A - B, its interval, folds above all-Clean, the artwork bootstrap's two, verdict...
    assert publish.table_columns(provenance, "rq1_family") == 10 >= publish.WIDE_COLUMNS
    assert publish.table_columns(provenance, "per_class_iou") == 8
    tex = publish.manuscript_text(tmp_path / "paper", provenance)
    landscape = "".join(part.split("\\end{landscape}")[0] for part in tex.split("\\begin{landscape}")[1:])
    assert "tables/rq1_family.tex" in landscape and "tables/per_class_iou.tex" not in landscape
    for entry in provenance["artefacts"].values():  # a provenance.json written before the columns were recorded
        entry.pop("columns", None)
    assert "landscape" not in publish.manuscript_text(tmp_path / "paper", provenance).split("\\begin{document}")[1]


def test_nothing_supported_is_said_so(tmp_path) -> None:
    provenance = write_paper(smoke_like_runs(tmp_path / "runs"), tmp_path / "paper")
    found = {f["table"]: f for f in provenance["findings"]}
    assert found["rq1_family"]["verdict"] == "not supported"
    assert "both below the all-Clean baseline (in 3 of 3)" in found["rq1_family"]["reason"]
    assert found["rq2_multitask"]["verdict"] == "no pair"
    text = publish.manuscript_text(tmp_path / "paper", provenance)
    assert "None of the research questions has a supported answer in this build" in text
    assert "beats" not in text and "better" not in text.replace("``not supported''", "")


def test_the_index_page_is_a_landing_page(runs_root, planned, tmp_path, monkeypatch, marked_image) -> None:  # noqa: F811
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no pdflatex: the page says paper.pdf is not built
    paper_dir = tmp_path / "paper"
    provenance = write_paper(runs_root, paper_dir, planned)
    (paper_dir / "damage-maps").mkdir()
    (paper_dir / "damage-maps" / "index.html").write_text("<html></html>")
    template = tmp_path / "nb.ipynb"
    job = NotebookJob(name="poc58_baseline/convnext_tiny/holdout-holdout", template=template,
                      output=tmp_path / "out.ipynb", html=tmp_path / "out.html", parameters={},
                      key=fileio.read_json(runs_root / "poc58_baseline/convnext_tiny/holdout-holdout/metrics.json")[
                          "config_hash"], run_dir=runs_root / "poc58_baseline/convnext_tiny/holdout-holdout")
    comparison = NotebookJob(name="comparison", template=template, output=paper_dir / "99.ipynb",
                             html=paper_dir / "99.html", parameters={}, key="k")
    index = index_page.write_index(paper_dir, [job], comparison, {}).read_text()
    assert provenance["banner"]["text"] in index
    for finding in provenance["findings"]:
        assert html.escape(finding["question"]) in index  # RQ6's "classes' IoU" is escaped
        assert finding["reason"].split(": ")[0] in index  # html-escaped text keeps these words
    assert "<table class=\"dataframe data\">" in index  # tables inline, not links only
    assert index.count("<figure class='table'") == len(report.build_comparison(runs_root, planned).tables)
    assert "<a href='figures/per_class_iou_heatmap.pdf'><img src='figures/per_class_iou_heatmap.png'" in index
    assert "style='width:100%'" in index
    assert "<a href='damage-maps/index.html'>" in index and "paper.pdf (not built" in index
    # the run's row: dataset-level mIoU 21.00, its per-image mIoU (not recorded by this run), all-Clean 6.00, above it
    assert "<td class='num'>21.00</td><td class='num'>—</td><td class='num'>6.00</td><td>yes</td>" in index
    assert "<th>test mIoU (%), dataset-level</th>\n<th>per-image mIoU (%)</th>" in index
    metrics_path = runs_root / "poc58_baseline/convnext_tiny/holdout-holdout/metrics.json"
    recorded = fileio.read_json(metrics_path)
    recorded["test"]["per_image_miou"] = 0.18
    fileio.write_json(metrics_path, recorded)
    index = index_page.write_index(paper_dir, [job], comparison, {}).read_text()
    assert "<td class='num'>21.00</td><td class='num'>18.00</td><td class='num'>6.00</td><td>yes</td>" in index
    # thin damage beside the residual filter: not recorded by this run, then recorded below the filter
    assert "<td class='missing' colspan='3'>not recorded</td>" in index
    recorded["test"]["thin"] = thin_record(marked_image, 0.05, 0.2)
    fileio.write_json(metrics_path, recorded)
    index = index_page.write_index(paper_dir, [job], comparison, {}).read_text()
    assert "<td>yes</td><td class='num'>5.00</td><td class='num'>20.00</td><td>no</td>" in index


def test_the_index_page_escapes_names_and_keeps_its_sections_html(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    paper_dir, run_dir = tmp_path / "paper", tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    (run_dir / "report.html").write_text("x")
    job = NotebookJob(name="poc<b>&'1", template=tmp_path / "nb.ipynb", output=run_dir / "out.ipynb",
                      html=run_dir / "report.html", parameters={}, key="k", run_dir=run_dir)
    comparison = NotebookJob(name="comparison", template=tmp_path / "nb.ipynb", output=paper_dir / "99.ipynb",
                             html=paper_dir / "99.html", parameters={}, key="k")
    index = index_page.write_index(paper_dir, [job], comparison, {}).read_text()
    assert "<tr class='not-run'><td>poc&lt;b&gt;&amp;&#39;1</td><td>not run</td><td>—</td>" in index
    assert "<b>" not in index
    assert "<td><a href='../runs/a/report.html'>report</a></td><td><span class='missing'>notebook (missing)</span>" in index
    # the sections are HTML already: not escaped a second time
    assert "<h2>Research questions</h2>\n<p class='missing'>No comparison yet: no verdicts.</p>" in index
    assert index.endswith("</table></body></html>\n")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
@pytest.mark.parametrize("kind", ["verdicts", "smoke"])
def test_the_manuscript_compiles_with_every_table_and_figure_inside_the_margins(kind, runs_root, planned,  # noqa: F811
                                                                                tmp_path) -> None:
    paper_dir = tmp_path / "paper"
    if kind == "verdicts":
        provenance = write_paper(runs_root, paper_dir, planned)
    else:
        provenance = write_paper(smoke_like_runs(tmp_path / "smoke_runs"), paper_dir)
    built = publish.build_manuscript(paper_dir)
    assert built.pdf == paper_dir / "paper.pdf", built.message
    assert built.pdf.stat().st_size > 10_000
    tex = (paper_dir / "paper.tex").read_text()
    assert tex.isascii()
    for name in provenance["artefacts"]:
        if name.startswith("tables/") and name.endswith(".tex"):
            assert f"\\input{{{name}}}" in tex
        if name.startswith("figures/") and name.endswith(".pdf"):
            assert f"{{{name}}}" in tex and "\\includegraphics" in tex
    banner = report.latex_text(provenance["banner"]["text"])
    figures = [name for name in provenance["artefacts"] if name.startswith("figures/") and name.endswith(".pdf")]
    # the per-class heat map, mIoU vs throughput, the per-image mIoU distributions, RQ4's and RQ6's per-class differences
    assert len(figures) == 5 and "figures/per_image_miou.pdf" in figures
    # each figure's caption holds the banner; the provenance paragraph holds it without its "Provenance: "
    assert tex.count(banner) == len(figures) and tex.count(banner.removeprefix("Provenance: ")) == 1 + len(figures)
    # the flagship's encoder table (12 columns) and the RQ tables (10: the artwork bootstrap's two columns beside
    # the fold-level interval) are set on landscape pages, the 4-column per-class table is not
    landscape = "".join(part.split("\\end{landscape}")[0] for part in tex.split("\\begin{landscape}")[1:])
    assert "tables/encoders_poc59v2_flagship.tex" in landscape and "tables/rq1_family.tex" in landscape
    assert "tables/per_class_iou.tex" in tex and "tables/per_class_iou.tex" not in landscape
    log = paper_dir / publish.LATEX_DIR / "paper.log"
    assert [p for p in publish.overfull_boxes(log) if p > 3.0] == []
    assert publish.build_manuscript(paper_dir).message.endswith("(up to date)")


def test_overfull_boxes_are_read_from_the_log(tmp_path) -> None:
    log = tmp_path / "x.log"
    log.write_text("Overfull \\hbox (12.5pt too wide) in paragraph at lines 3--4\nUnderfull \\hbox\n"
                   "Overfull \\hbox (0.4pt too wide) detected at line 9\n")
    assert publish.overfull_boxes(log) == [12.5, 0.4]


def test_without_pdflatex_the_manuscript_is_written_and_the_pdf_skipped(runs_root, tmp_path,  # noqa: F811
                                                                       monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    write_paper(runs_root, tmp_path / "paper")
    built = publish.build_manuscript(tmp_path / "paper")
    assert (tmp_path / "paper" / "paper.tex").is_file() and built.pdf is None
    assert built.message.startswith("pdflatex not found:") and "\n" not in built.message
    assert not (tmp_path / "paper" / "paper.pdf").exists()


def test_the_abstract_says_how_many_runs_do_not_beat_the_residual_filter() -> None:
    def sentence(above: int, compared: int) -> str:
        return publish._filter_sentence({"n_above_filter": above, "n_with_filter": compared})

    assert sentence(0, 3).endswith("the 3 runs compared do not beat the residual filter on thin damage. ")
    assert sentence(8, 9).endswith("8 of 9 runs beat the residual filter; the other 1 does not beat the residual "
                                   "filter on thin damage. ")
    assert "not beat" not in sentence(9, 9)
    assert sentence(0, 0) == "Thin damage against the residual filter was not recorded for these runs. "
    assert publish._filter_sentence({}) == sentence(0, 0)  # a banner written before the filter was counted
