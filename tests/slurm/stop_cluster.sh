#!/usr/bin/env bash
# Stop the cluster started by start_cluster.sh DIR: slurmd, slurmctld, munged (by pid file), waiting
# for each to exit. Safe to call twice or on a half-started cluster.
set -uo pipefail

DIR=$(realpath -m "${1:?usage: stop_cluster.sh DIR}")

stop() {
    local pid_file=$1
    [ -f "$pid_file" ] || return 0
    local pid
    pid=$(cat "$pid_file" 2>/dev/null) || return 0
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pid_file"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    rm -f "$pid_file"
}

if [ -f "$DIR/slurm.conf" ] && command -v scancel >/dev/null; then
    SLURM_CONF="$DIR/slurm.conf" timeout 10 scancel --full --quiet -u "$(id -un)" 2>/dev/null || true
fi
stop "$DIR/slurmd.pid"
stop "$DIR/slurmctld.pid"
stop "$DIR/munge/munged.pid"
exit 0
