#!/usr/bin/env bash
# Only for a GPU host WITHOUT a time limit (a cluster node of your own): builds there and
# runs everything, which takes far longer than the 15-minute window of our GPU test host.
# For that window use the GPU check instead: scripts/gpu-bundle.sh here, then
# scripts/gpu-run.sh there (docs/perf.md, "The GPU check").
#
# Build with the CUDA backend, the GPU tests, the CPU suite, compute-sanitizer memcheck and
# racecheck on the whole GPU suite, and `temper bench --profile` for full fine-tuning, a
# frozen base and LoRA. Logs and bench JSON go to $OUT (default out/gpu); a summary table
# is printed last.
#
# On a host without Debian packages, stage them first on a machine that has them:
#   bash ../shared/gpu-host/stage-debs.sh .deps && cp ../shared/gpu-host/*.sh .deps/
# and carry .deps; this script unpacks them into /opt/deps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
BUILD=${BUILD:-build-gpu}
declare -A status

step() {  # step NAME LOGFILE COMMAND...
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  "$@" > "$OUT/$log" 2>&1
  local rc=$?
  status[$name]="rc=$rc $((SECONDS - t0))s $log"
  echo "== $name: rc=$rc ($((SECONDS - t0)) s), log $OUT/$log"
  return $rc
}

if [ -d .deps ] && ls .deps/*.deb >/dev/null 2>&1; then
  eval "$(bash .deps/unpack.sh .deps /opt/deps)"
fi
# NVIDIA libraries that live in a Python environment (cuBLAS, NCCL) on some hosts.
for lib in cublas nccl cudnn; do
  d=$(dirname "$(find / -path /proc -prune -o -name "lib${lib}.so*" -print 2>/dev/null | head -1)" 2>/dev/null)
  [ -n "$d" ] && [ "$d" != "." ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

step configure configure.log cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DTEMPER_PYTHON="$(command -v python3)" -DTEMPER_CUDA=ON
step build build.log cmake --build "$BUILD" -j "$(nproc)" || { cat "$OUT/build.log" | tail -40; exit 1; }
step gpu-tests ctest-gpu.log ctest --test-dir "$BUILD" -L gpu --output-on-failure
step cpu-tests ctest-cpu.log ctest --test-dir "$BUILD" -LE gpu --output-on-failure -j 8
if command -v compute-sanitizer >/dev/null; then
  step memcheck memcheck.log compute-sanitizer --tool memcheck --error-exitcode 1 "$BUILD/bin/temper_gpu_tests"
  step racecheck racecheck.log compute-sanitizer --tool racecheck --error-exitcode 1 "$BUILD/bin/temper_gpu_tests"
fi
declare -A mode_args=([full]="--peft full" [frozen]="--peft partial peft.trainable=[norm]"
  [lora]="--peft lora peft.r=16 peft.alpha=32 peft.target_modules=all-linear")
for mode in full frozen lora; do
  # shellcheck disable=SC2086  # the mode's words are meant to split
  step "bench-$mode" "bench-$mode.log" "$BUILD/bin/temper" bench configs/recipes/bench-llama-1b.yaml \
    --steps 10 --warmup 3 --profile --json "$OUT/bench.jsonl" ${mode_args[$mode]}
done

echo
echo "summary ($(git rev-parse --short HEAD 2>/dev/null), $(date -u +%F))"
for k in configure build gpu-tests cpu-tests memcheck racecheck bench-full bench-frozen bench-lora; do
  [ -n "${status[$k]:-}" ] && printf '  %-12s %s\n' "$k" "${status[$k]}"
done
[ -f "$OUT/bench.jsonl" ] && cat "$OUT/bench.jsonl"
