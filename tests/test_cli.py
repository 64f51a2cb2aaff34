"""``python -m heritage`` on bad input: one line ``heritage <command>: <message>`` and an exit code, no traceback.

The bad-input corpus (missing, empty and wrong folders, damaged files) is built by each test in its
temporary folder. Most cases call ``cli.main`` in this process (stderr captured at the file
descriptor); the entry point itself, a resumed training and ``--help`` run as real subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from heritage import cli, config, errors, fileio
from heritage.pipeline.jobs import NotebookJob, write_job_file
from heritage.data import stats

SMOKE_POC = "poc58_baseline"


def report_lines(stderr: str) -> list[str]:
    """stderr without progress bars (tqdm redraws its bar with \\r; the report has none)."""
    return [line for line in stderr.split("\n") if line.strip() and "\r" not in line]


def assert_one_line(code: int, stderr: str, command: str, expected_code: int = errors.EXIT_BAD_INPUT,
                    *fragments: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = report_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"heritage {command}: "), lines[0]
    assert code == expected_code, stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def heritage(*argv: str, cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != errors.DEBUG_ENVIRONMENT_VARIABLE}
    environment.update(NO_ALBUMENTATIONS_UPDATE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "heritage", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=timeout)


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Bad inputs of every kind; the working directory is ``tmp_path`` (nothing lands in the repository)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(errors.DEBUG_ENVIRONMENT_VARIABLE, raising=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file.txt").write_text("not a folder\n")
    (tmp_path / "not_parquet.parquet").write_text("junk")
    (tmp_path / "bad_metadata").mkdir()
    (tmp_path / "bad_metadata" / "metadata.csv").write_text("id,material\nx,Paper\n")
    (tmp_path / "damaged_run").mkdir()
    (tmp_path / "damaged_run" / "checkpoint_best.pt").write_bytes(b"\x80\x02garbage" * 100)
    (tmp_path / "bad_job.json").write_text("{\n")
    (tmp_path / "list.json").write_text("[]\n")
    (tmp_path / "unknown_keys.json").write_text('{"name": "x", "colour": "red"}\n')
    (tmp_path / "bad_config.yaml").write_text("epochs: [1,\n")
    fileio.write_bytes(tmp_path / "scan.png", fileio.encode_png(np.zeros((40, 60, 3), dtype=np.uint8)))
    return {"missing": tmp_path / "missing", **{p.stem: p for p in tmp_path.iterdir()}}


# (command as printed, argv with {corpus} names, fragment the message must contain)
BAD_INPUTS = [
    ("data synth", ["data", "synth", "--out", "{a_file}", "--n-images", "2"], "a_file.txt"),
    ("data synth", ["data", "synth", "--out", "{empty}", "--n-images", "0"], "n_images"),
    ("data ingest", ["data", "ingest", "--source", "{missing}", "--out", "{empty}"], "missing"),
    ("data ingest", ["data", "ingest", "--source", "{empty}", "--out", "{missing}"], "parquet"),
    ("data ingest", ["data", "ingest", "--source", "{not_parquet}", "--out", "{missing}"], "not_parquet.parquet"),
    ("data augment", ["data", "augment", "--data", "{missing}"], "missing"),
    ("data augment", ["data", "augment", "--data", "{empty}"], "metadata.csv"),
    ("data augment", ["data", "augment", "--data", "{bad_metadata}"], "metadata.csv"),
    ("data split", ["data", "split", "--data", "{missing}", "--protocol", "holdout"], "missing"),
    ("data split", ["data", "split", "--data", "{a_file}", "--protocol", "all"], "a_file.txt"),
    ("data split", ["data", "split", "--data", "{bad_metadata}", "--protocol", "kfold"], "metadata.csv"),
    ("data weights", ["data", "weights", "--data", "{missing}", "--protocol", "holdout", "--fold", "holdout"],
     "missing"),
    ("data weights", ["data", "weights", "--data", "{empty}", "--protocol", "kfold", "--fold", "fold0"], "empty"),
    ("data stats", ["data", "stats", "--data", "{missing}"], "missing"),
    ("data stats", ["data", "stats", "--data", "{empty}"], "metadata.csv"),
    ("data stats", ["data", "stats", "--data", "{bad_metadata}"], "metadata.csv"),
    ("predict", ["predict", "--run", "{missing}", "--input", "{scan}", "--out", "{missing}"], "missing"),
    ("predict", ["predict", "--run", "{empty}", "--input", "{scan}", "--out", "{missing}"], "checkpoint"),
    ("predict", ["predict", "--run", "{damaged_run}", "--input", "{scan}", "--out", "{missing}"],
     "damaged_run/checkpoint_best.pt"),
    ("predict", ["predict", "--run", "{damaged_run}", "--input", "{empty}", "--out", "{missing}"], "empty"),
    ("train", ["train", "--poc", SMOKE_POC, "--data", "{missing}"], "missing"),
    ("train", ["train", "--poc", SMOKE_POC, "--data", "{empty}"], "empty"),
    ("train", ["train", "--poc", SMOKE_POC, "epoch=3"], "'epochs'"),  # a bad config key, with the suggestion
    ("train", ["train", "--poc", "no_such_poc"], "no_such_poc"),
    ("train", ["train", "--config", "{bad_config}"], "bad_config.yaml"),  # the YAML parser's message spans lines
    ("train", ["train", "--config", "{missing}"], "missing"),
    ("paper", ["paper", "--execute", "{bad_job}"], "bad_job.json"),
    ("paper", ["paper", "--execute", "{list}"], "list.json"),
    ("paper", ["paper", "--execute", "{unknown_keys}"], "colour"),
    ("paper", ["paper", "--execute", "{missing}"], "missing"),
    ("paper", ["paper", "--no-wait"], "slurm"),  # refused before the stand-in data is made
]


@pytest.mark.parametrize(("command", "argv", "fragment"), BAD_INPUTS,
                         ids=[f"{c}:{' '.join(a[len(c.split()):])}" for c, a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(command, argv, fragment, corpus, capfd) -> None:
    names = {key: str(path) for key, path in corpus.items()}
    code = cli.main([a.format(**names) for a in argv])
    assert_one_line(code, capfd.readouterr().err, command, errors.EXIT_BAD_INPUT, fragment)
    assert not corpus["missing"].exists()
    assert not (Path.cwd() / "data").exists()


def test_the_entry_point_exits_with_the_code(tmp_path) -> None:
    result = heritage("data", "stats", "--data", tmp_path / "missing", cwd=tmp_path)
    assert_one_line(result.returncode, result.stderr, "data stats", errors.EXIT_BAD_INPUT, "missing")


def _unknown_parameter_job(tmp_path: Path, source: str, parameters: dict) -> Path:
    template = tmp_path / "template.ipynb"
    cell = nbformat.v4.new_code_cell("epochs = 1\nlr = None")
    cell.metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell(source)]), template)
    job = NotebookJob(name="job", template=template, output=tmp_path / "out" / "executed.ipynb",
                      html=tmp_path / "out" / "executed.html", parameters=parameters, key="k")
    return write_job_file(job)


def test_paper_execute_refuses_an_unknown_parameter_by_name(tmp_path, corpus, capfd) -> None:
    job_file = _unknown_parameter_job(tmp_path, "x = epochs", {"epoch": 2})
    code = cli.main(["paper", "--execute", str(job_file)])
    line = assert_one_line(code, capfd.readouterr().err, "paper", errors.EXIT_BAD_INPUT, "template.ipynb")
    assert "unknown notebook parameter(s) 'epoch' (did you mean 'epochs'?)" in line
    assert not (tmp_path / "out" / "executed.ipynb").exists()  # refused before executing


def test_paper_execute_of_a_failing_cell_shows_the_error_the_cell_and_the_notebook(tmp_path) -> None:
    job_file = _unknown_parameter_job(tmp_path, "value = epochs * 2\nraise ValueError(f'bad value {value}')",
                                      {"epochs": 3})
    result = heritage("paper", "--execute", job_file, cwd=tmp_path, timeout=300)
    line = assert_one_line(result.returncode, result.stderr, "paper", errors.EXIT_FAILED)
    executed = tmp_path / "out" / "executed.ipynb"
    # exception type and message, the cell (Jupyter's number, its first line), the executed notebook
    assert "ValueError: bad value 6" in line
    assert "In [3]: value = epochs * 2" in line
    assert line.endswith(f"executed notebook: {executed}")
    assert executed.is_file() and not (tmp_path / "out" / "executed.stamp.json").exists()


def test_training_on_a_damaged_resume_checkpoint_is_one_line(tmp_path, data_dir) -> None:
    runs_root = tmp_path / "runs"
    planned = config.load_run_config(SMOKE_POC, "smoke", overrides={"data_dir": str(data_dir),
                                                                     "runs_root": str(runs_root)})
    folder = config.run_dir(planned)
    folder.mkdir(parents=True)
    # a damaged pickle (torch raises UnpicklingError), and no earlier checkpoint to fall back to
    (folder / "checkpoint_last.pt").write_bytes(b"\x80\x02garbage" * 100)
    result = heritage("train", "--poc", SMOKE_POC, "--data", data_dir, f"runs_root={runs_root}", "preload=false",
                      cwd=tmp_path)
    assert_one_line(result.returncode, result.stderr, "train", errors.EXIT_BAD_INPUT, "checkpoint_last.pt")
    assert not (folder / "metrics.json").exists()


def test_an_unexpected_exception_is_a_bug_with_its_traceback(corpus, capfd, monkeypatch) -> None:
    def broken(args):
        return {}["no such key"]

    monkeypatch.setattr(stats, "main", broken)
    code = cli.main(["data", "stats", "--data", str(corpus["empty"])])
    err = capfd.readouterr().err
    assert code == errors.EXIT_BUG == 70
    assert err.startswith("Traceback (most recent call last):") and "KeyError: 'no such key'" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("heritage data stats: internal error (KeyError): this is a bug in heritage")


@pytest.mark.parametrize("how", ["--debug", "HERITAGE_DEBUG=1"])
def test_debug_shows_the_traceback_of_an_expected_error(how, corpus, capfd, monkeypatch) -> None:
    argv = ["data", "stats", "--data", str(corpus["missing"])]
    if how == "--debug":
        argv.append("--debug")
    else:
        monkeypatch.setenv(errors.DEBUG_ENVIRONMENT_VARIABLE, "1")
    code = cli.main(argv)
    err = capfd.readouterr().err
    assert code == errors.EXIT_BAD_INPUT
    assert "Traceback (most recent call last):" in err and "MissingInputError" in err
    assert err.strip().splitlines()[-1].startswith("heritage data stats: ")


def test_help_imports_no_torch(tmp_path) -> None:
    commands = [["train"], ["predict"], ["paper"], ["weights"], *(["data", step] for step in cli.DATA_COMMANDS)]
    script = ("import contextlib, io, sys\nfrom heritage import cli\n"
              f"for argv in {commands!r}:\n"
              "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
              "        cli.main([*argv, '--help'])\n"
              "    assert 'torch' not in sys.modules, argv\n"
              "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])})
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


def test_fileio_refuses_to_write_below_a_file_as_an_output_error(tmp_path) -> None:
    (tmp_path / "a_file").write_text("")
    with pytest.raises(errors.OutputError, match="a_file/x.json: cannot write here"):
        fileio.write_json(tmp_path / "a_file" / "x.json", {})
