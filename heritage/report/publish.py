"""What a reader opens: ``paper/index.html``'s sections and the manuscript ``paper/paper.tex`` -> ``paper.pdf``.

Both are made from what ``99_comparison`` wrote (``provenance.json``: banner, artefacts with their
captions, the research questions' findings from ``report.decide``; ``tables/*.{html,tex}``;
``figures/*.{png,pdf}``), so they state nothing the tables do not. The manuscript's text comes from
``heritage/templates/paper.tex``; pdflatex compiles it where it is installed.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heritage import fileio

TEMPLATE = Path(__file__).parents[1] / "templates" / "paper.tex"
MANUSCRIPT = "paper.tex"
PDF = "paper.pdf"
LATEX_DIR = ".latex"  # pdflatex's aux and log files, under the paper folder
GALLERY = "damage-maps/index.html"  # heritage.report.gallery's page, linked when it exists
INSTALL_HINT = "apt-get install texlive-latex-base texlive-latex-recommended"
WIDE_COLUMNS = 10  # a table with this many columns goes on a landscape page
_OVERFULL = re.compile(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)")


def read_provenance(paper_dir: str | Path) -> dict[str, Any] | None:
    path = Path(paper_dir) / "provenance.json"
    return fileio.read_json(path) if path.is_file() else None


def _stems(provenance: dict[str, Any], folder: str, suffix: str) -> list[str]:
    """Artefact names ``folder/<stem>.<suffix>`` in the order the comparison wrote them."""
    return [name[len(folder) + 1: -len(suffix) - 1] for name in provenance.get("artefacts", {})
            if name.startswith(f"{folder}/") and name.endswith(f".{suffix}")]


# -- the index page ------------------------------------------------------------------------------


def findings_html(provenance: dict[str, Any] | None) -> str:
    """Each research question with its verdict and the reason, as the comparison decided them."""
    if provenance is None:
        return "<p class='missing'>No comparison yet: no verdicts.</p>"
    found = provenance.get("findings")
    if found is None:
        return "<p class='missing'>provenance.json holds no findings: run the comparison (99_comparison) again.</p>"
    items = [f"<li class='verdict {html.escape(f['verdict'].replace(' ', '-'))}'><strong>"
             f"{html.escape(f['question'])}</strong> <em>{html.escape(f['verdict'])}</em>. "
             f"{html.escape(f['reason'])} <a href='#tab-{html.escape(f['table'])}'>table</a></li>" for f in found]
    return f"<ul class='findings'>{''.join(items)}</ul>"


def tables_html(paper_dir: str | Path, provenance: dict[str, Any] | None) -> str:
    """Every table inline (its ``tables/<name>.html`` fragment), with links to its md/tex/csv files."""
    paper_dir = Path(paper_dir)
    if provenance is None:
        return "<p class='missing'>none yet</p>"
    parts = []
    for stem in _stems(provenance, "tables", "html"):
        fragment = paper_dir / "tables" / f"{stem}.html"
        if not fragment.is_file():
            parts.append(f"<p class='missing'>tables/{html.escape(stem)}.html (missing)</p>")
            continue
        files = " ".join(f"<a href='tables/{html.escape(stem)}.{s}'>{s}</a>" for s in ("csv", "tex", "md")
                         if (paper_dir / "tables" / f"{stem}.{s}").is_file())
        parts.append(fragment.read_text(encoding="utf-8") + f"<p class='files'>{files}</p>")
    return "\n".join(parts) or "<p class='missing'>none yet</p>"


def figures_html(paper_dir: str | Path, provenance: dict[str, Any] | None) -> str:
    """Every figure at the page's full width; the image links to its PDF."""
    if provenance is None:
        return "<p class='missing'>none yet</p>"
    artefacts = provenance["artefacts"]
    parts = []
    for stem in _stems(provenance, "figures", "png"):
        name = html.escape(stem)
        pdf = f"figures/{stem}.pdf" in artefacts and (Path(paper_dir) / "figures" / f"{stem}.pdf").is_file()
        image = f"<img src='figures/{name}.png' alt='{name}' style='width:100%'>"
        if pdf:
            image = f"<a href='figures/{name}.pdf'>{image}</a>"
        caption = html.escape(artefacts[f"figures/{stem}.png"]["caption"])
        if pdf:
            caption += f" (<a href='figures/{name}.pdf'>PDF</a>)"
        parts.append(f"<figure class='figure'>{image}<figcaption>{caption}</figcaption></figure>")
    return "\n".join(parts) or "<p class='missing'>none yet</p>"


def gallery(paper_dir: str | Path) -> Path | None:
    """The damage-map gallery under ``paper_dir``, when one has been written."""
    path = Path(paper_dir) / GALLERY
    return path if path.is_file() else None


def links_html(paper_dir: str | Path) -> str:
    """Links to the manuscript PDF and the damage-map gallery (each said missing when absent)."""
    paper_dir = Path(paper_dir)
    pdf = (f"<a href='{PDF}'>the manuscript (paper.pdf)</a>" if (paper_dir / PDF).is_file()
           else f"<span class='missing'>paper.pdf (not built: {html.escape(INSTALL_HINT)})</span>")
    found = gallery(paper_dir)
    maps = (f"<a href='{html.escape(found.relative_to(paper_dir).as_posix())}'>damage maps of whole scans</a>"
            if found else "<span class='missing'>damage-map gallery (not made)</span>")
    return f"<p class='links'>Read {pdf}; see the {maps}.</p>"


# -- the manuscript ------------------------------------------------------------------------------------


def manuscript_text(paper_dir: str | Path, provenance: dict[str, Any]) -> str:
    """``paper.tex`` from the template: abstract and findings from the banner and verdicts, every table
    ``\\input`` and every figure's PDF ``\\includegraphics``-ed with its caption and the banner."""
    from heritage.training import provenance as records
    from heritage.report.tables import latex_text as latex
    from heritage.report.verdicts import CONFIDENCE, MIN_PAIRED_UNITS
    from heritage.modeling import residual, thin
    banner = provenance["banner"]
    found = provenance.get("findings") or []
    supported = [f for f in found if f["verdict"] == "supported"]
    data = {records.SYNTHETIC: "the synthetic stand-in for ARTeFACT", records.ARTEFACT: "ARTeFACT"}.get(
        banner["data"], f"data of {banner['data']} origin" if banner["data"] == "unknown" else banner["data"])
    abstract = (f"This build compares segmentation models for damage in heritage artworks on {data}, from "
                f"{banner['n_runs']} runs ({banner['profile']} profile; {banner['weights']}; {banner['epochs']} epochs). "
                f"{banner['n_above_all_clean']} of {banner['n_with_all_clean']} runs beat predicting Clean everywhere. ")
    abstract += _filter_sentence(banner)
    if not found:
        abstract += "No research question has a paired table in this build."
    elif supported:
        abstract += (f"{len(supported)} of {len(found)} questions have at least one comparison that meets the "
                     "verdict rules (Section 2); Section 3 states them, and only them.")
    else:
        abstract += ("None of the research questions has a supported answer in this build: no comparison meets "
                     "the verdict rules (Section 2), so no difference between models is claimed, and the tables "
                     "describe the runs without ranking them.")
    items = [f"\\item \\textbf{{{latex(f['question'])}}} \\emph{{{latex(f['verdict'])}}}. {latex(f['reason'])} "
             f"(Table~\\ref{{tab:{f['table']}}}.)" for f in found]
    findings = ("\\begin{itemize}\n" + "\n".join(items) + "\n\\end{itemize}") if items else (
        "No research question has a paired table in this build.")
    paper_dir = Path(paper_dir)
    tables = _table_inputs(provenance, [stem for stem in _stems(provenance, "tables", "tex")
                                        if (paper_dir / "tables" / f"{stem}.tex").is_file()])
    figures = []
    for stem in _stems(provenance, "figures", "pdf"):
        caption = latex(provenance["artefacts"][f"figures/{stem}.pdf"]["caption"]) + ". " + latex(banner["text"])
        figures.append("\\begin{figure}[htbp]\n\\centering\n"
                       f"\\includegraphics[width=\\linewidth,height=0.75\\textheight,keepaspectratio]{{figures/{stem}.pdf}}\n"
                       f"\\caption{{{caption}}}\n\\label{{fig:{stem}}}\n\\end{{figure}}")
    return string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        abstract=latex(abstract), banner=latex(banner["text"].removeprefix("Provenance: ")), findings=findings,
        min_pairs=MIN_PAIRED_UNITS, confidence=latex(f"{CONFIDENCE:.0%}"),
        window=residual.MEDIAN_WINDOW, mad_to_sigma=residual.MAD_TO_SIGMA, tolerance=thin.TOLERANCE_PX,
        tables=tables + "\n\\clearpage", figures="\n".join(figures))


def _filter_sentence(banner: dict[str, Any]) -> str:
    """The abstract's sentence on thin damage against the residual filter (banners written before it was counted
    say nothing of it: the sentence says it was not recorded)."""
    from heritage.data import taxonomy

    above, compared = banner.get("n_above_filter", 0), banner.get("n_with_filter", 0)
    if not compared:
        return "Thin damage against the residual filter was not recorded for these runs. "
    below = compared - above
    verb = "does" if below == 1 else "do"
    start = f"On thin damage ({', '.join(name.lower() for name in taxonomy.THIN_CLASSES)}), "
    if above == 0:
        runs = "the run compared" if compared == 1 else f"the {compared} runs compared"
        return start + f"{runs} {verb} not beat the residual filter on thin damage. "
    sentence = start + f"{above} of {compared} runs beat the residual filter"
    if below:
        sentence += f"; the other {below} {verb} not beat the residual filter on thin damage"
    return sentence + ". "


def _table_inputs(provenance: dict[str, Any], stems: list[str]) -> str:
    """``\\input`` lines; runs of wide tables (WIDE_COLUMNS or more) on landscape pages, where they keep
    a readable size instead of shrinking to the portrait width; a ``\\clearpage`` every 8 others
    (LaTeX holds at most 18 floats waiting for a page)."""
    blocks, wide, portrait = [], [], 0
    for stem in stems:
        line = f"\\input{{tables/{stem}.tex}}"
        if table_columns(provenance, stem) >= WIDE_COLUMNS:
            wide.append(line)
            continue
        if wide:
            blocks.append("\\begin{landscape}\n" + "\n".join(wide) + "\n\\end{landscape}")
            wide = []
        blocks.append(line)
        portrait += 1
        if portrait % 8 == 0:
            blocks.append("\\clearpage")
    if wide:
        blocks.append("\\begin{landscape}\n" + "\n".join(wide) + "\n\\end{landscape}")
    return "\n".join(blocks)


def table_columns(provenance: dict[str, Any], stem: str) -> int:
    """Columns of the table ``tables/<stem>`` as the comparison recorded them (0 in a provenance.json that predates
    recording them)."""
    return len(provenance["artefacts"][f"tables/{stem}.tex"].get("columns", []))


def write_manuscript(paper_dir: str | Path) -> Path | None:
    """Write ``paper_dir/paper.tex`` (None, and nothing written, before the comparison has run)."""
    provenance = read_provenance(paper_dir)
    if provenance is None or "banner" not in provenance:
        return None
    path = Path(paper_dir) / MANUSCRIPT
    text = manuscript_text(paper_dir, provenance)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        fileio.write_text(path, text)
    return path


@dataclass(frozen=True)
class Build:
    """The outcome of compiling the manuscript: ``pdf`` is None when it was not built, ``message`` says why."""

    pdf: Path | None
    message: str
    log: Path | None = None


def compile_manuscript(tex: str | Path, pdflatex: str | None = None) -> Build:
    """pdflatex twice (references) in the paper folder; aux files and the log in ``.latex/``.

    Without pdflatex on the PATH nothing is built and the message says how to install it.
    """
    tex = Path(tex)
    program = pdflatex or shutil.which("pdflatex")
    if program is None:
        return Build(None, f"pdflatex not found: {tex} written, {PDF} not built ({INSTALL_HINT})")
    out = tex.parent / LATEX_DIR
    out.mkdir(exist_ok=True)
    log = out / f"{tex.stem}.log"
    for _ in range(2):
        result = subprocess.run([program, "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={LATEX_DIR}",
                                 tex.name], cwd=tex.parent, capture_output=True, text=True, errors="replace",
                                timeout=300)
        if result.returncode != 0:
            error = next((line for line in result.stdout.splitlines() if line.startswith("!")), "see the log")
            return Build(None, f"pdflatex failed on {tex}: {error} (log: {log})", log)
    pdf = tex.with_suffix(".pdf")
    os.replace(out / pdf.name, pdf)
    return Build(pdf, f"manuscript: {pdf}", log)


def overfull_boxes(log: str | Path) -> list[float]:
    """How many points each overfull \\hbox of a pdflatex log sticks out."""
    return [float(points) for points in _OVERFULL.findall(Path(log).read_text(encoding="utf-8", errors="replace"))]


def build_manuscript(paper_dir: str | Path) -> Build | None:
    """Write ``paper.tex`` and compile it when it or anything it includes is newer than ``paper.pdf``."""
    tex = write_manuscript(paper_dir)
    if tex is None:
        return None
    pdf = tex.with_suffix(".pdf")
    provenance = read_provenance(paper_dir) or {}
    inputs = [tex, *(Path(paper_dir) / name for name in provenance.get("artefacts", {})
                     if name.endswith((".tex", ".pdf")))]
    if pdf.is_file() and all(p.is_file() and p.stat().st_mtime <= pdf.stat().st_mtime for p in inputs):
        return Build(pdf, f"manuscript: {pdf} (up to date)")
    return compile_manuscript(tex)
