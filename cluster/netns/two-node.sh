#!/usr/bin/env bash
# A two-node "cluster" on one Linux machine, for testing multi-node launches without a
# cluster: two network namespaces joined by a veth pair, each with its own hostname and
# address, and mpirun (OpenMPI 4.1, TCP only, hostfile launch) starting ranks on both.
#
#   node-a  netns temper-node-a  10.77.0.1/24  iface tn-a ─┐ veth pair
#   node-b  netns temper-node-b  10.77.0.2/24  iface tn-b ─┘
#
# usage (as root):
#   cluster/netns/two-node.sh up                  create both nodes (replaces stale ones)
#   cluster/netns/two-node.sh down                remove everything (idempotent)
#   cluster/netns/two-node.sh status              show what exists
#   cluster/netns/two-node.sh exec HOST CMD...    run CMD on node HOST (node-a | node-b)
#   cluster/netns/two-node.sh run NP [MPIRUN_OPTION...] -- CMD...
#                                                 mpirun CMD with NP ranks per node (2*NP
#                                                 in all: ranks 0..NP-1 on node-a, the
#                                                 rest on node-b), started from node-a
#   cluster/netns/two-node.sh agent HOST CMD...   the launch agent OpenMPI calls instead
#                                                 of ssh (not for direct use)
#
# What each piece is:
#  - Network: `ip netns` namespaces; only loopback and the veth end inside each, so the
#    only way between the nodes is 10.77.0.0/24 (the host's network is not touched).
#  - Hostname: each command runs under `unshare --uts` after `hostname node-X`, so
#    gethostname() (and so OpenMPI's node name and Temper's ProcessInfo::hostname) differ
#    per node. The mount and PID namespaces stay shared: /tmp and the build tree are
#    the same files on both nodes, as on a cluster with a shared filesystem.
#  - Name resolution: /etc/netns/temper-node-X/hosts, which `ip netns exec` bind-mounts
#    over /etc/hosts inside that namespace, maps node-a and node-b to their addresses.
#  - Launch: mpirun runs on node-a with hostfile "node-a slots=NP / node-b slots=NP" and
#    `--mca plm_rsh_agent <state dir>/agent`. OpenMPI starts its daemon (orted) on each
#    remote host by calling `AGENT HOST WORDS...`, as it would call `ssh HOST WORDS...`;
#    our agent (`two-node.sh agent`) joins the words into one command line, like ssh, and
#    runs it with sh inside HOST's namespaces with a clean, ssh-like environment. orted on
#    node-b then calls back to mpirun on node-a over 10.77.0.1 (oob_tcp_if_include), and
#    the ranks talk over TCP only (btl self,tcp on 10.77.0.0/24, pml ob1: no shared
#    memory between "nodes", no UCX).
#
# Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), iproute2, util-linux (unshare) and hostname.
# Only the two namespaces, /etc/netns/temper-node-{a,b}/ and the state directory
# (/run/temper-netns, or $TEMPER_NETNS_STATE) are created; `down` removes all of them,
# after ending whatever processes are still inside the two namespaces.
set -euo pipefail

self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
state=${TEMPER_NETNS_STATE:-/run/temper-netns}
hosts=(node-a node-b)
declare -A ns=([node-a]=temper-node-a [node-b]=temper-node-b)
declare -A addr=([node-a]=10.77.0.1 [node-b]=10.77.0.2)
declare -A iface=([node-a]=tn-a [node-b]=tn-b)
subnet=10.77.0.0/24

die() { echo "two-node.sh: error: $*" >&2; exit 1; }
note() { echo "two-node.sh: $*" >&2; }

need_root() {
  [ "$(id -u)" -eq 0 ] ||
    die "must run as root (uid $(id -u)): creating network and UTS namespaces needs" \
        "CAP_SYS_ADMIN and CAP_NET_ADMIN"
}

need_tools() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null ||
      die "'$t' not found (needs iproute2 for ip, util-linux for unshare, hostname, openmpi-bin for mpirun)"
  done
}

ns_of() {
  [ -n "${ns[$1]+x}" ] || die "unknown host '$1' (the nodes are: ${hosts[*]})"
  echo "${ns[$1]}"
}

is_up() { [ -e "/run/netns/${ns[node-a]}" ] && [ -e "/run/netns/${ns[node-b]}" ] && [ -x "$state/agent" ]; }

# Runs CMD inside HOST: its network namespace (with its /etc/hosts) and a fresh UTS
# namespace carrying its hostname. Every step execs, so the process that started this
# becomes CMD (OpenMPI tracks and signals the agent's pid as the remote daemon).
in_node() {
  local host=$1; shift
  local n; n=$(ns_of "$host")
  [ -e "/run/netns/$n" ] || die "node $host (netns $n) is not up: run '$self up' first"
  exec ip netns exec "$n" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "$host" "$@"
}

cmd_down() {
  need_root
  local host n pids tries
  for host in "${hosts[@]}"; do
    n=${ns[$host]}
    if [ -e "/run/netns/$n" ]; then
      # Processes left inside (an orted or ranks of a job that was interrupted) would keep
      # the namespace alive after `ip netns del`; they can only be ours. TERM, then KILL.
      pids=$(ip netns pids "$n" 2>/dev/null || true)
      if [ -n "$pids" ]; then
        note "ending processes left in $n: $(echo $pids)"
        kill -TERM $pids 2>/dev/null || true
        for tries in 1 2 3 4 5 6 7 8 9 10; do
          pids=$(ip netns pids "$n" 2>/dev/null || true)
          [ -z "$pids" ] && break
          sleep 0.2
        done
        [ -n "$pids" ] && { kill -KILL $pids 2>/dev/null || true; sleep 0.2; }
      fi
      # Deleting a namespace also deletes the veth end in it, and so the pair.
      ip netns del "$n" 2>/dev/null || note "warning: could not delete netns $n"
    fi
    rm -rf "/etc/netns/$n"
  done
  rmdir /etc/netns 2>/dev/null || true  # only if nothing else lives there
  rm -rf "$state"
}

cmd_up() {
  need_root
  need_tools ip unshare hostname
  # Anything left from an earlier run (killed before its `down`) goes first.
  cmd_down
  # If any step below fails, leave nothing half-built behind.
  trap 'rc=$?; if [ $rc -ne 0 ]; then note "up failed; removing what was created"; cmd_down || true; fi' EXIT

  local host n err
  for host in "${hosts[@]}"; do
    n=${ns[$host]}
    err=$(ip netns add "$n" 2>&1) ||
      die "cannot create network namespace $n: ${err:-ip netns add failed}." \
          "'ip netns' is not permitted here (a container without CAP_SYS_ADMIN, or" \
          "seccomp/AppArmor forbidding unshare/mount); the two-node test needs it"
    ip -n "$n" link set lo up
  done
  # The veth pair is created with its ends directly inside the namespaces: no interface
  # ever appears in the host's namespace.
  err=$(ip link add "${iface[node-a]}" netns "${ns[node-a]}" type veth \
          peer name "${iface[node-b]}" netns "${ns[node-b]}" 2>&1) ||
    die "cannot create the veth pair between the namespaces: $err"
  for host in "${hosts[@]}"; do
    n=${ns[$host]}
    ip -n "$n" addr add "${addr[$host]}/24" dev "${iface[$host]}"
    ip -n "$n" link set "${iface[$host]}" up
    # `ip netns exec NS` bind-mounts every file of /etc/netns/NS over /etc.
    mkdir -p "/etc/netns/$n"
    {
      echo "# written by $self; removed by '$(basename "$self") down'"
      echo "127.0.0.1 localhost"
      echo "${addr[node-a]} node-a"
      echo "${addr[node-b]} node-b"
    } > "/etc/netns/$n/hosts"
  done
  unshare --uts true 2>/dev/null ||
    die "cannot create a UTS namespace (unshare --uts): each node needs its own hostname"

  # The launch agent OpenMPI calls as plm_rsh_agent (an absolute path without spaces).
  mkdir -p "$state"
  printf '#!/bin/sh\n# OpenMPI launch agent: "agent HOST COMMAND..." (see %s)\nexec %q %q agent "$@"\n' \
    "$self" "$(command -v bash)" "$self" > "$state/agent"
  chmod +x "$state/agent"

  # Checks: each node has its name, resolves the other and reaches it over the veth.
  local got want
  for host in "${hosts[@]}"; do
    got=$(bash "$self" exec "$host" hostname) || die "cannot run a command on $host"
    [ "$got" = "$host" ] || die "$host reports hostname '$got'"
  done
  got=$(bash "$self" exec node-a getent hosts node-b | awk '{print $1}') || true
  [ "$got" = "${addr[node-b]}" ] ||
    die "node-a resolves node-b to '${got}', expected ${addr[node-b]} (/etc/netns bind mount?)"
  if command -v ping >/dev/null; then
    bash "$self" exec node-a ping -c 1 -W 2 "${addr[node-b]}" >/dev/null ||
      die "node-a cannot reach node-b at ${addr[node-b]} over the veth pair"
  fi
  trap - EXIT
  note "up: node-a ${addr[node-a]} (netns ${ns[node-a]}), node-b ${addr[node-b]} (netns ${ns[node-b]})"
}

cmd_status() {
  local host n
  for host in "${hosts[@]}"; do
    n=${ns[$host]}
    if [ -e "/run/netns/$n" ]; then
      echo "$host: netns $n: $(ip -n "$n" -br addr show dev "${iface[$host]}" 2>/dev/null || echo 'no veth')"
    else
      echo "$host: down"
    fi
  done
}

# `agent HOST WORDS...`, called by mpirun as it would call `ssh HOST WORDS...`. Like
# sshd, it joins the words with spaces and hands the line to a shell (OpenMPI quotes the
# words for that shell: `PATH=...; export PATH; ... orted -mca ess "env" ...`). The
# environment is rebuilt as a login would have it, not inherited from mpirun: a daemon
# that inherited mpirun's PMIX_*/OMPI_* variables could hand them to its ranks. Anything
# the ranks need goes through `mpirun -x`, as on a real cluster.
cmd_agent() {
  [ $# -ge 2 ] || die "agent: usage: agent HOST COMMAND... (called by mpirun as plm_rsh_agent)"
  local host=$1; shift
  local line="$*"
  local keep=(PATH="$PATH" HOME="${HOME:-/root}" SHELL=/bin/sh USER="$(id -un)" LOGNAME="$(id -un)")
  [ -n "${LD_LIBRARY_PATH:-}" ] && keep+=(LD_LIBRARY_PATH="$LD_LIBRARY_PATH")
  [ -n "${TMPDIR:-}" ] && keep+=(TMPDIR="$TMPDIR")
  # OpenMPI refuses to run as root without both of these (mpirun and the ranks).
  [ "$(id -u)" -eq 0 ] && keep+=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
  in_node "$host" env -i "${keep[@]}" sh -c "$line"
}

cmd_exec() {
  [ $# -ge 2 ] || die "exec: usage: exec HOST COMMAND..."
  local host=$1; shift
  [ "${1:-}" = "--" ] && shift
  in_node "$host" "$@"
}

cmd_run() {
  need_root
  need_tools mpirun
  local np=${1:-}; shift || true
  [[ "$np" =~ ^[1-9][0-9]*$ ]] || die "run: NP (ranks per node) must be a positive integer, got '$np'"
  local extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do extra+=("$1"); shift; done
  [ "${1:-}" = "--" ] || die "run: usage: run NP [MPIRUN_OPTION...] -- COMMAND..."
  shift
  [ $# -gt 0 ] || die "run: nothing to run after --"
  is_up || die "the two nodes are not up: run '$self up' first"

  local hostfile="$state/hostfile.np$np"
  printf 'node-a slots=%d\nnode-b slots=%d\n' "$np" "$np" > "$hostfile"
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  export SHELL=/bin/sh  # OpenMPI writes the remote command line for the local shell's kind
  local args=(
    --hostfile "$hostfile" -np $((2 * np)) --map-by slot --bind-to none
    --mca plm_rsh_agent "$state/agent"
    --mca plm_rsh_no_tree_spawn 1
    --mca oob_tcp_if_include "$subnet"
    --mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include "$subnet"
    --mca osc '^ucx'
    -x OMP_NUM_THREADS
  )
  if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    args+=(-x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM)
  fi
  # Settings the ranks need from the caller's environment: the log level, and the
  # sanitizers' options in a sanitizer build (make test-asan).
  for var in TEMPER_LOG ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; do
    [ -n "${!var:-}" ] && args+=(-x "$var")
  done
  in_node node-a mpirun "${args[@]}" "${extra[@]}" "$@"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) shift; cmd_status "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  run) shift; cmd_run "$@" ;;
  agent) shift; cmd_agent "$@" ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "usage: $(basename "$0") up | down | status | exec HOST CMD... | run NP [MPIRUN_OPTION...] -- CMD... (see --help)" ;;
esac
