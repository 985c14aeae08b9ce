#!/usr/bin/env bash
# Benchmark of `temper prepare` on a large input (docs/perf.md, "Data preparation"): its
# peak memory must stay under a fixed bound whatever the input's size, at the throughput
# of the in-memory version (about 1 M tokens/s per core with SmolLM2's tokenizer).
#  1. scripts/make-chat-data.py writes one part of chat JSONL (100 MB); copies of it make
#     GB gigabytes of parts (the content repeats; tokenizing does the same work);
#  2. `temper prepare 'WORK/part-*.jsonl' --shard-size 100M` (a glob over every part,
#     SmolLM2's real tokenizer and chat template), under /usr/bin/time: wall time, peak
#     RSS, and temper's own tokens/s;
#  3. the same on one part with OMP_NUM_THREADS=1: tokens/s on one core.
# Fails when the peak RSS of step 2 passes BOUND_MB. WORK is deleted at the end.
# usage: scripts/bench-prepare.sh BUILD_DIR [GB=2] [WORK=BUILD_DIR/bench-prepare] [BOUND_MB=500]
set -euo pipefail
build=$(cd "${1:?usage: bench-prepare.sh BUILD_DIR [GB] [WORK] [BOUND_MB]}" && pwd)
gb=${2:-2}
work=${3:-$build/bench-prepare}
bound_mb=${4:-500}
root=$(cd "$(dirname "$0")/.." && pwd)
temper=$build/bin/temper
gguf=$(bash "$root/scripts/smollm2-gguf.sh" "$build")
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

python3 "$root/scripts/make-chat-data.py" "$work/part-000.jsonl" --n 650000 --seed 7 >/dev/null
part_bytes=$(stat -c %s "$work/part-000.jsonl")
parts=$(( (gb * 1024 * 1024 * 1024 + part_bytes - 1) / part_bytes ))
for i in $(seq 1 $((parts - 1))); do cp "$work/part-000.jsonl" "$work/$(printf 'part-%03d.jsonl' "$i")"; done
total=$(cat "$work"/part-*.jsonl | wc -c)
echo "== input: $parts parts of $((part_bytes / 1024 / 1024)) MiB, $((total / 1024 / 1024)) MiB in all; model $gguf"

measure() {  # $1: label; then the command. Prints temper's output and time's figures.
  local label=$1; shift
  /usr/bin/time -f "time: %e s wall, %M KiB peak RSS" "$@" > "$work/$label.log" 2>&1 || {
    cat "$work/$label.log"; echo "bench-prepare: $label failed" >&2; exit 1; }
  grep -E "documents|shards|throughput|time:" "$work/$label.log"
}
echo "== all parts, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
measure all "$temper" prepare "$work/part-*.jsonl" --model "$gguf" --shard-size 100M --out "$work/all.h5"
rss_kib=$(sed -n 's/.*, \([0-9]*\) KiB peak RSS/\1/p' "$work/all.log")
echo "== one part on one core (OMP_NUM_THREADS=1), load average $(cut -d' ' -f1-3 /proc/loadavg)"
measure one env OMP_NUM_THREADS=1 "$temper" prepare "$work/part-000.jsonl" --model "$gguf" --out "$work/one.h5"
echo "== disk: $(du -sh "$work" | cut -f1) in $work"
if (( rss_kib > bound_mb * 1024 )); then
  echo "bench-prepare: peak RSS $((rss_kib / 1024)) MiB is over the bound of $bound_mb MiB" >&2
  exit 1
fi
echo "bench-prepare: peak RSS $((rss_kib / 1024)) MiB for $((total / 1024 / 1024)) MiB of JSONL (bound $bound_mb MiB): ok"
