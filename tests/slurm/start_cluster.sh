#!/usr/bin/env bash
# Start a single-node SLURM cluster (munged, slurmctld, slurmd on localhost) in a private folder.
#
#   tests/slurm/start_cluster.sh DIR     writes DIR/slurm.conf, DIR/env.sh and the daemons' logs,
#                                        starts the daemons and waits until the node is idle
#   tests/slurm/stop_cluster.sh DIR      stops them (by their pid files)
#
# Needs Debian's slurmctld, slurmd, slurm-client and munge packages (22.05 in Debian 12) and root
# (slurmd launches jobs as their user). No job accounting: the cluster has no slurmdbd, so `sacct`
# sees no jobs; Snakemake's SLURM executor must poll with squeue (--slurm-status-command squeue).
# Nothing outside DIR is written: own munge key and socket, own state and spool folders, free ports.
set -euo pipefail

DIR=$(realpath -m "${1:?usage: start_cluster.sh DIR}")
CPUS=${SLURM_TEST_CPUS:-$(nproc --all)}
mkdir -p "$DIR"/{munge,state,spool,log}
chmod 0700 "$DIR/munge"

for program in munged slurmctld slurmd sinfo; do
    command -v "$program" >/dev/null || { echo "start_cluster.sh: $program not found (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 3; }
done

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- munge: a fresh key and a private socket
KEY="$DIR/munge/munge.key"
head -c 1024 /dev/urandom > "$KEY"
chmod 0400 "$KEY"
SOCKET="$DIR/munge/munge.socket"
munged --force --key-file="$KEY" --socket="$SOCKET" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"

# --- slurm.conf
HOST=$(hostname -s)
MEMORY_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
CONTROLLER_PORT=$(free_port)
NODE_PORT=$(free_port)
cat > "$DIR/slurm.conf" <<CONF
# written by tests/slurm/start_cluster.sh: one node, no accounting, no cgroups
ClusterName=irntest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CONTROLLER_PORT
SlurmdPort=$NODE_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdParameters=config_overrides
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

cat > "$DIR/env.sh" <<ENV
export SLURM_CONF=$DIR/slurm.conf
ENV
export SLURM_CONF="$DIR/slurm.conf"

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

# --- wait until the node accepts jobs
for _ in $(seq 1 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)
    if [ "$state" = "idle" ]; then
        echo "cluster up: SLURM_CONF=$SLURM_CONF (node $HOST, $CPUS CPUs, ${MEMORY_MB} MB)"
        exit 0
    fi
    sleep 0.5
done
echo "start_cluster.sh: node did not become idle (state '${state:-none}'); see $DIR/log" >&2
tail -n 20 "$DIR"/log/*.log >&2 || true
exit 1
