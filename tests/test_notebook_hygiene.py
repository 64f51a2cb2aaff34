"""Notebooks: stored without outputs (`make strip` clears them), on the project kernel; `make lab`."""

import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; run `make strip`"


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebooks"


PROJECT_KERNEL_NOTEBOOKS = NOTEBOOKS


@pytest.mark.parametrize("path", PROJECT_KERNEL_NOTEBOOKS, ids=[p.name for p in PROJECT_KERNEL_NOTEBOOKS])
def test_notebook_records_the_project_kernel(path):
    from heritage.pipeline import execution

    spec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
    # the kernel `make env` and execution.ensure_kernel register, so JupyterLab opens it in .venv
    assert spec.get("name") == execution.KERNEL_NAME and spec.get("display_name") == "heritage (.venv)", path.name


POC_NOTEBOOKS = [p for p in NOTEBOOKS if p.name.startswith("poc")]


@pytest.mark.parametrize("path", POC_NOTEBOOKS, ids=[p.name for p in POC_NOTEBOOKS])
def test_run_reports_show_results_first_and_fold_the_configuration(path):
    sources = [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    first = next(i for i, s in enumerate(sources) if "report.run_headline(metrics)" in s)
    assert "report.results_table(metrics)" in sources[first]
    assert "report.per_class_frame(metrics)" in sources[first + 1]
    assert "report.thin_headline(metrics)" in sources[first + 2]  # thin damage beside the residual filter
    assert "report.thin_frame(metrics)" in sources[first + 2]
    assert sources[-1] == "HTML(report.config_details_html(config))"
    assert not any("report.config_table(" in s for s in sources[:-1]), "the configuration is shown only at the end"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_prepares_the_data_then_starts_jupyterlab():
    repo = Path(__file__).parents[1]
    commands = subprocess.run(["make", "-n", "lab"], cwd=repo, capture_output=True, text=True, check=True).stdout
    lines = commands.splitlines()
    data = next(i for i, line in enumerate(lines) if "--prepare-data-only" in line)
    lab = next(i for i, line in enumerate(lines) if "jupyter lab" in line)
    assert data < lab
    assert ("--allow-root" in lines[lab]) == (os.getuid() == 0)
