#!/usr/bin/env bash
# Start a private one-node SLURM cluster on this machine (munged + slurmctld + slurmd), without
# systemd, for CI and for testing heritage.pipeline.slurm against real daemons.
#
#   .ci/slurm/start.sh
#   source .ci/slurm/env.sh && sinfo     # env.sh sets SLURM_CONF for the clients and the tests
#   .ci/slurm/stop.sh
#
# Everything lives in one state folder (HERITAGE_SLURM_STATE_DIR, default /tmp/heritage-slurm):
# slurm.conf, the munge key and socket, daemon logs, spool and saved state, and the PIDs of the
# daemons started here (pids), which stop.sh ends. /etc is not touched. Needs root: slurmd
# launches jobs and munged guards the key.
set -euo pipefail

STATE_DIR=${HERITAGE_SLURM_STATE_DIR:-/tmp/heritage-slurm}
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"   # SLURM_CONF, inside STATE_DIR
CTLD_PORT=${HERITAGE_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${HERITAGE_SLURM_SLURMD_PORT:-6818}
READY_TIMEOUT_S=${HERITAGE_SLURM_READY_TIMEOUT_S:-60}

if [ "$(id -u)" -ne 0 ]; then
    echo "start.sh: must run as root (slurmd launches jobs, munged owns the key)" >&2
    exit 1
fi
for tool in munged mungekey slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "start.sh: $tool not found; run .ci/slurm/install.sh" >&2; exit 1; }
done
if [ -s "$STATE_DIR/pids" ]; then
    echo "start.sh: $STATE_DIR/pids exists: a cluster may be running; run .ci/slurm/stop.sh first" >&2
    exit 1
fi

NODE=$(hostname -s)
CPUS=$(nproc)
# Declare less memory than the machine has: slurmd drains a node whose real memory is below the
# configured RealMemory, and the kernel/page cache need some headroom anyway.
MEM_TOTAL_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MEMORY_MB=$((MEM_TOTAL_MB * 9 / 10))
MEM_PER_CPU_MB=$((REAL_MEMORY_MB / CPUS))

rm -rf "$STATE_DIR"
mkdir -p "$STATE_DIR"/{munge,log,ctld,spool}
# Clients need to reach the socket inside; the key itself is 0600.
chmod 0711 "$STATE_DIR/munge"
: >"$STATE_DIR/pids"

# --- munge: own key and socket, so a system munged (if any) is left alone -------------------
mungekey --create --keyfile="$STATE_DIR/munge/munge.key" --bits=1024
chmod 0600 "$STATE_DIR/munge/munge.key"
MUNGE_SOCKET="$STATE_DIR/munge/munge.socket"
munged --foreground \
    --socket="$MUNGE_SOCKET" --key-file="$STATE_DIR/munge/munge.key" \
    --pid-file="$STATE_DIR/munge/munged.pid" --seed-file="$STATE_DIR/munge/munged.seed" \
    </dev/null >>"$STATE_DIR/log/munged.out" 2>&1 &
echo "munged $!" >>"$STATE_DIR/pids"

# --- slurm.conf ------------------------------------------------------------------------------
cat >"$SLURM_CONF" <<EOF
# Written by .ci/slurm/start.sh: a one-node test cluster (see that script for why each line).
ClusterName=heritage-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's restart (default 120 s); 10 s keeps the tests short.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# No cgroups in containers/sandboxes: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that asks no memory would get the whole node and run alone.
DefMemPerCPU=$MEM_PER_CPU_MB
SchedulerType=sched/backfill
# Look at pending jobs (dependencies just satisfied, requeued jobs) every few seconds, not every minute.
SchedulerParameters=bf_interval=1,sched_interval=2
JobRequeue=1
ReturnToService=2
# No accounting daemon: sacct is unavailable, heritage.pipeline.slurm falls back to scontrol + exit records.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
# Seconds between SIGTERM and SIGKILL on cancel/requeue: time for a toy run to checkpoint.
KillWait=5
MinJobAge=300
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEMORY_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

dump_logs() {
    for log in "$STATE_DIR"/log/*; do
        echo "===== $log (last 40 lines) =====" >&2
        tail -n 40 "$log" >&2 || true
    done
}

# --- wait for munge, then start the SLURM daemons in the foreground (so $! is their PID) ------
deadline=$((SECONDS + READY_TIMEOUT_S))
until munge --socket="$MUNGE_SOCKET" -n 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "start.sh: munged did not answer on $MUNGE_SOCKET within ${READY_TIMEOUT_S}s" >&2
        dump_logs
        echo "start.sh: the daemons started so far are in $STATE_DIR/pids; end them with .ci/slurm/stop.sh" >&2
        exit 1
    fi
    sleep 0.5
done

# Daemons' own stdout/stderr go to files: inheriting ours would keep a CI step's pipe open.
slurmctld -D -c -f "$SLURM_CONF" </dev/null >>"$STATE_DIR/log/slurmctld.out" 2>&1 &
echo "slurmctld $!" >>"$STATE_DIR/pids"
slurmd -D -f "$SLURM_CONF" </dev/null >>"$STATE_DIR/log/slurmd.out" 2>&1 &
echo "slurmd $!" >>"$STATE_DIR/pids"

until sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null | grep -qx idle; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "start.sh: node $NODE not idle within ${READY_TIMEOUT_S}s; sinfo says:" >&2
        sinfo --Node --long >&2 || true
        scontrol show node "$NODE" >&2 || true
        dump_logs
        echo "start.sh: the daemons started so far are in $STATE_DIR/pids; end them with .ci/slurm/stop.sh" >&2
        exit 1
    fi
    sleep 1
done

echo "SLURM test cluster ready: node $NODE ($CPUS CPUs, ${REAL_MEMORY_MB} MB), partition debug"
echo "clients: source .ci/slurm/env.sh (SLURM_CONF=$SLURM_CONF)"
