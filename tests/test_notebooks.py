"""End to end: the smoke paper (synthetic data, every POC notebook, the comparison) into a fresh root.

Marked ``slow``. The root is temporary unless $HERITAGE_E2E_ROOT names one: ``make test`` keeps it
(build/test) so that nbval then runs the notebooks on its data and finds their runs complete.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from heritage import config, errors, fileio, report
from heritage.pipeline import run_configs
from heritage.pipeline.jobs import NotebookJob, write_job_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_paper(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = Path(os.environ.get("HERITAGE_E2E_ROOT") or tmp_path_factory.mktemp("smoke_paper")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "heritage", "paper", "--profile", "smoke", "--data-dir", str(root / "data"),
               "--runs-root", str(root / "runs"), "--paper-dir", str(root / "paper")]
    start = time.perf_counter()
    first = subprocess.run(command, capture_output=True, text=True, cwd=root)
    seconds = time.perf_counter() - start
    print(f"smoke paper: {seconds:.0f} s")  # shown with -s; the Makefile reports it
    assert first.returncode == 0, f"smoke paper failed:\n{first.stdout[-4000:]}\n{first.stderr[-4000:]}"
    return {"root": root, "command": command, "stdout": first.stdout, "seconds": seconds}


def test_every_run_has_its_notebook_report_and_metrics(smoke_paper: dict) -> None:
    root = smoke_paper["root"]
    configs = run_configs.planned_configs("smoke", None, root / "data", root / "runs")
    assert configs
    for planned in configs:
        folder = config.run_dir(planned)
        for name in ("notebook.ipynb", "report.html", "metrics.json", "history.csv"):
            assert (folder / name).is_file(), f"{folder / name} missing"
        assert fileio.read_json(folder / "metrics.json")["config_hash"] == planned.config_hash()
        assert list((folder / "predictions").glob("*.png"))
    for name in ("00_dataset.html", "99_comparison.html", "99_comparison.ipynb", "index.html"):
        assert (root / "paper" / name).is_file()


def test_every_table_and_figure_is_written_with_its_provenance(smoke_paper: dict) -> None:
    paper_dir = smoke_paper["root"] / "paper"
    provenance = fileio.read_json(paper_dir / "provenance.json")
    names = {Path(name).stem for name in provenance["artefacts"] if name.startswith("tables/")}
    assert {"encoders_poc59v2_flagship", "poc_comparison", "time_to_results", "per_class_iou",
            "loss_ablation_poc59v2_flagship", "rq1_family", "rq2_multitask", "rq3_resolution"} <= names
    for name in provenance["artefacts"]:
        assert (paper_dir / name).stat().st_size > 0, name
    for stem in ("per_class_iou_heatmap", "miou_vs_throughput"):
        assert {f"figures/{stem}.png", f"figures/{stem}.pdf"} <= set(provenance["artefacts"])
    index = (paper_dir / "index.html").read_text()
    assert "99_comparison.html" in index and "tables/rq1_family.md" in index


def test_tables_numbers_equal_the_runs_metrics(smoke_paper: dict) -> None:
    root = smoke_paper["root"]
    runs = report.load_runs(root / "runs")
    for poc in runs["poc"].unique():
        table = pd.read_csv(root / "paper" / "tables" / f"encoders_{poc}.csv", comment="#")  # line 1: the banner
        for _, row in table.iterrows():
            mine = runs[(runs["poc"] == poc) & (runs["variant"] == "") & (runs["encoder"] == row["encoder"])]
            assert float(row["miou_mean (%)"]) == pytest.approx(100 * mine["miou"].mean())  # percent, as md/tex
            assert len(mine) == row["n_runs"] == row["n_planned"]


def test_a_second_paper_skips_everything(smoke_paper: dict) -> None:
    again = subprocess.run(smoke_paper["command"], capture_output=True, text=True, cwd=smoke_paper["root"])
    assert again.returncode == 0, again.stderr[-4000:]
    assert "paper: 0 of" in again.stdout and "comparison up to date" in again.stdout
    assert "[done" not in again.stdout


def test_a_stop_signal_reaches_the_kernel_and_asks_for_a_requeue(tmp_path: Path) -> None:
    """SIGUSR1 sent to ``paper --execute`` (as SLURM does before the time limit) reaches the kernel."""
    import nbformat

    template = tmp_path / "stop.ipynb"
    cell = nbformat.v4.new_code_cell(
        "import os, signal, time\n"
        "class Interrupted(RuntimeError):  # heritage.training.engine.Interrupted, as the training loop raises it\n"
        "    pass\n"
        "def stop(signum, frame):\n"
        "    raise Interrupted('checkpoint saved')\n"
        "signal.signal(signal.SIGUSR1, stop)\n"
        "os.kill(os.getppid(), signal.SIGUSR1)  # the executing process, as a batch job's command\n"
        "time.sleep(120)")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), template)
    job = NotebookJob(name="stop", template=template, output=tmp_path / "stop.out.ipynb",
                      html=tmp_path / "stop.html", parameters={}, key="stop")
    result = subprocess.run([sys.executable, "-m", "heritage", "paper", "--execute", str(write_job_file(job))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == errors.EXIT_REQUEUE, result.stderr[-3000:]
    assert "stop: checkpoint saved" in result.stderr and not job.stamp.exists()


def test_run_reports_hold_no_stderr_and_the_paper_reads_as_one(smoke_paper: dict) -> None:
    import nbformat
    import shutil

    root = smoke_paper["root"]
    for planned in run_configs.planned_configs("smoke", None, root / "data", root / "runs"):
        notebook = nbformat.read(config.run_dir(planned) / "notebook.ipynb", as_version=4)
        noise = [output.get("text", "")[:200] for cell in notebook.cells for output in cell.get("outputs", [])
                 if output.get("name") == "stderr"]
        assert not noise, f"{planned.poc_key}/{planned.encoder}: {noise}"  # no warnings, no progress bars
        assert len(list((config.run_dir(planned) / "predictions").glob("*.png"))) >= 6
    index = (root / "paper" / "index.html").read_text()
    assert "Research questions" in index and "<table class=\"dataframe data\">" in index
    assert (root / "paper" / "paper.tex").is_file()
    assert (root / "paper" / "paper.pdf").is_file() == (shutil.which("pdflatex") is not None)


def test_the_damage_maps_show_the_best_flagship_runs_own_test_scans(smoke_paper: dict) -> None:
    from heritage.report import gallery
    from heritage.data import splits

    root = smoke_paper["root"]
    maps = root / "paper" / gallery.GALLERY_DIR
    record = fileio.read_json(maps / gallery.RECORD_FILE)
    configs = run_configs.planned_configs("smoke", [gallery.POC], root / "data", root / "runs")
    main = {str(config.run_dir(c)): c for c in configs if c.variant is None}
    chosen = main[record["run_dir"]]
    assert max(c["val_miou"] for c in record["candidates"]) == next(
        c["val_miou"] for c in record["candidates"] if c["run_dir"] == record["run_dir"])
    _, _, test = splits.fold_ids(splits.load_manifest(root / "data", chosen.protocol), chosen.fold)
    assert len(record["scans"]) == gallery.N_SCANS and set(record["scans"]) <= set(test)
    for sample_id in record["scans"]:
        assert (maps / sample_id / "report.html").is_file()
    assert "damage-maps/index.html" in (root / "paper" / "index.html").read_text()
    assert "damage maps up to date" in paper_again(smoke_paper)


def paper_again(smoke_paper: dict) -> str:
    again = subprocess.run(smoke_paper["command"], capture_output=True, text=True, cwd=smoke_paper["root"])
    assert again.returncode == 0, again.stderr[-4000:]
    return again.stdout
