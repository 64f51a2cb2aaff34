"""Did a change keep behaviour? Short deterministic trainings of a checkout, compared with another's.

Trains six smoke configurations (every POC's main one, the flagship's patch and dice_focal variants) for 2
epochs on 32 samples of the smoke stand-in and keeps each run's metrics.json without its timings and code
hash, the sha256 of its per_image.csv and history.csv's rows without their timing columns (per epoch: train
loss, LR, validation mIoU). A training that fails is recorded with its exit code and the script exits 1, with
or without ``--compare``. Run it in two checkouts (for example the commit before a refactoring in a ``git
worktree``, with ``PYTHONPATH`` set to it) and compare::

    cd /tmp/before && PYTHONPATH=$PWD python /path/to/bench/same_metrics.py /tmp/same-before
    cd /work/main && python bench/same_metrics.py /tmp/same-after --compare /tmp/same-before/summary.json

``--runs-root DIR`` fingerprints the runs an earlier command made instead of training (for example the
``runs/`` of a whole ``make paper`` in each checkout): every ``metrics.json`` below DIR, keyed by its folder.

A check, not a benchmark: it writes nothing to bench/results.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

RUNS = (("poc55_multitask", None), ("poc58_baseline", None), ("poc59_dicefocal", None),
        ("poc59v2_flagship", None), ("poc59v2_flagship", "patch"), ("poc59v2_flagship", "dice_focal"))
TIMING_KEYS = {"wall_time_s", "throughput", "peak_memory_mb", "device", "elapsed_s"}
# The fingerprint of the code that made a run: what a refactoring changes by design, so never compared.
CODE_KEYS = {"code_hash"}


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if k not in TIMING_KEYS | CODE_KEYS and "time" not in k and "per_s" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def fingerprint(out: Path) -> dict:
    data = out / "data"
    if not (data / "metadata.csv").exists():
        subprocess.run([sys.executable, "-c", "from heritage.pipeline import preparation; "
                        f"preparation.prepare_data('smoke', None, {str(data)!r})"], check=True)
    summary = {}
    for poc, variant in RUNS:
        runs_root = out / "runs" / f"{poc}-{variant or 'main'}"
        command = [sys.executable, "-m", "heritage", "train", "--poc", poc, "--data", str(data),
                   f"runs_root={runs_root}", "epochs=2", "max_train_samples=32"] + (["--variant", variant] if variant else [])
        done = subprocess.run(command, capture_output=True, text=True)
        key = f"{poc}/{variant or 'main'}"
        if done.returncode != 0:
            summary[key] = {"rc": done.returncode, "stderr": done.stderr[-2000:]}
            continue
        folder = next(runs_root.rglob("metrics.json")).parent
        summary[key] = run_fingerprint(folder)
    return summary


def run_fingerprint(folder: Path) -> dict:
    """A run folder's metrics.json without timings, per_image.csv's sha256 and history.csv's rows without
    their timing columns (values as written: identical runs write identical text)."""
    rows = csv.DictReader(io.StringIO((folder / "history.csv").read_text()))
    return {"metrics": without_timings(json.loads((folder / "metrics.json").read_text())),
            "per_image_sha256": hashlib.sha256((folder / "per_image.csv").read_bytes()).hexdigest(),
            "history": [without_timings(row) for row in rows]}


def existing_runs(runs_root: Path) -> dict:
    return {str(path.parent.relative_to(runs_root)): run_fingerprint(path.parent)
            for path in sorted(runs_root.rglob("metrics.json"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="scratch folder: data, runs and summary.json")
    parser.add_argument("--compare", type=Path, help="another checkout's summary.json")
    parser.add_argument("--runs-root", type=Path, help="fingerprint the runs below this folder instead of training")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = existing_runs(args.runs_root.resolve()) if args.runs_root else fingerprint(args.out.resolve())
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    failed = sorted(key for key, value in summary.items() if "rc" in value)
    for key in failed:  # nothing to compare: a failed training is a failed check, compared or not
        last = (summary[key]["stderr"].strip().splitlines() or ["(no output)"])[-1]
        print(f"{key}: training failed (exit {summary[key]['rc']}): {last}", file=sys.stderr)
    differing = []
    if args.compare is not None:
        other = json.loads(args.compare.read_text())
        differing = sorted(key for key in set(summary) | set(other) if summary.get(key) != other.get(key))
        for key in sorted(set(summary) | set(other)):
            print(f"{key}: {'differs' if key in differing else 'identical'}")
    return 1 if failed or differing else 0


if __name__ == "__main__":
    sys.exit(main())
