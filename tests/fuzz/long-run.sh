#!/usr/bin/env bash
# The long fuzzing run (docs/reliability.md): each target for RUNS executions, or until
# SECONDS seconds, one after another on one core, from its seed corpus; prints a table row
# per target: executions, executions per second, coverage (libFuzzer's cov: edges and ft:
# features), corpus size, findings.
#   tests/fuzz/long-run.sh ASAN_BUILD_DIR WORK_DIR target:RUNS[:SECONDS] ...
set -uo pipefail
build=$1 work=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
printf '| target | executions | exec/s | cov | ft | corpus | findings |\n|---|---|---|---|---|---|---|\n'
for spec in "$@"; do
  IFS=: read -r name runs seconds <<<"$spec"
  log=$work/$name.log
  mkdir -p "$work"
  extra=()
  [ -n "${seconds:-}" ] && extra+=(-max_total_time="$seconds")
  bash "$here/run-fuzz.sh" "$build/bin/temper_fuzz_$name" "$here/corpus/$name" "$work/$name" "$runs" \
    "${extra[@]}" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  done_line=$(grep -E '^#[0-9]+.*cov: ' "$work/$name/fuzz.log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
  findings=$(ls "$work/$name/artifacts" 2>/dev/null | wc -l)
  [ "$rc" -ne 0 ] && findings="$findings (exit $rc, see $log)"
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$execs" "$rate" "$cov" "$ft" "$corp" "$findings"
done
