#!/usr/bin/env bash
# Two-node test over network namespaces (ctest netns.two_node, label mpi; needs root).
#
#   test_two_node.sh TEMPER_BIN PRINT_PROCESS_BIN SOURCE_DIR
#
# Brings up cluster/netns/two-node.sh (node-a 10.77.0.1, node-b 10.77.0.2, each with its
# own hostname), then, with 2 ranks per node launched by mpirun from node-a through a
# hostfile and the namespace launch agent, OpenMPI over TCP only:
#  (a) temper_print_process on each rank: Temper's detect_process() must put ranks 0,1
#      on node 0 (host node-a) and ranks 2,3 on node 1 (host node-b), local ranks 0,1 on
#      each node;
#  (b) `temper train` tiny.yaml, 5 steps, 4 ranks x grad_accum 1, against one process on
#      the host with grad_accum 4 (the same global batch), both without clipping
#      (optim.grad_clip=0): the five losses must agree within 1e-5 relative (fp32
#      reduction-order noise; a wrong data shard or a missing gradient reduction moves them
#      by ~1e-2) and the five gradient norms within 2e-7 (the bound of the invariance tests,
#      kLayoutGradNormBound: a wrong gradient scale over the ranks moves them by a factor,
#      which losses do not show).
# The namespaces are removed at the end, also on failure or interruption. Not being
# root, or namespaces not being permitted, is a FAIL (with the reason), not a skip.
set -uo pipefail

[ $# -eq 3 ] || { echo "usage: $0 TEMPER_BIN PRINT_PROCESS_BIN SOURCE_DIR" >&2; exit 2; }
temper=$1 print_process=$2 src=$3
two_node=$src/cluster/netns/two-node.sh
bound=1e-5 grad_norm_bound=2e-7

fail() { echo "FAIL: netns.two_node: $*" >&2; exit 1; }

[ -x "$temper" ] || fail "no temper binary at $temper"
[ -x "$print_process" ] || fail "no temper_print_process binary at $print_process"
[ -r "$two_node" ] || fail "no $two_node"
[ "$(id -u)" -eq 0 ] ||
  fail "must run as root (uid $(id -u)): the two-node test creates network and UTS namespaces"

# One user of the namespaces at a time (they have fixed names): wait for another run.
lock=/run/lock/temper-netns.lock
[ -d /run/lock ] || lock=/tmp/temper-netns.lock
exec 9>"$lock" || fail "cannot open the lock file $lock"
flock -w 60 9 || fail "another two-node run holds the namespace lock for over 60 s"

work=$(mktemp -d /tmp/temper-netns-test.XXXXXX)  # /tmp: the nodes share the filesystem
cleanup() {
  bash "$two_node" down || echo "netns.two_node: warning: '$two_node down' failed" >&2
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

bash "$two_node" up || fail "could not bring the two nodes up (reason above)"

# --- (a) node and local-rank detection --------------------------------------------
echo "== (a) detect_process() on 2 nodes x 2 ranks"
out=$(timeout -k 5 60 bash "$two_node" run 2 -- "$print_process" 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || fail "mpirun of temper_print_process over two nodes exited with $rc"
expected="rank 0/4 (local 0/2, node 0, host node-a, openmpi)
rank 1/4 (local 1/2, node 0, host node-a, openmpi)
rank 2/4 (local 0/2, node 1, host node-b, openmpi)
rank 3/4 (local 1/2, node 1, host node-b, openmpi)"
got=$(grep '^rank ' <<<"$out" | sort)
[ "$got" = "$expected" ] ||
  fail "detected placement differs; expected:"$'\n'"$expected"$'\n'"got:"$'\n'"$got"
echo "ok: ranks 0,1 on node-a (node 0), 2,3 on node-b (node 1), local ranks 0,1 on each"

# --- (b) the same losses as one process ---------------------------------------------
train_args=("$src/configs/recipes/tiny.yaml" train.steps=5 train.eval_every=0
            train.progress=plain parallel.timeout_s=120 optim.grad_clip=0)
echo "== (b) temper train: 4 ranks over two nodes (grad_accum 1)"
rx_b() { ip netns exec temper-node-b cat /sys/class/net/tn-b/statistics/rx_bytes; }
rx0=$(rx_b)
timeout -k 5 90 bash "$two_node" run 2 -- "$temper" train "${train_args[@]}" \
  out_dir="$work/two_node" train.grad_accum=1 2>&1
rc=$?
[ $rc -eq 0 ] || fail "temper train on 4 ranks over two nodes exited with $rc"
rx1=$(rx_b)
echo "(node-b received $((rx1 - rx0)) bytes over the veth pair during the run)"

echo "== (b) temper train: 1 process on the host (grad_accum 4)"
OMP_NUM_THREADS=1 timeout -k 5 90 "$temper" train "${train_args[@]}" \
  out_dir="$work/one" train.grad_accum=4 2>&1
rc=$?
[ $rc -eq 0 ] || fail "temper train on one process exited with $rc"

# metrics.jsonl: one JSON object per step with "step", "loss" and "grad_norm".
values() {  # KEY FILE: that number of every line
  sed -n "s/.*\"$1\":[[:space:]]*\([-+0-9.eE]*\).*/\1/p" "$2"
}
[ -s "$work/two_node/metrics.jsonl" ] || fail "no $work/two_node/metrics.jsonl"
[ -s "$work/one/metrics.jsonl" ] || fail "no $work/one/metrics.jsonl"
compare() {  # KEY BOUND: one line per step, then the worst relative difference; exit 1 past BOUND
  paste <(values "$1" "$work/one/metrics.jsonl") <(values "$1" "$work/two_node/metrics.jsonl") |
    awk -v key="$1" -v bound="$2" '
      function abs(x) { return x < 0 ? -x : x }
      { n++; d = abs($2 - $1); r = d / (abs($1) > 1e-30 ? abs($1) : 1e-30)
        if (r > worst) worst = r
        if ($1 == "" || $2 == "") missing = 1
        printf "step %d %s: one node %.9g, two nodes %.9g, rel diff %.2e\n", n, key, $1, $2, r }
      END { printf "%s: worst rel diff %.2e (bound %s)\n", key, worst, bound
            if (n != 5 || missing) { print "expected 5 values from each run"; exit 1 }
            exit worst <= bound ? 0 : 1 }'
}
report=$(compare loss "$bound")
rc=$?
echo "$report"
[ $rc -eq 0 ] || fail "losses of the two-node run differ from one process"
report=$(compare grad_norm "$grad_norm_bound")
rc=$?
echo "$report"
[ $rc -eq 0 ] || fail "gradient norms of the two-node run differ from one process"
echo "PASS: netns.two_node: node/local-rank detection over two namespaces, and 4 ranks on" \
     "two nodes give one process's losses and gradient norms"
