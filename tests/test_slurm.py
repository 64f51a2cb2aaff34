"""heritage.pipeline.slurm: site files and batch scripts (no SLURM needed), then jobs on real SLURM daemons
(and heritage.pipeline.on_slurm.run_plan_on_slurm, paper's jobs on them).

The ``slurm`` tests talk to a running cluster (``.ci/slurm/start.sh``; ``source .ci/slurm/env.sh``
points SLURM_CONF at it) and are skipped when ``sinfo`` cannot reach one.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from heritage import fileio
from heritage.pipeline import slurm, slurm_site
from heritage.pipeline.slurm import Job, SlurmScheduler
from heritage.pipeline.slurm_site import Resources

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SITE = REPO / "heritage" / "configs" / "slurm" / "site.example.yaml"
PY = sys.executable

# A toy "training": adds i*i for steps 0..STEPS-1, one step per 0.1 s. On USR1/TERM it finishes the
# step, checkpoints (step, total) and exits 75, like heritage.training.engine; started again it resumes.
STEPS = 30
EXPECTED_TOTAL = sum(i * i for i in range(STEPS))
TOY_TRAINER = f"""
import json, os, signal, sys, time
from pathlib import Path
run = Path(sys.argv[1])
stop = []
signal.signal(signal.SIGUSR1, lambda *_: stop.append("USR1"))
signal.signal(signal.SIGTERM, lambda *_: stop.append("TERM"))
checkpoint = run / "checkpoint.json"
state = json.loads(checkpoint.read_text()) if checkpoint.exists() else {{"step": 0, "total": 0}}
print("resumed at step", state["step"], flush=True)
while state["step"] < {STEPS}:
    time.sleep(0.1)
    state["total"] += state["step"] ** 2
    state["step"] += 1
    (run / "progress").write_text(str(state["step"]))
    if stop and state["step"] < {STEPS}:
        (run / "checkpoint.tmp").write_text(json.dumps(state))
        os.replace(run / "checkpoint.tmp", checkpoint)
        print("stopped by", stop[0], "at step", state["step"], flush=True)
        sys.exit(75)
(run / "result.json").write_text(json.dumps(state))
"""


def python_job(name: str, code: str, run_dir: Path, **fields) -> Job:
    return Job(name, (PY, "-c", code), run_dir, **fields)


# -- site file, resources, scripts (no SLURM needed) ---------------------------------------------------------


def test_example_site_file_resolves_profiles_kinds_and_environment():
    site = slurm_site.load_site(EXAMPLE_SITE, environ={})
    full = site.resources("full")
    assert (full.gpus, full.gpu_type, full.tasks, full.partition, full.mem) == (1, "v100", 1, "gpu", "64G")
    assert "#SBATCH --gres=gpu:v100:1" in full.sbatch_lines()
    assert "#SBATCH --constraint=v100-32g" in full.sbatch_lines()
    assert full.setup[0] == "module purge" and full.sbatch_options == ("--mail-type=FAIL",)
    comparison = site.resources("full", kind="comparison")
    assert (comparison.gpus, comparison.partition, comparison.constraint) == (0, "cpu", None)
    assert site.resources("smoke", kind="dataset") == site.resources("smoke", kind="comparison")
    assert not any("--gres" in line for line in comparison.sbatch_lines())
    overridden = slurm_site.load_site(EXAMPLE_SITE, environ={"HERITAGE_SLURM_PARTITION": "a100",
                                                        "HERITAGE_SLURM_ACCOUNT": "proj42"}).resources("smoke")
    assert (overridden.partition, overridden.account) == ("a100", "proj42")


def test_site_file_from_environment_and_without_one(tmp_path):
    site_file = tmp_path / "site.yaml"
    site_file.write_text("defaults: {qos: short}\nprofiles: {smoke: {cpus_per_task: 3}}\n")
    site = slurm_site.load_site(environ={"HERITAGE_SLURM_SITE_FILE": str(site_file)})
    assert (site.resources("smoke").qos, site.resources("smoke").cpus_per_task) == ("short", 3)
    bare = slurm_site.load_site(environ={"HERITAGE_SLURM_QOS": "debug"}).resources("full")
    assert (bare.qos, bare.partition, bare.gpus) == ("debug", None, 0)


@pytest.mark.parametrize("content, error, match", [
    ("defaults: {gpu: 1}\n", ValueError, r"defaults: unknown key 'gpu' \(did you mean 'gpus'\?\)"),
    ("profiles: {full: {time: soon}}\n", ValueError, r"profile 'full'.*time must look like"),
    ("profiles: {full: {time: '00:05:00', signal_seconds: 300}}\n", ValueError,
     r"signal_seconds \(300\) must be below the time limit \(00:05:00 = 300 s\)"),
    ("profiles: {full: {time: 1:30:00}}\n", ValueError, "time must be a quoted string.*got the number 5400"),
    ("profiles: {full: {mem: lots}}\n", ValueError, "mem must look like"),
    ("profiles: {full: {sbatch_options: [reservation=x]}}\n", ValueError, "long options"),
    ("- a list\n", ValueError, "a site file is a mapping"),
    ("profiles: [full\n", ValueError, "not valid YAML"),
])
def test_bad_site_files_name_the_file_and_the_value(tmp_path, content, error, match):
    site_file = tmp_path / "site.yaml"
    site_file.write_text(content)
    with pytest.raises(error, match=match):
        slurm_site.load_site(site_file, environ={}).resources("full")


def test_missing_site_file_and_unknown_profile(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml: SLURM site file not found"):
        slurm_site.load_site(tmp_path / "nowhere.yaml")
    with pytest.raises(ValueError, match=r"no SLURM resources for profile 'tiny' \(profiles: full, smoke\)"):
        slurm_site.load_site(EXAMPLE_SITE, environ={}).resources("tiny")


@pytest.mark.parametrize("limit, seconds", [("90", 5400), ("01:30", 90), ("02:00:05", 7205),
                                            ("1-00", 86400), ("2-01:30", 178200), ("1-00:00:10", 86410)])
def test_time_limit_seconds(limit, seconds):
    assert slurm_site.time_limit_seconds(limit) == seconds


def test_batch_script_single_job_multi_gpu_and_no_requeue(tmp_path):
    resources = Resources(gpus=2, cpus_per_task=4, mem="32G", time="02:00:00", signal_seconds=600,
                          setup=("module load CUDA", "source venv/bin/activate"))
    job = Job("p/e/kfold-fold0", ("python", "-m", "heritage", "train", "--poc", "it's"), tmp_path / "r",
              resources=resources)
    script = slurm.batch_script([job], title=job.name, script=tmp_path / "s", output=str(tmp_path / "r/slurm-%j.out"),
                                workdir=tmp_path)
    for line in ("#SBATCH --gres=gpu:2", "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem=32G", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@600",
                 "#SBATCH --open-mode=append", "set -- python -m heritage train --poc 'it'\"'\"'s'",
                 'srun "$@" &'):
        assert line in script, line
    assert script.index("module load CUDA") < script.index('srun "$@" &')
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid bash

    once = Job("once", ("true",), tmp_path / "o", requeue=False)
    script = slurm.batch_script([once], title="once", script=tmp_path / "s", output="o", workdir=tmp_path)
    assert "#SBATCH --no-requeue" in script and "--signal" not in script and "REQUEUE_ON_USR1=0" in script
    assert '\n"$@" &' in script  # one task: no srun


def test_submission_is_checked_before_anything_is_submitted(tmp_path):
    scheduler = SlurmScheduler(tmp_path / "sub.json")
    a, b = Job("a", ("true",), tmp_path / "a"), Job("b", ("true",), tmp_path / "b", depends_on=("a",))
    with pytest.raises(ValueError, match="'b' depends on 'a', which is not submitted before it"):
        scheduler.submit([b, a])
    with pytest.raises(ValueError, match="two jobs are named 'a'"):
        scheduler.submit([a, Job("a", ("true",), tmp_path / "c")])
    with pytest.raises(ValueError, match="share the run folder"):
        scheduler.submit([a, Job("c", ("true",), tmp_path / "a")])
    with pytest.raises(ValueError, match="array 'p/e'.*differ in resources"):
        scheduler.submit([Job("f0", ("true",), tmp_path / "f0", array="p/e"),
                          Job("f1", ("true",), tmp_path / "f1", array="p/e", resources=Resources(cpus_per_task=2))])
    with pytest.raises(ValueError, match="no spaces"):
        Job("a b", ("true",), tmp_path)
    with pytest.raises(ValueError, match="non-empty argv list"):
        Job("a", "python -c 1", tmp_path)
    assert not (tmp_path / "sub.json").exists()


def test_paper_jobs_become_one_array_per_poc_and_encoder_and_finals_after_every_run(tmp_path):
    from heritage.pipeline import on_slurm

    runs, comparison = _notebook_jobs(tmp_path)
    other = dataclasses.replace(runs[0], name="poc/enc2/kfold-fold0", run_dir=tmp_path / "runs" / "poc" / "enc2" / "f0")
    maps = dataclasses.replace(comparison, name="damage-maps")
    jobs = [*runs, other]
    site = slurm_site.Site(kinds={"run": {"gpus": 1}, "comparison": {"cpus_per_task": 2}})
    batch = on_slurm.slurm_jobs(jobs, [comparison, maps], [("echo", job.name) for job in [*jobs, comparison, maps]],
                                site, "smoke", tmp_path / "runs")
    assert [(job.name, job.array, job.command[-1]) for job in batch] == [
        *[(run.name, "poc/enc", run.name) for run in runs], (other.name, "poc/enc2", other.name),
        ("comparison", None, "comparison"), ("damage-maps", None, "damage-maps")]
    assert [job.run_dir for job in batch[:4]] == [job.run_dir for job in jobs]
    assert batch[4].run_dir == tmp_path / "runs" / ".slurm-comparison"
    assert [job.depends_on for job in batch] == [()] * 4 + [tuple(job.name for job in jobs)] * 2
    assert [job.resources.gpus for job in batch] == [1, 1, 1, 1, 0, 0]
    assert batch[4].resources.cpus_per_task == 2 and batch[5].resources.cpus_per_task == 1


# -- real SLURM daemons --------------------------------------------------------------------------------------


def _slurm_unreachable() -> str | None:
    try:
        result = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return "sinfo not found"
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if result.returncode != 0 or not result.stdout.strip():
        last_line = ((result.stderr or result.stdout).strip().splitlines() or ["no nodes"])[-1]
        return f"sinfo failed: {last_line}"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    reason = _slurm_unreachable()
    if reason:
        pytest.skip(f"no SLURM cluster reachable ({reason}); start one with .ci/slurm/install.sh && "
                    ".ci/slurm/start.sh && source .ci/slurm/env.sh")


@pytest.fixture
def scheduler(cluster, tmp_path) -> Iterator[SlurmScheduler]:
    scheduler = SlurmScheduler(tmp_path / "runs" / slurm.SUBMISSION_FILE, workdir=tmp_path, poll_seconds=0.5)
    yield scheduler
    cancel_submission(scheduler.submission_file)


def cancel_submission(submission_file: Path) -> None:
    """A failing test must not leave jobs running into the next one (finished jobs ignore scancel)."""
    if submission_file.exists():
        ids = [job["job_id"] for job in fileio.read_json(submission_file)["jobs"]]
        subprocess.run(["scancel", *ids], capture_output=True)


def wait(scheduler: SlurmScheduler, ids: dict[str, str], timeout: float = 60) -> dict[str, slurm.JobStatus]:
    return scheduler.wait(ids, progress=False, timeout_seconds=timeout)


def wait_for_progress(run_dir: Path, steps: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    progress = run_dir / "progress"
    while not (progress.exists() and progress.read_text() and int(progress.read_text()) >= steps):
        assert time.monotonic() < deadline, f"the toy training in {run_dir} made no progress in {timeout} s"
        time.sleep(0.1)



@pytest.mark.slurm
def test_job_runs_records_its_id_and_exit_code_and_can_be_attached(scheduler, tmp_path):
    run_dir = tmp_path / "runs" / "toy" / "my enc" / "holdout-holdout"  # a space: quoted in #SBATCH lines
    ids = scheduler.submit([python_job("toy", "import os; print('job', os.environ['SLURM_JOB_ID'])", run_dir)])
    statuses = wait(scheduler, ids)
    assert statuses["toy"].state == "done"
    record = fileio.read_json(run_dir / "slurm.json")
    assert record["job_id"] == ids["toy"] and record["log"] == str(run_dir / f"slurm-{ids['toy']}.out")
    exit_record = fileio.read_json(run_dir / "slurm-exit.json")
    assert (exit_record["job_id"], exit_record["state"], exit_record["exit_code"]) == (ids["toy"], "completed", 0)
    assert f"job {ids['toy']}\n" in (run_dir / f"slurm-{ids['toy']}.out").read_text()
    # Another process re-attaches through the submission file.
    attached = SlurmScheduler.attach(tmp_path / "runs" / slurm.SUBMISSION_FILE, poll_seconds=0.5)
    assert attached.wait(progress=False, timeout_seconds=10)["toy"].state == "done"


@pytest.mark.slurm
def test_rejected_submission_names_the_jobs_already_submitted(scheduler, tmp_path):
    accepted = python_job("accepted", "print(1)", tmp_path / "accepted")
    rejected = python_job("rejected", "print(2)", tmp_path / "rejected", resources=Resources(partition="nowhere"))
    with pytest.raises(slurm.SlurmError, match=r"(?s)sbatch for rejected failed.*invalid partition.*"
                                               r"the 1 jobs submitted before it are recorded in .*scancel \d+"):
        scheduler.submit([accepted, rejected])
    recorded = fileio.read_json(tmp_path / "runs" / slurm.SUBMISSION_FILE)["jobs"]
    assert [job["name"] for job in recorded] == ["accepted"]


@pytest.mark.slurm
def test_afterok_dependency_runs_the_second_job_after_the_first(scheduler, tmp_path):
    shared = tmp_path / "shared.txt"
    first = python_job("first", f"import time, pathlib; time.sleep(1.5); pathlib.Path({str(shared)!r}).write_text('21')",
                       tmp_path / "first")
    second = python_job("second", f"import pathlib; p = pathlib.Path({str(shared)!r}); "
                                  f"p.write_text(str(2 * int(p.read_text())))", tmp_path / "second",
                        depends_on=("first",))
    ids = scheduler.submit([first, second])
    assert fileio.read_json(tmp_path / "second" / "slurm.json")["depends_on"] == {"first": ids["first"]}
    statuses = wait(scheduler, ids)
    assert {s.state for s in statuses.values()} == {"done"}
    assert shared.read_text() == "42"
    first_end = fileio.read_json(tmp_path / "first" / "slurm-exit.json")["finished"]
    assert fileio.read_json(tmp_path / "second" / "slurm-exit.json")["started"] >= first_end


@pytest.mark.slurm
def test_array_of_three_folds_logs_into_each_run_folder(scheduler, tmp_path):
    base = tmp_path / "runs" / "poc" / "enc"
    jobs = [python_job(f"poc/enc/kfold-fold{k}",
                       f"import os, pathlib; pathlib.Path({str(base / f'kfold-fold{k}' / 'task.txt')!r})"
                       ".write_text(os.environ['SLURM_ARRAY_TASK_ID'])",
                       base / f"kfold-fold{k}", array="poc/enc") for k in range(3)]
    comparison = python_job("comparison", "print('tables')", tmp_path / "runs" / "comparison",
                            depends_on=tuple(job.name for job in jobs))
    ids = scheduler.submit(jobs + [comparison])
    array_id = ids["poc/enc/kfold-fold0"].split("_")[0]
    assert [ids[job.name] for job in jobs] == [f"{array_id}_{k}" for k in range(3)]
    statuses = wait(scheduler, ids)
    assert {s.state for s in statuses.values()} == {"done"}
    for k, job in enumerate(jobs):
        assert (job.run_dir / "task.txt").read_text() == str(k)
        log = job.run_dir / f"slurm-{array_id}_{k}.out"
        assert statuses[job.name].log == log and f"job {array_id}_{k} ended with exit code 0" in log.read_text()
    comparison_start = fileio.read_json(tmp_path / "runs" / "comparison" / "slurm-exit.json")["started"]
    assert comparison_start >= max(fileio.read_json(j.run_dir / "slurm-exit.json")["finished"] for j in jobs)


@pytest.mark.slurm
def test_failed_job_is_reported_with_its_log_and_its_dependent_is_cancelled(scheduler, tmp_path):
    broken = python_job("broken", "raise ValueError('corrupt checkpoint')", tmp_path / "broken")
    after = python_job("after", "print('never')", tmp_path / "after", depends_on=("broken",))
    ids = scheduler.submit([broken, after])
    statuses = wait(scheduler, ids)
    assert statuses["broken"].state == "failed" and statuses["broken"].exit_code == 1
    log = tmp_path / "broken" / f"slurm-{ids['broken']}.out"
    assert "ValueError: corrupt checkpoint" in log.read_text()
    assert statuses["after"].state == "failed" and "DependencyNeverSatisfied" in statuses["after"].reason
    with pytest.raises(slurm.SlurmError, match=rf"2 of 2 SLURM jobs failed:\n.*broken \(job {ids['broken']}\): "
                                               rf"failed \[FAILED, exit 1.*log: {log}"):
        slurm.check_statuses(statuses)


@pytest.mark.slurm
@pytest.mark.parametrize("interruption", ["usr1", "requeue"])
def test_interrupted_training_is_requeued_and_ends_like_an_uninterrupted_one(scheduler, tmp_path, interruption):
    """USR1 (what --signal sends before the time limit): the script requeues the job itself.
    ``scontrol requeue`` from outside: SLURM sends TERM, the toy checkpoints, SLURM requeues it."""
    trainer = tmp_path / "toy_trainer.py"
    trainer.write_text(TOY_TRAINER)
    run_dir = tmp_path / "runs" / "toy"
    run_dir.mkdir(parents=True)
    ids = scheduler.submit([Job("toy", (PY, str(trainer), str(run_dir)), run_dir)])
    wait_for_progress(run_dir, 3)
    if interruption == "usr1":
        command = ["scancel", "--signal=USR1", "--batch", ids["toy"]]
    else:
        command = ["scontrol", "requeue", ids["toy"]]
    subprocess.run(command, check=True, capture_output=True)
    statuses = wait(scheduler, ids, timeout=90)
    assert statuses["toy"].state == "done"
    assert fileio.read_json(run_dir / "result.json") == {"step": STEPS, "total": EXPECTED_TOTAL}
    exit_record = fileio.read_json(run_dir / "slurm-exit.json")
    assert (exit_record["job_id"], exit_record["restart_count"], exit_record["state"]) == (ids["toy"], 1, "completed")
    log = (run_dir / f"slurm-{ids['toy']}.out").read_text()
    stopped_by = "USR1" if interruption == "usr1" else "TERM"
    assert f"stopped by {stopped_by} at step" in log
    resumed_at = int(log.split("resumed at step ")[2].split()[0])  # the second run's start
    assert 3 <= resumed_at < STEPS
    if interruption == "usr1":
        assert f"exit 75 after USR1: requeueing job {ids['toy']}" in log


@pytest.mark.slurm
def test_chain_runs_jobs_one_after_another(scheduler, tmp_path):
    jobs = [python_job(f"bench{k}", "import time; time.sleep(1)", tmp_path / f"bench{k}", array="bench")
            for k in range(3)]
    ids = scheduler.submit(jobs, chain=True)
    assert "_" not in "".join(ids.values())  # chain mode submits no arrays
    assert {s.state for s in wait(scheduler, ids).values()} == {"done"}
    spans = [fileio.read_json(job.run_dir / "slurm-exit.json") for job in jobs]
    for earlier, later in zip(spans, spans[1:]):
        assert later["started"] >= earlier["finished"]


@pytest.mark.slurm
def test_several_tasks_get_ranks_and_a_rendezvous_from_slurm(scheduler, tmp_path):
    code = ("import json, os, pathlib; rank = os.environ['SLURM_PROCID']; "
            f"pathlib.Path({str(tmp_path)!r}, f'rank{{rank}}.json').write_text(json.dumps("
            "{k: os.environ[k] for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'MASTER_ADDR', 'MASTER_PORT')}))")
    ids = scheduler.submit([python_job("ddp", code, tmp_path / "ddp", resources=Resources(tasks_per_node=2))])
    assert wait(scheduler, ids)["ddp"].state == "done"
    ranks = [fileio.read_json(tmp_path / f"rank{r}.json") for r in range(2)]
    assert [(r["SLURM_PROCID"], r["SLURM_LOCALID"], r["SLURM_NTASKS"]) for r in ranks] == [("0", "0", "2"), ("1", "1", "2")]
    host = subprocess.run(["scontrol", "show", "hostnames", subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%N", f"--jobs={ids['ddp']}"],
        capture_output=True, text=True).stdout.strip()], capture_output=True, text=True).stdout.split()[0]
    assert ranks[0]["MASTER_ADDR"] == ranks[1]["MASTER_ADDR"] == host
    assert ranks[0]["MASTER_PORT"] == ranks[1]["MASTER_PORT"] == str(20000 + int(ids["ddp"]) % 20000)


# What a batch job of heritage paper runs, in miniature: read the job description, write the notebook.
TOY_EXECUTE = """
import json, pathlib, sys, time
job = json.loads(pathlib.Path(sys.argv[1]).read_text())
time.sleep(job["parameters"].get("sleep", 0))
if job["name"].endswith("fold2") and job["parameters"].get("break"):
    sys.exit("cell 3 raised ValueError")
pathlib.Path(job["output"]).write_text(json.dumps(job["parameters"]))
"""


def _notebook_jobs(tmp_path: Path, **parameters) -> tuple[list, object]:
    from heritage.pipeline.jobs import NotebookJob

    def notebook_job(name: str, output: Path, run_dir: Path | None) -> NotebookJob:
        return NotebookJob(name=name, template=tmp_path / "template.ipynb", output=output,
                           html=output.with_suffix(".html"), parameters=dict(parameters), key="k",
                           run_dir=run_dir)

    folds = [tmp_path / "runs" / "poc" / "enc" / f"kfold-fold{k}" for k in range(3)]
    runs = [notebook_job(f"poc/enc/kfold-fold{k}", folder / "notebook.ipynb", folder) for k, folder in enumerate(folds)]
    return runs, notebook_job("comparison", tmp_path / "paper" / "99_comparison.ipynb", None)


def _run_plan(tmp_path: Path, runs: list, comparison, **options) -> list:
    from heritage.pipeline import on_slurm
    from heritage.pipeline.jobs import write_job_file

    return on_slurm.run_plan_on_slurm(runs, [comparison], job_command=lambda path: [PY, "-c", TOY_EXECUTE, str(path)],
                                      write_job_file=write_job_file,
                                      options=on_slurm.SlurmPlanOptions(profile="smoke", runs_root=tmp_path / "runs",
                                                                        site=slurm_site.Site(), poll_seconds=0.5,
                                                                        **options))


@pytest.mark.slurm
def test_paper_plan_runs_folds_as_an_array_then_the_comparison(cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs, comparison = _notebook_jobs(tmp_path, seed=42)
    results = _run_plan(tmp_path, runs, comparison)
    assert [(r.job.name, r.state) for r in results] == [(j.name, "done") for j in [*runs, comparison]]
    records = [fileio.read_json(job.run_dir / "slurm.json") for job in runs]
    array_id = records[0]["job_id"].split("_")[0]
    assert [r["job_id"] for r in records] == [f"{array_id}_{k}" for k in range(3)]
    assert records[0]["command"][-1] == str(runs[0].output.with_suffix(".job.json"))
    comparison_dir = tmp_path / "runs" / ".slurm-comparison"  # no run folder: SLURM files in the runs root
    assert fileio.read_json(comparison_dir / "slurm.json")["depends_on"] == {j.name: r["job_id"]
                                                                             for j, r in zip(runs, records)}
    assert fileio.read_json(comparison.output) == {"seed": 42}
    comparison_start = fileio.read_json(comparison_dir / "slurm-exit.json")["started"]
    assert comparison_start >= max(fileio.read_json(j.run_dir / "slurm-exit.json")["finished"] for j in runs)


@pytest.mark.slurm
def test_paper_plan_no_wait_then_attach_reports_the_failed_fold(cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs, comparison = _notebook_jobs(tmp_path, **{"break": True, "sleep": 3})
    submitted = _run_plan(tmp_path, runs, comparison, wait=False)
    assert {r.state for r in submitted} == {"submitted"}
    with pytest.raises(slurm.SlurmError, match=r"previous submission .* still queued or running: .*scancel \d+"):
        _run_plan(tmp_path, runs, comparison)  # would train twice into the same run folders
    results = {r.job.name: r for r in _run_plan(tmp_path, runs, comparison, attach=True)}
    assert [results[j.name].state for j in runs] == ["done", "done", "failed"]
    fold2_log = fileio.read_json(runs[2].run_dir / "slurm.json")["log"]
    assert f"log: {fold2_log}" in results[runs[2].name].error
    assert "cell 3 raised ValueError" in Path(fold2_log).read_text()
    assert results["comparison"].state == "failed" and "DependencyNeverSatisfied" in results["comparison"].error


# -- real training and the smoke paper through SLURM (slow: minutes of CPU training) -------------------------

TINY_TRAINING = {"epochs": 3, "image_size": 32, "batch_size": 4, "max_train_samples": 8, "n_prediction_panels": 1}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic images (the fewest every split protocol accepts): smoke trainings in seconds."""
    from heritage.data import augment, ingest, splits, synthetic as synth

    root = tmp_path_factory.mktemp("tiny")
    synth.write_parquet(root / "shards", n_images=12, longest_side=64)
    ingest.ingest(root / "shards", root / "data", longest_side=None)
    augment.augment(root / "data")
    splits.write_manifests(root / "data", splits.PROTOCOLS)
    return root / "data"


def _same_results(metrics: dict, reference: dict) -> None:
    """Same numbers, up to float noise; timings and environment may differ."""
    assert metrics["config_hash"] == reference["config_hash"]
    assert metrics["best_epoch"] == reference["best_epoch"]
    for part in ("val", "test"):
        assert metrics[part]["miou"] == pytest.approx(reference[part]["miou"], abs=1e-6)
        for name, values in reference[part].get("per_class", {}).items():
            assert metrics[part]["per_class"][name]["iou"] == pytest.approx(values["iou"], abs=1e-6), name


@pytest.mark.slurm
@pytest.mark.slow
def test_real_training_stopped_by_usr1_resumes_to_the_metrics_of_an_uninterrupted_run(scheduler, tiny_data, tmp_path):
    from heritage import config

    def training(name: str) -> Job:
        overrides = {**TINY_TRAINING, "runs_root": str(tmp_path / name)}
        run_config = config.load_run_config("poc58_baseline", "smoke", overrides={**overrides, "data_dir": str(tiny_data)})
        command = (PY, "-m", "heritage", "train", "--poc", "poc58_baseline", "--profile", "smoke", "--data",
                   str(tiny_data), *(f"{key}={value}" for key, value in overrides.items()))
        return Job(name, command, config.run_dir(run_config))

    interrupted, reference = training("interrupted"), training("reference")
    ids = scheduler.submit([interrupted, reference])  # side by side: one CPU each
    deadline = time.monotonic() + 600
    # The first epoch is done once history.csv exists (the smoke profile writes checkpoint_last.pt
    # only when a signal stops the run: checkpoint_every is 0).
    while not (interrupted.run_dir / "history.csv").exists():
        assert time.monotonic() < deadline, "no history.csv after 600 s"
        assert scheduler.status({"interrupted": ids["interrupted"]})["interrupted"].state != "failed"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", ids["interrupted"]], check=True)
    statuses = wait(scheduler, ids, timeout=900)
    assert {s.state for s in statuses.values()} == {"done"}, [s.describe() for s in statuses.values()]
    log = (interrupted.run_dir / f"slurm-{ids['interrupted']}.out").read_text()
    assert "stopped by SIGUSR1" in log and f"requeueing job {ids['interrupted']}" in log
    exit_record = fileio.read_json(interrupted.run_dir / "slurm-exit.json")
    assert (exit_record["restart_count"], exit_record["state"]) == (1, "completed")
    environment = fileio.read_json(interrupted.run_dir / "environment.json")["slurm"]
    assert (environment["SLURM_JOB_ID"], environment["SLURM_RESTART_COUNT"]) == (ids["interrupted"], "1")
    _same_results(fileio.read_json(interrupted.run_dir / "metrics.json"),
                  fileio.read_json(reference.run_dir / "metrics.json"))


@pytest.mark.slurm
@pytest.mark.slow
def test_smoke_paper_on_slurm_matches_the_local_scheduler(cluster, tiny_data, tmp_path):
    """`heritage paper --scheduler slurm --no-wait`, the local paper meanwhile, then `--attach`."""
    def paper(root: Path, *options: str) -> None:
        command = [PY, "-m", "heritage", "paper", "--profile", "smoke", "--pocs", "poc58_baseline",
                   "--data", str(tiny_data), "--runs-root", str(root / "runs"), "--paper-dir", str(root / "paper"),
                   *options]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                                env={**os.environ, slurm.POLL_SECONDS_VARIABLE: "1"})
        assert result.returncode == 0, f"{' '.join(options)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    try:
        paper(on_slurm, "--scheduler", "slurm", "--no-wait")
        paper(local, "--scheduler", "local")  # while the SLURM jobs run
        paper(on_slurm, "--scheduler", "slurm", "--attach")
    finally:
        cancel_submission(on_slurm / "runs" / slurm.SUBMISSION_FILE)

    submission = fileio.read_json(on_slurm / "runs" / slurm.SUBMISSION_FILE)["jobs"]
    jobs = {job["name"]: job for job in submission}
    run_names = [name for name in jobs if name.count("/") == 2]
    assert run_names and {"dataset", "comparison"} <= set(jobs)
    finished = {}
    for job in jobs.values():
        run_dir = Path(job["run_dir"])
        assert fileio.read_json(run_dir / "slurm.json")["job_id"] == job["job_id"]
        exit_record = fileio.read_json(run_dir / "slurm-exit.json")
        assert (exit_record["job_id"], exit_record["state"]) == (job["job_id"], "completed")
        finished[job["name"]] = exit_record
        if job["name"] in run_names:
            environment = fileio.read_json(run_dir / "environment.json")["slurm"]
            assert environment["SLURM_JOB_ID"] == exit_record["slurm_job_id"]  # trained inside the job
            relative = run_dir.relative_to(on_slurm / "runs")
            _same_results(fileio.read_json(run_dir / "metrics.json"),
                          fileio.read_json(local / "runs" / relative / "metrics.json"))
    comparison = finished.pop("comparison")
    assert comparison["started"] >= max(record["finished"] for record in finished.values())
    assert (on_slurm / "paper" / "99_comparison.html").is_file() and (on_slurm / "paper" / "index.html").is_file()


def _scores_of_one_process(run, folder: Path) -> dict:
    """The run's best checkpoint scored by this one process on its val and test parts, as training scores
    (the sliding window at the working resolution, the run's precision, memory format and kernels), with one
    thread like each task."""
    import torch

    from heritage.data import splits, working
    from heritage.inference import predict
    from heritage.modeling import residual, thin, tiling
    from heritage.training import devices, evaluation, reproducibility

    cpu = torch.device("cpu")
    model, _ = predict.load_model(folder, cpu)
    if devices.uses_channels_last(run.channels_last, run.encoder, cpu):
        model = model.to(memory_format=torch.channels_last)
    _, val_ids, test_ids = splits.fold_ids(splits.load_manifest(run.data_dir, run.protocol), run.fold)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores, thin_scores = {}, None
        for part, ids in (("val", val_ids), ("test", test_ids)):
            images = working.EvaluationSet(run.data_dir, ids, run.image_size, run.working_resolution, "letterbox",
                                           cache_dir=run.cache_dir, progress=False)
            if part == "val":  # the residual filter's k, as train chooses it
                thin_scores = thin.ThinDamageScores(residual.choose_k(images.scored(i) for i in range(len(images))).k)
            with reproducibility.kernels(reproducibility.kernel_mode(cpu)):
                window = tiling.SlidingWindow(tile=run.image_size, batch_size=run.batch_size,
                                              dtype=devices.autocast_dtype(run.amp, cpu))
                outputs = evaluation.Outputs(per_image=True, scores=[thin_scores] if part == "test" else ())
                scores[part] = evaluation.evaluate_images(model, images, devices.Distributed(device=cpu), window,
                                                          run.hierarchical, outputs).metrics
        scores["test"]["thin"] = thin_scores.result()
    finally:
        torch.set_num_threads(threads)
    return scores


@pytest.mark.slurm
@pytest.mark.slow
def test_a_two_task_job_trains_one_ddp_run_renders_one_notebook_and_scores_as_one_process(
        cluster, tiny_data, tmp_path, monkeypatch):
    """`paper --execute` under srun with 2 tasks (gloo on the CPU): process 0 executes the POC notebook, whose
    training is rank 0 of a 2-process DDP run; process 1 joins it and renders nothing. The run records its
    2 processes and the learning rate of their global batch, and its sharded evaluation gives the scores one
    process gives its checkpoint."""
    import nbformat
    import pandas as pd

    from heritage import config
    from heritage.pipeline import jobs, on_slurm, paper
    from heritage.training import runs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # sbatch passes it on: one thread a task, as the reference below
    run = config.load_run_config("poc58_baseline", "smoke", overrides={
        "epochs": 1, "image_size": 32, "batch_size": 2, "max_train_samples": 8, "n_prediction_panels": 1,
        "data_dir": str(tiny_data), "runs_root": str(tmp_path / "runs")})
    job = jobs.run_job_for(run, paper.NOTEBOOKS_DIR)
    site = slurm_site.Site(kinds={"run": {"tasks_per_node": 2}})  # as with 2 GPUs: srun starts 2 copies
    try:
        [result] = on_slurm.run_plan_on_slurm([job], [], job_command=jobs.job_command,
                                              write_job_file=jobs.write_job_file,
                                              options=on_slurm.SlurmPlanOptions(profile="smoke",
                                                                                runs_root=tmp_path / "runs",
                                                                                site=site, poll_seconds=0.5))
    finally:
        cancel_submission(tmp_path / "runs" / slurm.SUBMISSION_FILE)
    folder = config.run_dir(run)
    [log] = folder.glob("slurm-*.out")
    assert result.state == "done", log.read_text()[-3000:]
    log_text = log.read_text()
    assert log_text.count(f"{job.name}: process 0 of 2 renders the notebook") == 1, log_text[-3000:]
    assert log_text.count(f"{job.name}: process 1 of 2 trains only") == 1, log_text[-3000:]
    assert jobs.is_up_to_date(job)  # notebook, report and the stamp of that one execution
    notebook = nbformat.read(job.output, as_version=4)
    assert not [output for cell in notebook.cells for output in cell.get("outputs", [])
                if output.get("output_type") == "error"]

    metrics = fileio.read_json(folder / runs.METRICS_FILE)
    assert (metrics["world_size"], metrics["global_batch_size"]) == (2, 2 * run.batch_size)
    assert metrics["lr_applied"] == pytest.approx(2 * run.lr) and metrics["lr"] == pytest.approx(run.lr)
    reference = _scores_of_one_process(run, folder)
    for part in ("val", "test"):
        assert metrics[part]["miou"] == pytest.approx(reference[part]["miou"], abs=1e-9), part
        assert metrics[part]["n_images"] == reference[part]["n_images"], part
    assert metrics["test"]["confusion_matrix"] == reference["test"]["confusion_matrix"]
    assert metrics["test"]["per_image_miou"] == pytest.approx(reference["test"]["per_image_miou"], abs=1e-9)
    thin_recorded = dict(metrics["test"]["thin"])  # summed over the 2 processes' shards: one process's counts
    thin_recorded["filter"] = {key: value for key, value in thin_recorded["filter"].items() if key != "k_choice"}
    assert thin_recorded == reference["test"]["thin"]
    assert thin_recorded["n_images"] == len(reference["test"]["per_image"]["ids"])
    per_image = runs.read_per_image(folder)
    assert list(per_image["id"]) == reference["test"]["per_image"]["ids"]  # the test part's order, every image
    expected = runs.per_image_table(reference["test"]["per_image"]["ids"], list(per_image["source_id"]),
                                    reference["test"]["per_image"]["confusion"].numpy())
    pd.testing.assert_frame_equal(per_image, expected, check_dtype=False, rtol=1e-9)  # counts, and scores from them
