#!/usr/bin/env bash
# Install a real SLURM (slurmctld + slurmd + client tools) and munge from Debian, for CI and for
# developing heritage.pipeline.slurm on one machine. Idempotent: does nothing when everything is present.
# Needs root (or sudo) and the Debian archive; no systemd is used (start.sh starts the daemons).
set -euo pipefail

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
   && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    echo "slurm and munge already installed: $(dpkg-query -W -f='${Package} ${Version}  ' slurmctld slurmd munge)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# slurm-wlm pulls slurmctld, slurmd and slurm-client; the package scripts try to start the daemons
# through systemd/invoke-rc.d, which fails harmlessly without systemd (policy-rc.d keeps them quiet).
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    added_policy=1
fi
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
if [ "$added_policy" -eq 1 ]; then $SUDO rm -f "$policy"; fi

echo "installed: $(dpkg-query -W -f='${Package} ${Version}  ' slurmctld slurmd munge)"
