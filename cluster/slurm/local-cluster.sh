#!/usr/bin/env bash
# A one-machine Slurm cluster from Debian 12's packages (slurm-wlm 22.05, munge,
# libpmix-dev), for the `slurm` test label and for trying the sbatch templates by hand:
#   cluster/slurm/local-cluster.sh start [DIR]   # then: export SLURM_CONF=DIR/slurm.conf
#   cluster/slurm/local-cluster.sh stop [DIR]
# DIR (default /tmp/temper-slurm) holds the config, the munge key and socket, the state,
# the logs and the pid files; nothing under /etc is used. There is no systemd: munged,
# slurmctld and slurmd start by hand, as root (SlurmUser=root, SlurmdUser=root).
# One node, `temper-node1`, with 16 CPUs whatever the machine has (config_overrides) and
# 8 GPUs declared without devices, so that templates asking for --gpus-per-node schedule
# on a CPU-only machine. The daemons listen on all addresses, but every address in the
# config is 127.0.0.1, so the traffic stays on loopback.
# Choices, and why:
#  - ProctrackType=proctrack/pgid: proctrack/linuxproc leaves a batch script's children
#    running when the job ends; TaskPlugin=task/none: no cgroups here.
#  - MpiDefault=pmix: Debian's OpenMPI has no PMI2. Slurm's pmix plugin dlopens the
#    unversioned libpmix.so, which only libpmix-dev ships; without it srun hangs.
#  - AuthInfo cred_expire=10: a requeued job waits for its credential to expire before it
#    starts again (120 s by default).
#  - No accounting, so no sacct: callers poll `scontrol show job`.
set -euo pipefail

cmd=${1:-}
dir=${2:-/tmp/temper-slurm}
node=temper-node1
ctld_port=${TEMPER_SLURMCTLD_PORT:-16817}
slurmd_port=${TEMPER_SLURMD_PORT:-16818}

die() { echo "local-cluster.sh: $*" >&2; exit 1; }

# Stops the daemon whose pid file is $1: SIGTERM, then SIGKILL after 10 s.
stop_pidfile() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop_cluster() {
  if [ -f "$dir/slurm.conf" ] && [ -f "$dir/slurmctld.pid" ]; then
    # Jobs first, so that no slurmstepd or task outlives the daemons.
    SLURM_CONF=$dir/slurm.conf timeout 10 scancel --quiet --user=root 2>/dev/null || true
    for _ in $(seq 1 50); do
      [ -z "$(SLURM_CONF=$dir/slurm.conf timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
  stop_pidfile "$dir/munged.pid"
  pkill -KILL -f "slurmstepd: \[.*\]" 2>/dev/null || true
}

write_config() {
  cat > "$dir/slurm.conf" <<EOF
# Written by cluster/slurm/local-cluster.sh: a one-node test cluster on 127.0.0.1.
ClusterName=temper-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=pmix
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
MailProg=/bin/true
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$(hostname -s) CPUs=16 Gres=gpu:8 State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # Eight GPUs whose "device files" are copies of /dev/null: the scheduler counts them and
  # nothing is bound to real hardware.
  mkdir -p "$dir/dev"
  for i in 0 1 2 3 4 5 6 7; do mknod "$dir/dev/gpu$i" c 1 3; done  # like /dev/null
  echo "NodeName=$node Name=gpu File=$dir/dev/gpu[0-7]" > "$dir/gres.conf"
}

start_cluster() {
  for c in munged slurmctld slurmd sinfo srun scontrol; do
    command -v "$c" >/dev/null || die "$c not found: apt-get install slurm-wlm munge libpmix-dev"
  done
  [ -e "/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)/libpmix.so" ] ||
    ls /usr/lib/*/libpmix.so >/dev/null 2>&1 ||
    die "libpmix.so not found (Slurm's pmix plugin needs it; srun would hang): apt-get install libpmix-dev"
  [ "$(id -u)" = 0 ] || die "start needs root (the daemons run as root)"
  stop_cluster
  rm -rf "$dir/state" "$dir/spool" "$dir/log" "$dir/munge" "$dir/dev"
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
  chmod 0755 "$dir" "$dir/munge"  # munged refuses a socket folder others may write to
  head -c 1024 /dev/urandom > "$dir/munge.key"
  chmod 0400 "$dir/munge.key"
  munged --force --key-file="$dir/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munged.seed" </dev/null >/dev/null 2>&1 || die "munged did not start: $(tail -n 5 "$dir/log/munged.log" 2>/dev/null)"
  write_config
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -c -f "$SLURM_CONF" </dev/null >/dev/null 2>&1 || die "slurmctld did not start: $(tail -n 5 "$dir/log/slurmctld.log")"
  slurmd -f "$SLURM_CONF" -N "$node" </dev/null >/dev/null 2>&1 || die "slurmd did not start: $(tail -n 5 "$dir/log/slurmd.log")"
  local state=""
  local deadline=$((SECONDS + 30))
  while (( SECONDS < deadline )); do
    state=$(timeout 5 sinfo -h -n "$node" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.2
  done
  if [ "$state" != idle ]; then
    echo "node $node is '${state:-unreachable}', not idle, after 30 s" >&2
    tail -n 20 "$dir"/log/*.log >&2 || true
    stop_cluster
    exit 1
  fi
  echo "Slurm is up: node $node idle. export SLURM_CONF=$SLURM_CONF"
}

case "$cmd" in
  start) start_cluster ;;
  stop) stop_cluster; echo "Slurm stopped ($dir)" ;;
  *) die "usage: $0 start|stop [DIR]" ;;
esac
