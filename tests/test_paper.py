"""heritage.pipeline.paper: planning, skipping and failure handling, with a fake executor instead of papermill."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from heritage import config, errors, fileio
from heritage.pipeline import execution, paper, preparation, run_configs, schedulers
from heritage.training import train
from heritage.training import runs
from heritage.pipeline.jobs import (COMPARISON_NOTEBOOK, DATASET_NOTEBOOK, NotebookJob, comparison_job, damage_maps_job,
                                    dataset_job, is_up_to_date, job_command, run_job_for, write_job_file,
                                    write_run_config)

POCS = ["poc55_multitask", "poc58_baseline"]


def make_template(path: Path, parameters_source: str | None = "epochs = 1\nlr = None  # None: from the POC") -> Path:
    cells = [nbformat.v4.new_code_cell("import os")]
    if parameters_source is not None:
        cells.append(nbformat.v4.new_code_cell(parameters_source, metadata={"tags": ["parameters"]}))
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


class FakeExecutor:
    """Writes what an executed notebook leaves behind (a run's metrics.json made by ``code``: the current code
    unless given); raises for the jobs named in ``fail``; records which runs still had their metrics.json."""

    def __init__(self, fail: tuple[str, ...] = (), code: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = set(fail)
        self.code = code or runs.code_hash()
        self.found_metrics: dict[str, bool] = {}
        self.parameters: dict[str, dict] = {}

    def __call__(self, job: NotebookJob) -> None:
        self.calls.append(job.name)
        self.parameters[job.name] = job.parameters
        if job.run_dir is not None:
            self.found_metrics[job.name] = (job.run_dir / "metrics.json").is_file()
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text("{}")  # papermill writes the notebook as it goes, failed cells included
        if job.name in self.fail:
            raise RuntimeError("\n---------\nValueError: cell 4 raised: boom")
        job.html.write_text("<html></html>")
        if job.run_dir is not None:  # a POC notebook trains its run, which ends with metrics.json
            fileio.write_json(job.run_dir / "metrics.json", {"config_hash": job.key, "code_hash": self.code,
                                                             "test": {"miou": 0.25}})
        elif job.name == "comparison":
            fileio.write_json(job.output.parent / "provenance.json", {"artefacts": {}})
        elif job.name == "damage-maps":
            (job.output.parent / "index.html").write_text("<html></html>")


# The parameters each template declares (what `paper` checks its jobs' parameters against).
TEMPLATE_PARAMETERS = {
    **{poc: [run_configs.CONFIG_PARAMETER] for poc in POCS},
    DATASET_NOTEBOOK: ["data_dir"],
    COMPARISON_NOTEBOOK: ["profile", "pocs", "settings", "data_dir", "runs_root", "paper_dir"],
}


@pytest.fixture
def notebooks(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name, parameters in TEMPLATE_PARAMETERS.items():
        make_template(folder / f"{name}.ipynb", "\n".join(f"{p} = None" for p in parameters))
    return folder


def make_jobs(tmp_path: Path, data_dir: Path, notebooks: Path, code: str | None = None, keep: bool = False,
              **overrides_by_poc: dict):
    """The run jobs and the comparison of POCS, as ``paper`` makes them when the current code hash is ``code``
    (None: runs are kept whatever code made them), ``keep``: with --keep-stale."""
    configs = [c for poc in POCS for c in config.plan(
        "smoke", [poc], data_dir, overrides={"runs_root": str(tmp_path / "runs"), **overrides_by_poc.get(poc, {})})]
    jobs = [run_job_for(c, notebooks, None if keep else code) for c in configs]
    comparison = comparison_job(configs, notebooks, tmp_path / "paper", {"profile": "smoke"}, code or "")
    return jobs, comparison


def states(results: list[schedulers.JobResult]) -> dict[str, str]:
    return {r.job.name: r.state for r in results}


def test_a_second_paper_with_nothing_changed_executes_nothing(tmp_path, data_dir, notebooks) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    assert [j.name for j in jobs] == ["poc55_multitask/convnext_tiny/holdout-holdout",
                                      "poc58_baseline/convnext_tiny/holdout-holdout"]
    first = FakeExecutor()
    results = paper.run_paper(jobs, comparison, schedulers.LocalScheduler(first))
    assert first.calls == [*(j.name for j in jobs), "comparison"]
    assert set(states(results).values()) == {schedulers.DONE}
    assert all(job.stamp.is_file() for job in [*jobs, comparison])

    second = FakeExecutor()
    results = paper.run_paper(*make_jobs(tmp_path, data_dir, notebooks), schedulers.LocalScheduler(second))
    assert second.calls == []
    assert set(states(results).values()) == {schedulers.SKIPPED}


def test_runs_made_by_other_code_train_again_unless_kept(tmp_path, data_dir, notebooks, capsys) -> None:
    paper.run_paper(*make_jobs(tmp_path, data_dir, notebooks, code="0ld"), schedulers.LocalScheduler(FakeExecutor(code="0ld")))
    unchanged = FakeExecutor(code="0ld")
    paper.run_paper(*make_jobs(tmp_path, data_dir, notebooks, code="0ld"), schedulers.LocalScheduler(unchanged))
    assert unchanged.calls == []

    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks, code="n3w")  # the code changed since
    assert not any(is_up_to_date(job) for job in [*jobs, comparison])
    retrained = FakeExecutor(code="n3w")
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(retrained))
    assert retrained.calls == [*(job.name for job in jobs), "comparison"]
    assert retrained.found_metrics == {job.name: False for job in jobs}  # retired first: the notebook trains again
    assert all(runs.recorded_code_hash(job.run_dir) == "n3w" for job in jobs)
    assert capsys.readouterr().out.count("made by other code (code hash 0ld, now n3w): training it again") == 2

    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks, code="n3w3r", keep=True)  # changed again, kept
    kept = FakeExecutor(code="n3w3r")
    results = paper.run_paper(jobs, comparison, schedulers.LocalScheduler(kept))
    assert kept.calls == ["comparison"]  # it shows which runs predate the current code; no run trains
    assert {states(results)[job.name] for job in jobs} == {schedulers.SKIPPED}
    assert all(runs.recorded_code_hash(job.run_dir) == "n3w" for job in jobs)


def test_paper_says_which_finished_runs_predate_the_code_and_what_becomes_of_them(tmp_path, data_dir, notebooks,
                                                                                   capsys) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks, code="0ld")
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(FakeExecutor(code="0ld")))
    capsys.readouterr()
    paper.say_stale(jobs, "0ld", keep=False)
    assert capsys.readouterr().out == ""
    paper.say_stale(jobs, "n3w", keep=False)
    assert ("2 finished run(s) were made by other code than the current (code hash n3w) and train again "
            "(KEEP_STALE=1 / --keep-stale keeps them)") in capsys.readouterr().out
    paper.say_stale(jobs, "n3w", keep=True)
    assert "2 finished run(s) predate the current code (code hash n3w) and are kept" in capsys.readouterr().out


def test_a_changed_config_hash_reruns_that_run_and_the_comparison(tmp_path, data_dir, notebooks) -> None:
    paper.run_paper(*make_jobs(tmp_path, data_dir, notebooks), schedulers.LocalScheduler(FakeExecutor()))
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks, poc58_baseline={"epochs": 7})
    executor = FakeExecutor()
    results = paper.run_paper(jobs, comparison, schedulers.LocalScheduler(executor))
    assert executor.calls == ["poc58_baseline/convnext_tiny/holdout-holdout", "comparison"]
    assert states(results)["poc55_multitask/convnext_tiny/holdout-holdout"] == schedulers.SKIPPED


def test_a_changed_notebook_or_a_missing_report_reruns(tmp_path, data_dir, notebooks) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(FakeExecutor()))
    (notebooks / "poc55_multitask.ipynb").write_text('{"template": "edited"}')
    jobs[1].html.unlink()
    executor = FakeExecutor()
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(executor))
    assert executor.calls == [jobs[0].name, jobs[1].name, "comparison"]


def test_metrics_of_another_configuration_make_a_run_incomplete(tmp_path, data_dir, notebooks) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(FakeExecutor()))
    fileio.write_json(jobs[0].run_dir / "metrics.json", {"config_hash": "another", "test": {"miou": 0.1}})
    assert not is_up_to_date(jobs[0])
    assert is_up_to_date(jobs[1])


def test_only_the_comparison_reruns_when_its_outputs_are_missing(tmp_path, data_dir, notebooks) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(FakeExecutor()))
    (tmp_path / "paper" / "provenance.json").unlink()
    executor = FakeExecutor()
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(executor))
    assert executor.calls == ["comparison"]


def test_a_failing_run_is_reported_and_the_others_continue(tmp_path, data_dir, notebooks, capsys) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    failing = jobs[0]
    results = paper.run_paper(jobs, comparison, schedulers.LocalScheduler(FakeExecutor(fail=(failing.name,))))
    assert states(results) == {failing.name: schedulers.FAILED, jobs[1].name: schedulers.DONE,
                               "comparison": schedulers.DONE}
    failed = next(r for r in results if r.state == schedulers.FAILED)
    assert failed.error == "RuntimeError: ValueError: cell 4 raised: boom"
    status = paper.report_results(results, tmp_path / "paper", jobs, comparison, seconds=1.0)
    assert status == 1
    err = capsys.readouterr().err
    assert f"see {failing.output}" in err and failing.name in err
    assert failing.output.is_file() and not failing.stamp.exists()
    index = (tmp_path / "paper" / "index.html").read_text()
    assert "<tr class='failed'>" in index
    assert "../runs/poc58_baseline/convnext_tiny/holdout-holdout/report.html" in index

    retry = FakeExecutor()
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(retry))
    assert retry.calls == [failing.name, "comparison"]  # the failed run was not stamped: it runs again


def test_report_results_is_zero_without_failures(tmp_path, data_dir, notebooks) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    results = paper.run_paper(jobs, comparison, schedulers.LocalScheduler(FakeExecutor()))
    assert paper.report_results(results, tmp_path / "paper", jobs, comparison, seconds=1.0) == 0


def test_a_job_that_writes_no_outputs_fails(tmp_path, data_dir, notebooks) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    with pytest.raises(RuntimeError, match="did not write .*report.html"):
        execution.run_job(jobs[0], lambda job: None)


def test_job_descriptions_round_trip_through_json(tmp_path, data_dir, notebooks) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    for job in [*jobs, comparison]:
        path = write_job_file(job)
        assert NotebookJob.from_json(fileio.read_json(path)) == job
        assert job_command(path)[-2:] == ["--execute", str(path)]


def test_a_run_job_writes_the_planned_config_that_its_notebook_reads(tmp_path, data_dir) -> None:
    for planned in run_configs.planned_configs("smoke", None, data_dir, tmp_path / "runs"):
        job = run_job_for(planned, tmp_path / "notebooks")
        assert set(job.parameters) == {run_configs.CONFIG_PARAMETER}  # the one parameter: no second schema
        write_run_config(job)
        path = Path(job.parameters[run_configs.CONFIG_PARAMETER])
        assert path == config.run_dir(planned).resolve() / "config.yaml"
        resolved = run_configs.poc_config(planned.poc, path)
        assert resolved == planned and resolved.config_hash() == planned.config_hash()


def test_a_run_job_carries_overridden_training_values_to_its_notebook(tmp_path, data_dir) -> None:
    planned = config.plan("smoke", ["poc58_baseline"], data_dir,
                          overrides={"epochs": 1, "image_size": 32, "max_train_samples": 4,
                                     "runs_root": str(tmp_path / "runs")})[0]
    job = NotebookJob.from_json(run_job_for(planned, tmp_path).to_json())  # as --execute reads it
    write_run_config(job)
    resolved = run_configs.poc_config("poc58_baseline", job.parameters[run_configs.CONFIG_PARAMETER])
    assert (resolved.epochs, resolved.image_size, resolved.max_train_samples) == (1, 32, 4)
    assert resolved.config_hash() == planned.config_hash()


def test_a_poc_notebook_without_a_config_takes_its_smoke_run(data_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(run_configs.ENV_DATA, str(data_dir))
    monkeypatch.setenv(run_configs.ENV_RUNS, str(tmp_path / "runs"))
    default = run_configs.poc_config("poc58_baseline")
    assert default == config.load_run_config("poc58_baseline", "smoke", overrides={
        "data_dir": str(data_dir.resolve()), "runs_root": str((tmp_path / "runs").resolve())})
    with pytest.raises(errors.MissingInputError, match="config_path: .*missing.yaml not found"):
        run_configs.poc_config("poc58_baseline", tmp_path / "missing.yaml")
    other = tmp_path / "other.yaml"
    other.write_text(dataclasses.replace(default, encoder="convnext_tiny").to_yaml())
    with pytest.raises(config.ConfigError, match="a configuration of 'poc58_baseline', not of this notebook's "
                                                 "'poc55_multitask'"):
        run_configs.poc_config("poc55_multitask", other)


def test_the_default_synthetic_folders_are_configs(monkeypatch) -> None:
    monkeypatch.delenv(run_configs.ENV_DATA, raising=False)
    assert {profile: spec["data_dir"] for profile, spec in preparation.SYNTHETIC.items()} == config.DEFAULT_DATA_DIRS
    assert run_configs.resolve_paths(None, None, None, "full")[0] == (run_configs.REPO_ROOT
                                                                       / config.DEFAULT_DATA_DIRS["full"])


def test_local_scheduler_refuses_slurm_options() -> None:
    args = argparse.Namespace(no_wait=True, attach=False)
    with pytest.raises(errors.InputError, match="slurm only"):  # one line from the CLI, not a bare SystemExit
        paper.make_scheduler("local", args)


def test_unknown_notebook_parameters_are_refused_by_name(tmp_path) -> None:
    template = make_template(tmp_path / "t.ipynb")
    assert execution.notebook_parameter_names(template) == ["epochs", "lr"]
    execution.check_parameters(template, {"epochs": 3, "lr": 0.1})
    with pytest.raises(errors.InputError, match=r"unknown notebook parameter\(s\) 'epoch' \(did you mean "
                                                r"'epochs'\?\), 'colour'; its parameters: epochs, lr"):
        execution.check_parameters(template, {"epoch": 3, "colour": "red"})
    bare = make_template(tmp_path / "bare.ipynb", parameters_source=None)
    execution.check_parameters(bare, {})
    with pytest.raises(errors.InputError, match="no cell tagged 'parameters'"):
        execution.check_parameters(bare, {"epochs": 3})
    with pytest.raises(errors.MissingInputError, match="notebook template not found"):
        execution.check_parameters(tmp_path / "missing.ipynb", {})
    (tmp_path / "broken.ipynb").write_text("{")
    with pytest.raises(errors.InputError, match="broken.ipynb: not a readable notebook"):
        execution.check_parameters(tmp_path / "broken.ipynb", {})


def test_execute_notebook_refuses_an_unknown_parameter_before_papermill_runs(tmp_path, monkeypatch) -> None:
    import papermill

    def papermill_must_not_run(*args, **kwargs):
        raise AssertionError("papermill ran with an unknown parameter")

    monkeypatch.setattr(papermill, "execute_notebook", papermill_must_not_run)
    job = NotebookJob(name="j", template=make_template(tmp_path / "t.ipynb"), output=tmp_path / "out.ipynb",
                      html=tmp_path / "out.html", parameters={"epoch": 3}, key="k")
    with pytest.raises(errors.InputError, match="'epoch' \\(did you mean 'epochs'\\?\\)"):
        execution.execute_notebook(job)
    assert not job.output.exists()


def test_a_failed_cell_is_reported_with_its_exception_message_and_cell() -> None:
    from papermill.exceptions import PapermillExecutionError

    err = PapermillExecutionError(cell_index=5, exec_count=3, source="\nmetrics = train(config)\nprint(metrics)",
                                  ename="ConfigError", evalue="image_size: 30 is not\na multiple of 32",
                                  traceback=["\x1b[31m---------\x1b[0m", "ConfigError Traceback", "Cell In[3], line 1"])
    assert execution._first_line(err) == ("ConfigError: image_size: 30 is not a multiple of 32 "
                                          "(cell In [3]: metrics = train(config))")
    # a local run's failure line carries it, with the executed notebook on the next line
    job = NotebookJob(name="poc/enc/split", template=Path("t.ipynb"), output=Path("runs/x/notebook.ipynb"),
                      html=Path("runs/x/report.html"), parameters={}, key="k")
    line = schedulers.JobResult(job, schedulers.FAILED, 1.0, execution._first_line(err)).line()
    assert "poc/enc/split: ConfigError: image_size: 30" in line and "executed notebook: runs/x/notebook.ipynb" in line


def test_a_job_file_must_describe_a_job(tmp_path) -> None:
    for content, message in (("[]", "is a JSON object, got list"), ('{"name": "x"}', "lacks the keys"),
                             ('{"name": "x", "colour": 1}', "unknown keys \\['colour'\\]")):
        path = tmp_path / "job.json"
        path.write_text(content)
        with pytest.raises(errors.InputError, match=f"job.json: .*{message}"):
            paper.execute_job_file(path)


def test_under_srun_process_0_renders_the_notebook_and_the_others_only_train(tmp_path, data_dir, monkeypatch,
                                                                              capsys) -> None:
    """`srun` starts one `paper --execute` per task (GPU): one notebook, report and stamp, one DDP training."""
    run = config.load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir),
                                                                       "runs_root": str(tmp_path / "runs")})
    job = run_job_for(run, paper.NOTEBOOKS_DIR)
    path = write_job_file(job)
    trained, executed = [], []
    monkeypatch.setattr(train, "run_training", lambda config, progress: trained.append(config))
    monkeypatch.setattr(paper, "run_job", lambda job, execute: executed.append(job.name))
    monkeypatch.setattr(paper, "ensure_kernel", lambda: None)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")  # inside the srun step
    for rank in (1, 0):
        monkeypatch.setenv("SLURM_PROCID", str(rank))
        monkeypatch.setenv("SLURM_LOCALID", str(rank))
        assert paper.execute_job_file(path) == 0
    assert trained == [run] and executed == [job.name]  # rank 1 joined the training, rank 0 executed the notebook
    out = capsys.readouterr().out
    assert f"{job.name}: process 1 of 2 trains only" in out and f"{job.name}: process 0 of 2 renders" in out
    assert not job.output.exists() and not job.stamp.exists()  # nothing of the notebook's from rank 1
    dataset = dataset_job(data_dir, paper.NOTEBOOKS_DIR, tmp_path / "paper")  # not a run: nothing to join
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert paper.execute_job_file(write_job_file(dataset)) == 0 and trained == [run]
    assert executed == [job.name] and not dataset.output.exists()

    # a finished run: the others join no training when process 0's notebook will read it, and do when process 0
    # retires it first because other code made it
    folder = config.run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    fileio.write_json(folder / "metrics.json", {"config_hash": run.config_hash(), "code_hash": "before"})
    for code, joins in (("before", False), ("now", True)):
        trained.clear()
        path = write_job_file(dataclasses.replace(job, code_hash=code))
        assert paper.execute_job_file(path) == 0 and trained == ([run] if joins else []), code


def test_prepare_data_completes_a_folder_without_redoing_it(tmp_path, data_dir) -> None:
    assert preparation.prepare_data("smoke", source=data_dir) == data_dir  # a ready data folder is used in place
    copy = Path(shutil.copytree(data_dir, tmp_path / "data"))
    shutil.rmtree(copy / "splits")
    before = (copy / "metadata.csv").read_bytes()
    assert preparation.prepare_data("smoke", data_dir=copy) == copy
    assert sorted(p.name for p in (copy / "splits").iterdir()) == ["holdout.json", "kfold.json", "leaky.json",
                                                                  "loco.json", "lomo.json"]
    assert (copy / "metadata.csv").read_bytes() == before  # neither re-ingested nor re-augmented


def test_the_smoke_plan_runs_the_flagship_under_the_seeds_protocol_once_per_encoder(data_dir) -> None:
    """Issue 12: the flagship's main configuration on the leaky split, one fold, beside its kfold runs."""
    planned = config.plan("smoke", ["poc59v2_flagship"], data_dir)
    seeds = [c for c in planned if c.variant == "seeds_protocol"]
    assert [(c.encoder, c.protocol, c.fold) for c in seeds] == [
        (e, "leaky", "leaky") for e in ("convnext_tiny", "mit_b3", "maxvit_tiny")]
    main = {c.encoder: c for c in planned if c.variant is None and c.fold == "fold0"}
    for run in seeds:  # nothing but the protocol and fold (and, in smoke, how often it validates) differs
        assert run.eval_every == run.epochs  # smoke: once, after the last epoch (its held-out part is ~10x kfold's)
        assert dataclasses.replace(run, variant=None, protocol="kfold", fold="fold0", eval_every=1) == main[run.encoder]
    assert {c.fold for c in planned if c.protocol == "kfold"} == {"fold0", "fold1"}
    assert len(planned) == 21  # 3 encoders x 2 folds, 6 one-encoder arms (loss, resolution, patch, thin) x 2 folds, 3 leaky runs


def test_prepare_data_rebuilds_a_manifest_made_stale_by_new_samples(tmp_path, data_dir, capsys) -> None:
    from heritage.data import datafolder, splits

    copy = Path(shutil.copytree(data_dir, tmp_path / "data"))
    table = datafolder.read_metadata(copy)
    dropped = table["source_id"].iloc[0]
    datafolder.write_metadata(copy, table[table["source_id"] != dropped])  # the data changed after the split
    with pytest.raises(errors.InputError, match="stale manifest"):
        splits.load_manifest(copy, "kfold")
    assert preparation.prepare_data("smoke", data_dir=copy) == copy
    assert "data: rebuilding the kfold manifest" in capsys.readouterr().out
    for protocol in splits.ALL_PROTOCOLS:
        manifest = splits.load_manifest(copy, protocol)  # now current: loads without refusal
        assert all(dropped not in fold["train"] + fold["val"] + fold["test"] for fold in manifest["folds"])


def test_the_command_wires_data_plan_scheduler_and_index(tmp_path, data_dir, notebooks, monkeypatch, capsys) -> None:
    from heritage import cli

    executor = FakeExecutor(fail=("poc58_baseline/convnext_tiny/holdout-holdout",))
    monkeypatch.setattr(paper, "execute_notebook", executor)
    monkeypatch.setattr(paper, "ensure_kernel", lambda: None)
    argv = ["paper", "--profile", "smoke", "--data", str(data_dir), "--pocs", *POCS, "--notebooks", str(notebooks),
            "--runs-root", str(tmp_path / "runs"), "--paper-dir", str(tmp_path / "paper")]
    assert cli.main(argv) == 1
    assert executor.calls == ["dataset", *(f"{poc}/convnext_tiny/holdout-holdout" for poc in POCS), "comparison"]
    out, err = capsys.readouterr()
    assert "paper: 3 of 3 notebooks to execute" in out and "1 failed" in out
    assert "poc58_baseline/convnext_tiny/holdout-holdout/notebook.ipynb" in err
    assert (tmp_path / "paper" / "index.html").is_file()

    executor.fail.clear()
    assert cli.main(argv) == 0
    assert executor.calls[-2:] == ["poc58_baseline/convnext_tiny/holdout-holdout", "comparison"]


def command_line(tmp_path: Path, data_dir: Path, notebooks: Path, executor: FakeExecutor, monkeypatch) -> list[str]:
    """``paper``'s arguments for POCS on ``data_dir``, with ``executor`` instead of papermill."""
    monkeypatch.setattr(paper, "execute_notebook", executor)
    monkeypatch.setattr(paper, "ensure_kernel", lambda: None)
    return ["paper", "--data", str(data_dir), "--pocs", *POCS, "--notebooks", str(notebooks),
            "--runs-root", str(tmp_path / "runs"), "--paper-dir", str(tmp_path / "paper")]


def test_the_command_applies_settings_to_every_run_and_to_its_comparison(tmp_path, data_dir, notebooks,
                                                                         monkeypatch) -> None:
    from heritage import cli

    executor = FakeExecutor()
    argv = command_line(tmp_path, data_dir, notebooks, executor, monkeypatch)
    assert cli.main([*argv, "--set", "epochs=2", "grad_clip=0.5"]) == 0
    assert executor.calls == ["dataset", *(f"{poc}/convnext_tiny/holdout-holdout" for poc in POCS), "comparison"]
    for planned in run_configs.planned_configs("smoke", POCS, data_dir, tmp_path / "runs"):
        written = config.RunConfig.from_yaml(config.run_dir(planned) / "config.yaml")
        assert written == dataclasses.replace(planned, epochs=2, grad_clip=0.5)
        assert written.config_hash() != planned.config_hash()  # the settings enter the hash
    assert executor.parameters["comparison"]["settings"] == ["epochs=2", "grad_clip=0.5"]  # it plans the same runs
    execution.check_parameters(paper.NOTEBOOKS_DIR / f"{COMPARISON_NOTEBOOK}.ipynb",  # the real template takes them
                               executor.parameters["comparison"])

    executor.calls.clear()
    assert cli.main([*argv, "--set", "epochs=2", "grad_clip=0.5"]) == 0
    assert executor.calls == []
    assert cli.main(argv) == 0  # without them: other runs
    assert executor.calls == [*(f"{poc}/convnext_tiny/holdout-holdout" for poc in POCS), "comparison"]


@pytest.mark.parametrize(("settings", "message"), [
    (["epoch=2"], r"--set epoch=2: .*unknown key 'epoch' \(did you mean 'epochs'\?\)"),
    (["epochs=3", "image_size=48"], r"--set epochs=3 image_size=48: .*image_size: 48 does not suit encoder"),
    (["epochs=0"], r"--set epochs=0: .*epochs: must be positive, got 0"),
    (["fold=fold1"], r"override 'fold' cannot be used: the plan picks"),
    (["data_dir=elsewhere"], r"--set data_dir=...: the paper takes it from --data / --data-dir"),
    (["epochs"], r"override 'epochs' is not of the form key=value"),
])
def test_bad_settings_are_refused_in_one_line_before_anything_is_prepared(tmp_path, settings, message, monkeypatch,
                                                                          capfd) -> None:
    from heritage import cli

    def refuse_to_prepare_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was being prepared")

    monkeypatch.setattr(paper, "prepare_data", refuse_to_prepare_data)
    argv = ["paper", "--data-dir", str(tmp_path / "data"), "--runs-root", str(tmp_path / "runs"),
            "--paper-dir", str(tmp_path / "paper"), "--set", *settings]
    assert cli.main(argv) == errors.EXIT_BAD_INPUT
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("heritage paper: ") and re.search(message, err), err
    assert not any((tmp_path / name).exists() for name in ("data", "runs", "paper"))


def test_the_command_keeps_runs_of_older_code_only_when_asked(tmp_path, data_dir, notebooks, monkeypatch,
                                                              capsys) -> None:
    from heritage import cli

    executor = FakeExecutor(code="0ld")
    argv = command_line(tmp_path, data_dir, notebooks, executor, monkeypatch)
    monkeypatch.setattr(runs, "code_hash", lambda: "0ld")
    assert cli.main(argv) == 0
    index = tmp_path / "paper" / "index.html"
    assert index.read_text().count("<td>current</td>") == 2

    monkeypatch.setattr(runs, "code_hash", lambda: "n3w")  # the code changed
    executor.code, executor.calls = "n3w", []
    capsys.readouterr()
    assert cli.main([*argv, "--keep-stale"]) == 0
    assert executor.calls == ["comparison"]  # which runs predate the code is shown; none trains
    assert "2 finished run(s) predate the current code (code hash n3w) and are kept" in capsys.readouterr().out
    assert index.read_text().count("<td>predates the current code (0ld)</td>") == 2
    assert "class='skipped stale'" in index.read_text()

    executor.calls = []
    assert cli.main(argv) == 0  # not kept: they train again
    assert executor.calls == [*(f"{poc}/convnext_tiny/holdout-holdout" for poc in POCS), "comparison"]
    assert "<td>predates" not in index.read_text() and index.read_text().count("<td>current</td>") == 2


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_paper_passes_set_and_keep_stale_on() -> None:
    def paper_command(*variables: str) -> str:
        # Under `make test` this make is a sub-make, which prints "Entering directory" lines unless told not to.
        done = subprocess.run(["make", "-n", "--no-print-directory", "paper", *variables], cwd=run_configs.REPO_ROOT,
                              capture_output=True, text=True, check=True)
        return " ".join(done.stdout.replace("\\\n", " ").split())

    assert paper_command("SET=pretrained=false epochs=2", "KEEP_STALE=1").endswith(
        "--set pretrained=false epochs=2 --keep-stale")
    assert "--set" not in paper_command() and "--keep-stale" not in paper_command("KEEP_STALE=0")


def test_the_command_checks_every_template_before_executing_any(tmp_path, data_dir, notebooks, monkeypatch,
                                                                capfd) -> None:
    from heritage import cli

    executor = FakeExecutor()
    monkeypatch.setattr(paper, "execute_notebook", executor)
    monkeypatch.setattr(paper, "ensure_kernel", lambda: None)
    comparison_parameters = [p for p in TEMPLATE_PARAMETERS[COMPARISON_NOTEBOOK] if p != "paper_dir"]
    make_template(notebooks / f"{COMPARISON_NOTEBOOK}.ipynb",
                  "\n".join(f"{p} = None" for p in comparison_parameters))
    argv = ["paper", "--data", str(data_dir), "--pocs", *POCS, "--notebooks", str(notebooks),
            "--runs-root", str(tmp_path / "runs"), "--paper-dir", str(tmp_path / "paper")]
    assert cli.main(argv) == errors.EXIT_BAD_INPUT
    assert executor.calls == []  # the comparison runs last: its template is checked before the first run
    err = capfd.readouterr().err.strip()
    assert err.startswith("heritage paper: ")
    assert "99_comparison.ipynb: unknown notebook parameter(s) 'paper_dir'" in err


def test_damage_maps_follow_the_flagship_main_runs_only_and_are_skipped_when_up_to_date(tmp_path, data_dir,
                                                                                       notebooks) -> None:
    from heritage.report import gallery

    make_template(notebooks / f"{gallery.POC}.ipynb", "\n".join(f"{p} = None" for p in TEMPLATE_PARAMETERS[POCS[1]]))
    make_template(notebooks / f"{gallery.NOTEBOOK}.ipynb", "runs = None\nout_dir = None\nn_scans = 4")
    configs = config.plan("smoke", [POCS[1], gallery.POC], data_dir, overrides={"runs_root": str(tmp_path / "runs")})
    jobs = [run_job_for(c, notebooks) for c in configs]
    comparison = comparison_job(configs, notebooks, tmp_path / "paper", {"profile": "smoke"})
    maps = damage_maps_job(configs, notebooks, tmp_path / "paper")
    assert damage_maps_job(configs[:1], notebooks, tmp_path / "paper") is None  # no flagship run planned
    main_runs = {str(config.run_dir(c)) for c in configs if c.poc == gallery.POC and c.variant is None}
    assert {run_dir for run_dir, _ in maps.parameters["runs"]} == main_runs
    execution.check_parameters(maps.template, maps.parameters)

    first = FakeExecutor()
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(first), maps)
    assert first.calls[-2:] == ["comparison", "damage-maps"]  # after every run
    second = FakeExecutor()
    results = paper.run_paper(jobs, comparison, schedulers.LocalScheduler(second), maps)
    assert second.calls == [] and states(results)["damage-maps"] == schedulers.SKIPPED

    variant = next(j for j in jobs if "-" in j.name.split("/")[0])  # an ablation run: not shown in the maps
    variant.html.unlink()
    third = FakeExecutor()
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(third), maps)
    assert third.calls == [variant.name, "comparison"]
    main = next(j for j in jobs if j.run_dir is not None and str(j.run_dir) in main_runs)
    main.html.unlink()
    fourth = FakeExecutor()
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(fourth), maps)
    assert fourth.calls == [main.name, "comparison", "damage-maps"]


@pytest.mark.slow
@pytest.mark.parametrize("poc", config.available_pocs())
def test_a_poc_notebook_job_executes_the_planned_config_it_was_given(tmp_path, data_dir, poc) -> None:
    """``paper --execute JOB`` (what a SLURM job runs) on the real POC template: the notebook reads the
    config.yaml the job wrote, trains exactly the planned run (its own view included), and the job is
    then up to date."""
    import subprocess
    import sys

    planned = run_configs.planned_configs("smoke", [poc], data_dir, tmp_path / "runs")[0]
    planned = dataclasses.replace(planned, epochs=1, max_train_samples=8, lr=None)  # a field no plan sets
    job = run_job_for(planned, paper.NOTEBOOKS_DIR)
    result = subprocess.run([sys.executable, "-m", "heritage", "paper", "--execute", str(write_job_file(job))],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = fileio.read_json(job.run_dir / "metrics.json")
    assert metrics["config_hash"] == planned.config_hash() and metrics["epochs"] == 1
    assert config.RunConfig.from_yaml(job.run_dir / "config.yaml") == planned
    assert job.html.is_file() and is_up_to_date(job)
