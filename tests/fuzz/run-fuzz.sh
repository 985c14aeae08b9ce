#!/usr/bin/env bash
# Runs one fuzz target for a fixed number of executions, from its seed corpus:
#   run-fuzz.sh BINARY SEED_DIR WORK_DIR RUNS [libFuzzer flags...]
# New inputs go to WORK_DIR/corpus (the seeds are never written to), the whole output to
# WORK_DIR/fuzz.log (its end is printed). On a finding
# (crash, sanitizer report, uncaught exception, error without its file's name, a single
# allocation over 2 GiB, an input taking over 20 s) it prints the reproducer's bytes and
# fails. Reproduce with: BINARY REPRODUCER_FILE
set -uo pipefail
bin=$1 seeds=$2 work=$3 runs=$4
shift 4
rm -rf "$work/artifacts"
mkdir -p "$work/corpus" "$work/artifacts"
export HDF5_USE_FILE_LOCKING=FALSE
"$bin" -runs="$runs" -rss_limit_mb=4096 -malloc_limit_mb=2048 -timeout=20 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$@" "$work/corpus" "$seeds" >"$work/fuzz.log" 2>&1
rc=$?
grep -v '^"' "$work/fuzz.log" | tail -n 200  # (without libFuzzer's dictionary lines)
for f in "$work"/artifacts/*; do
  [ -e "$f" ] || continue
  echo "reproducer $f ($(stat -c %s "$f") bytes), as hex:"
  od -A x -t x1z -v "$f" | head -n 256
  echo "reproduce: $bin $f"
done
exit "$rc"
