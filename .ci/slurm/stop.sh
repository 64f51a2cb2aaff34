#!/usr/bin/env bash
# Stop the test cluster started by .ci/slurm/start.sh: cancel its jobs, end exactly the daemons
# whose PIDs start.sh recorded, then remove the state folder (HERITAGE_SLURM_STATE_DIR).
set -uo pipefail

STATE_DIR=${HERITAGE_SLURM_STATE_DIR:-/tmp/heritage-slurm}
PIDS_FILE="$STATE_DIR/pids"

if [ ! -f "$PIDS_FILE" ]; then
    echo "stop.sh: no $PIDS_FILE: nothing started by start.sh to stop"
    exit 0
fi

# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"
# Jobs first, while slurmd still runs: their processes belong to slurmstepd, not to the daemons
# killed below, and would otherwise outlive the cluster.
if scancel --user="$(id -un)" 2>/dev/null; then
    for _ in $(seq 1 20); do
        [ -z "$(squeue --noheader --user="$(id -un)" 2>/dev/null)" ] && break
        sleep 0.5
    done
fi

# Reverse start order: slurmd, slurmctld, munged.
mapfile -t entries < <(tac "$PIDS_FILE")
for entry in "${entries[@]}"; do
    name=${entry% *}
    pid=${entry#* }
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop.sh: $name ($pid) ignored SIGTERM for 10 s, sending SIGKILL" >&2
            kill -KILL "$pid"
        fi
    fi
    echo "stopped $name ($pid)"
done

rm -rf "$STATE_DIR"
