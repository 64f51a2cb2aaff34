"""How long the edit-test loop takes: ``make test-fast``, timed on this machine.

The loop is meant to stay under 3 minutes on the project's 2-core machine (issue 13). Runs the
Makefile's ``test-fast`` target as it is (its environment step is a no-op once ``.venv`` is built),
and writes ``bench/results/test-fast-<cpu>-<date>.json``: the wall seconds, pytest's summary line,
the load average before and after (other work sharing the cores makes the loop slower), the commit.
A measurement, not a check: it records a failing run too, and exits with make's status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from heritage import fileio
from heritage.training import runs
from train_bench import result_path  # bench/ is on sys.path when this runs as a script

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^=+ (.*\d+ (passed|failed|error).*) =+$")


def pytest_summary(output: str) -> str | None:
    """pytest's last "==== 12 passed, 1 skipped in 3.2s ====" line, without its rules."""
    found = [m.group(1) for line in output.splitlines() if (m := SUMMARY.match(line.strip()))]
    return found[-1] if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    commit = runs.git_commit()  # the code timed, with "-dirty" for local changes
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(["make", "-C", str(REPO), "test-fast"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    cpu = runs.cpu_name()
    record = {
        "benchmark": "test_fast", "cpu": cpu, "cores": os.cpu_count(), "git_commit": commit,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": "make test-fast",
        "returncode": done.returncode, "wall_s": round(seconds, 1), "pytest": pytest_summary(done.stdout),
        "load_average_1min_before": load_before[0], "load_average_1min_after": os.getloadavg()[0],
    }
    path = result_path(args.out, cpu, dt.date.today().isoformat(), prefix="test-fast-")
    fileio.write_json(path, record)
    print(json.dumps(record, indent=2))
    print(f"written: {path}")
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-2000:])
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
