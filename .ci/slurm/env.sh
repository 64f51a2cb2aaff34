# Source this to talk to the test cluster of .ci/slurm/start.sh (CI, tests, a shell):
#   source .ci/slurm/env.sh && sinfo
# It only points the SLURM clients at that cluster's slurm.conf; it starts nothing.
export SLURM_CONF="${HERITAGE_SLURM_STATE_DIR:-/tmp/heritage-slurm}/slurm.conf"
