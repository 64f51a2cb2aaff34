"""heritage.pipeline.progress and paper's local scheduler: a line per event, ETAs from measured times only."""

from __future__ import annotations

from pathlib import Path

import pytest

from heritage import fileio
from heritage.pipeline import paper, progress, schedulers
from heritage.pipeline.jobs import RUN_NOTEBOOK, NotebookJob, stamp_of
from test_paper import FakeExecutor, make_jobs, notebooks  # noqa: F401 - the fixture

HEADER = "epoch,train_loss,val_miou,lr,images_per_s,peak_memory_mb,elapsed_s\n"


def history_row(epoch: int, seconds_per_epoch: float = 10.0) -> str:
    return f"{epoch},0.5,{0.1 * epoch},0.001,20.0,0.0,{seconds_per_epoch * epoch}\n"


class TrainingExecutor(FakeExecutor):
    """A run notebook that trains ``epochs`` epochs: history.csv gains a row per epoch, then metrics."""

    def __call__(self, job: NotebookJob) -> None:
        if job.run_dir is not None:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            rows = HEADER
            for epoch in range(1, job.config["epochs"] + 1):
                rows += history_row(epoch)
                fileio.write_text(job.run_dir / "history.csv", rows)
        super().__call__(job)


def test_the_local_scheduler_prints_a_line_per_epoch_and_per_job(tmp_path, data_dir, notebooks, capsys) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(TrainingExecutor(), poll_seconds=3600))
    out = capsys.readouterr().out.splitlines()
    epochs = jobs[0].config["epochs"]
    for job in jobs:
        lines = [line for line in out if line.startswith(f"  {job.name}: epoch ")]
        assert [line.split(", ")[0] for line in lines] == [f"  {job.name}: epoch {e}/{epochs}"
                                                           for e in range(1, epochs + 1)]
        assert "~10 s left in this run" in next(line for line in lines if f"epoch {epochs - 1}/" in line)
        assert "left in this run" not in lines[-1]  # the last epoch: nothing left
    assert out.count(f"[1/3] {jobs[0].name}: started, expected unknown (no finished run of "
                     "poc55_multitask/convnext_tiny with these settings); then unknown (2 job(s) not measured yet)") == 1
    assert any(line.startswith("[3/3] comparison: started") for line in out)


def test_a_second_execution_is_expected_to_take_what_the_first_took(tmp_path, data_dir, notebooks, capsys) -> None:
    jobs, comparison = make_jobs(tmp_path, data_dir, notebooks)
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(FakeExecutor(), poll_seconds=3600))
    seconds = fileio.read_json(jobs[0].stamp)["seconds"]
    assert fileio.read_json(jobs[0].stamp)["setting"]["epochs"] == jobs[0].config["epochs"]
    (notebooks / "poc55_multitask.ipynb").write_text('{"template": "edited"}')  # same config: rerun
    capsys.readouterr()
    paper.run_paper(jobs, comparison, schedulers.LocalScheduler(FakeExecutor(), poll_seconds=3600))
    out = capsys.readouterr().out
    assert f"{jobs[0].name}: started, expected ~{progress.duration(seconds)} (its last execution)" in out


def finish(folder: Path, seconds: float | None = None, wall: float | None = None, epochs: int = 3) -> None:
    setting = {"profile": "smoke", "epochs": epochs, "image_size": 64, "batch_size": 8}
    folder.mkdir(parents=True)
    if seconds is not None:
        fileio.write_json(stamp_of(folder / RUN_NOTEBOOK), {"seconds": seconds, "setting": setting})
    if wall is not None:
        fileio.write_json(folder / "metrics.json", {**setting, "wall_time_s": wall})


CONFIG = {"profile": "smoke", "epochs": 3, "image_size": 64, "batch_size": 8}


def test_estimates_come_from_other_folds_of_the_same_setting_or_are_unknown(tmp_path) -> None:
    encoder = tmp_path / "poc58_baseline" / "convnext_tiny"
    run = encoder / "kfold-fold2"
    assert progress.expected_seconds("r", CONFIG, run).seconds is None
    finish(encoder / "kfold-fold0", seconds=30.0)
    finish(encoder / "kfold-fold1", seconds=50.0)
    finish(encoder / "other-epochs", seconds=900.0, epochs=50)  # another setting: not comparable
    estimate = progress.expected_seconds("r", CONFIG, run)
    assert estimate.seconds == 40.0 and "median of 2 measured run(s) of poc58_baseline/convnext_tiny" in estimate.basis
    assert progress.expected_seconds("r", CONFIG, run, previous=12.0).text() == "~12 s (its last execution)"


def test_training_time_is_a_stated_fallback(tmp_path) -> None:
    encoder = tmp_path / "poc" / "enc"
    finish(encoder / "fold0", wall=125.0)
    estimate = progress.expected_seconds("r", CONFIG, encoder / "fold1")
    assert estimate.seconds == 125.0 and "without the notebook's overhead" in estimate.basis
    assert progress.remaining([estimate, progress.Estimate(None, "x")]) == "~2 min 05 s + 1 job(s) not measured yet"


def test_the_watcher_reports_each_new_epoch_once_and_skips_a_resumed_runs_earlier_ones(tmp_path) -> None:
    lines: list[str] = []
    history = tmp_path / "history.csv"
    history.write_text(HEADER + history_row(1))  # resumed after epoch 1
    watcher = progress.EpochWatcher("run", tmp_path, 4, lines.append)
    assert watcher.poll() == []
    history.write_text(HEADER + history_row(1) + history_row(2, 12.0))
    history.write_text(HEADER + "".join(history_row(e, 12.0) for e in (1, 2, 3)))
    assert [line.split(", ")[0] for line in watcher.poll()] == ["  run: epoch 2/4", "  run: epoch 3/4"]
    assert watcher.poll() == []
    assert "val mIoU 30.0%" in lines[-1] and "36 s of training" in lines[-1]
    assert "~12 s left in this run" in lines[-1]  # (36 - 12) s for 2 epochs since the resume
    history.write_text(HEADER + history_row(1))  # rewritten from scratch (another configuration)
    assert [line.split(", ")[0] for line in watcher.poll()] == ["  run: epoch 1/4"]


@pytest.mark.parametrize("seconds, text", [(None, "unknown"), (4.4, "4 s"), (185, "3 min 05 s"),
                                           (3720, "1 h 02 min")])
def test_durations_read_as_a_person_would_say_them(seconds, text) -> None:
    assert progress.duration(seconds) == text
