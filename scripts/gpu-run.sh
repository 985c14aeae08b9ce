#!/usr/bin/env bash
# The GPU check, sized for one 15-minute device window (docs/perf.md, "The GPU check").
# Runs on the GPU host from the bundle that scripts/gpu-bundle.sh made here: nothing is
# built or installed there. Every step runs under a timeout and the whole run ends within
# 8 minutes (DEADLINE_S); results go to $OUT (default out/gpu), seven files:
#   steps.tsv      each step: name, status, seconds, note
#   nvidia-smi.txt the GPU and driver
#   tests.log      the libraries each binary resolves; the GPU tests one suite at a time;
#                  then the whole training step on CUDA against the CPU (CudaTrainStep)
#   sanitizer.log  compute-sanitizer memcheck on the small-shape tests, racecheck on the
#                  attention kernels (small shapes)
#   bench.log      temper bench on the Llama 3.2 1B shape, bf16, 4 × 2048 tokens: full,
#                  frozen base (only the norms train), LoRA (r 16, all linear layers), each
#                  with --profile; then the same model and batch in PyTorch
#                  (scripts/gpu-bench-torch.py: transformers + SDPA, bf16 autocast, AdamW, PEFT)
#   bench.jsonl    one JSON line per bench run, both sides
#   summary.txt    the table printed last (scripts/gpu-summary.py)
#
# usage: [OUT=DIR] gpu-run.sh [--dry-run] [--bundle DIR]
#   On the host: run with the bundle carried, e.g. `OUT=$OUT bash bundle/scripts/gpu-run.sh`.
#   --dry-run   here, without a GPU: the same steps against the same bundle, with what needs
#               a GPU replaced by a check that it would start (the tests skip, compute-
#               sanitizer's filters must select tests, bench and PyTorch run a tiny model on
#               the CPU), so a broken path or a missing library shows up before the window.
#   --bundle DIR  the bundle (default: the one this script sits in, else bundle/)
# Environment: NVIDIA_LIB_DIRS (colon list) overrides where cuBLAS and NCCL are looked for;
# TORCH_PYTHON the Python with torch, transformers and peft (default python3).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DRY=0 BUNDLE_DIR=""
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1; shift ;;
    --bundle) BUNDLE_DIR=$2; shift 2 ;;
    *) echo "gpu-run: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
if [ -z "$BUNDLE_DIR" ]; then
  if [ -x "$here/../bin/temper" ]; then BUNDLE_DIR=$here/..; else BUNDLE_DIR=$here/../bundle; fi
fi
[ -f "$BUNDLE_DIR/env.sh" ] || { echo "gpu-run: no bundle at $BUNDLE_DIR (make one: scripts/gpu-bundle.sh)" >&2; exit 1; }
# Large files travel compressed: run from an unpacked copy (about a second).
if [ -n "$(find "$BUNDLE_DIR/" -name '*.xz' -print -quit)" ]; then
  t0=$SECONDS
  BUNDLE_DIR=$(bash "$BUNDLE_DIR/unpack.sh" "${BUNDLE_RUN_DIR:-${TMPDIR:-/tmp}/temper-bundle}") || exit 1
  echo "gpu-run: bundle unpacked into $BUNDLE_DIR in $((SECONDS - t0)) s"
fi
TORCH_PYTHON=${TORCH_PYTHON:-python3}
# The host's own environment, for its Python (the bundle's libraries must not shadow its own).
HOST_ENV=(env "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" "PATH=$PATH")
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/{steps.tsv,nvidia-smi.txt,tests.log,sanitizer.log,bench.log,bench.jsonl,summary.txt}
DEADLINE_S=${DEADLINE_S:-470}  # 7 min 50 s: the window's 8 minutes less the summary
START=0  # SECONDS counts from the script's start: the unpacking counts too

# ---- the host's CUDA libraries ----------------------------------------------------------
# cuBLAS/cuBLASLt and NCCL are not carried: the host has them in its Python environment
# (site-packages/nvidia/*/lib), or in a CUDA toolkit.
nvidia_lib_dirs() {
  if [ -n "${NVIDIA_LIB_DIRS:-}" ]; then echo "$NVIDIA_LIB_DIRS"; return; fi
  local dirs=() site d
  while read -r site; do
    for d in "$site"/nvidia/*/lib; do [ -d "$d" ] && dirs+=("$d"); done
  done < <("${HOST_ENV[@]}" "$TORCH_PYTHON" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))' 2>/dev/null | sort -u)
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [ -d "$d" ] && dirs+=("$d"); done
  local IFS=:; echo "${dirs[*]}"
}
NVIDIA_DIRS=$(nvidia_lib_dirs)
# shellcheck source=/dev/null
source "$BUNDLE_DIR/env.sh"  # sets BUNDLE (absolute), LD_LIBRARY_PATH, PATH, OPAL_*, PMIX_*
B=$BUNDLE TESTS=$BUNDLE/bin/temper_gpu_tests
[ -n "$NVIDIA_DIRS" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$NVIDIA_DIRS
# A host C++ runtime older than the build's: the bundle's copy, for temper's processes.
if ldd "$B/bin/temper" 2>&1 | grep -q "version .\(GLIBCXX\|CXXABI\|GCC\)_[0-9.]*' not found"; then
  export LD_LIBRARY_PATH=$B/lib/cxx:$LD_LIBRARY_PATH
  echo "gpu-run: the host's libstdc++ is older than the build's: using the bundle's (lib/cxx)"
fi

# ---- steps ------------------------------------------------------------------------------
# record NAME STATUS SECONDS NOTE: one line of steps.tsv, echoed.
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$OUT/steps.tsv"
  printf '== %-24s %-10s %4s s  %s\n' "$1" "$2" "$3" "${4:-}"
}
# run_step NAME CAP_S LOG CMD...: runs CMD under a timeout (the cap, or less when the
# deadline is nearer), appending its output to $OUT/LOG; sets STEP_RC and STEP_OUT (a
# copy of this step's output) for the caller's verdict. Returns CMD's status.
STEP_RC=0 STEP_OUT=$(mktemp)
trap 'rm -f "$STEP_OUT"' EXIT
run_step() {
  local name=$1 cap=$2 log=$3; shift 3
  local left=$((DEADLINE_S - (SECONDS - START)))
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -lt 5 ]; then
    STEP_RC=125; : > "$STEP_OUT"; return 125
  fi
  printf '\n==== %s (timeout %s s): %s\n' "$name" "$cap" "$*" >> "$OUT/$log"
  timeout -k 5 "$cap" "$@" > "$STEP_OUT" 2>&1
  STEP_RC=$?
  cat "$STEP_OUT" >> "$OUT/$log"
  return $STEP_RC
}
# verdict NAME T0 [NOTE]: ok / FAIL (rc) / TIMEOUT / skipped (no time) from STEP_RC; a
# failure's note ends with the step's last line of output (its error, usually).
verdict() {
  local s note=${3:-} last
  case $STEP_RC in
    0) s=ok ;; 124|137) s=TIMEOUT ;; 125) s=skipped; note="no time left" ;;
    *) s="FAIL($STEP_RC)" ;;
  esac
  if [ "$s" != ok ] && [ "$STEP_RC" != 125 ]; then
    last=$(grep -v '^[[:space:]]*$' "$STEP_OUT" | tail -1 | cut -c1-160)
    [ -n "$last" ] && note="${note:+$note | }$last"
  fi
  record "$1" "$s" "$((SECONDS - $2))" "$note"
}
# A gtest run's verdict: its counts (then NOTE), and skipped tests are a failure on a GPU
# host (they mean no GPU was visible) but expected in a dry run.
gtest_verdict() {  # NAME T0 [NOTE]
  local name=$1 t0=$2 passed skipped failed note
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$STEP_OUT" | tail -1)
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$STEP_OUT" | tail -1)
  failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$STEP_OUT" | tail -1)
  note="${passed:-0} passed, ${skipped:-0} skipped, ${failed:-0} failed${3:+, $3}"
  if [ "$STEP_RC" = 0 ] && [ -z "$passed$skipped" ]; then STEP_RC=1; note="no test ran ($note)"; fi
  if [ "$STEP_RC" = 0 ] && [ "${skipped:-0}" != 0 ] && [ $DRY = 0 ]; then STEP_RC=1; note="$note: no GPU visible?"; fi
  verdict "$name" "$t0" "$note"
}

# A dry run checks paths, not speed: one thread, so a busy machine cannot stall OpenMP.
[ $DRY = 1 ] && export OMP_NUM_THREADS=1
echo "gpu-run: bundle $B ($(head -1 "$B/BUNDLE.txt")), results in $OUT$([ $DRY = 1 ] && echo ', DRY RUN')"

# 1. nvidia-smi.
t0=$SECONDS
if command -v nvidia-smi >/dev/null; then
  run_step nvidia-smi 15 nvidia-smi.txt nvidia-smi
  verdict nvidia-smi "$t0" "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
else
  record nvidia-smi "$([ $DRY = 1 ] && echo skipped || echo FAIL)" 0 "no nvidia-smi"
fi

# 2. The libraries: every one resolves, and to the bundle or to what the host provides.
t0=$SECONDS
library_report() {  # one line per (binary, library) that is not the bundle's own
  local o
  for o in "$B"/bin/* "$B"/openmpi/bin/orterun "$B"/openmpi/lib/plugins/*.so; do
    ldd "$o" 2>&1 | awk -v o="${o#"$B"/}" -v b="$B/" '
      $2 == "=>" && $3 == "not" { print "MISSING " $1 " (" o ")"; next }
      /version .* not found/ { print "MISSING " $0; next }
      $2 == "=>" && index($3, b) != 1 { print $1 " => " $3 }'
  done | sort -u | awk '
    /^MISSING/ { print; next }
    $1 ~ /^(ld-linux|libc\.so|libm\.so|libmvec|libpthread|libdl\.so|librt\.so|libresolv|libutil|libanl|libnss_)/ { next }
    $1 ~ /^(libstdc\+\+|libgcc_s|libcuda\.so|libnvidia-|libcublas|libnccl|libcudart|libcudnn)/ { print "host " $0; next }
    { print "OUTSIDE THE BUNDLE " $0 }'
}
{ echo "==== libraries (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"; library_report; } >> "$OUT/tests.log"
bad=$(grep -c '^MISSING\|^OUTSIDE' "$OUT/tests.log")
STEP_RC=0; [ "$bad" = 0 ] || STEP_RC=1
verdict libraries "$t0" "$bad missing or outside the bundle; host: $(grep '^host ' "$OUT/tests.log" | awk '{print $2}' | tr '\n' ' ')"

# 3. The GPU tests, one suite at a time (a crash or hang costs one suite), sharing 110 s;
#    the whole training step (CudaTrainStep) after them.
mapfile -t suites < <("$TESTS" --gtest_list_tests 2>/dev/null | sed -n 's/^\([A-Za-z0-9_]*\)\.$/\1/p' | grep -v '^CudaTrainStep$')
[ ${#suites[@]} -gt 0 ] || record gpu-tests "FAIL" 0 "temper_gpu_tests lists no suites (does it start? see tests.log)"
tests_end=$((SECONDS + 110))
for s in "${suites[@]}"; do
  t0=$SECONDS cap=$((tests_end - SECONDS)); [ $cap -gt 60 ] && cap=60; [ $cap -lt 0 ] && cap=0
  run_step "test:$s" "$cap" tests.log "$TESTS" --gtest_filter="$s.*" --gtest_color=no
  gtest_verdict "test:$s" "$t0"
done
t0=$SECONDS
run_step train-step 45 tests.log "$TESTS" --gtest_filter='CudaTrainStep.*' --gtest_color=no
gtest_verdict train-step "$t0"

# 4. compute-sanitizer. memcheck: every test but the large or repeated shapes and the
#    tests that provoke errors on purpose; racecheck: the attention kernels, small shapes.
MEMCHECK_FILTER='*-CudaAttentionTest.LongDocumentMatchesCpu:*BitReproducible*:*BitExact*:*Deterministic*:*Errors*:*Reject*:CudaBackendDiscovery.*:CudaGenerate.*'
RACECHECK_FILTER='CudaAttentionTest.GqaMatchesCpu:CudaAttentionTest.GenericHeadDimsMatchCpu'
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in memcheck racecheck; do
  filter=$MEMCHECK_FILTER cap=55
  [ $tool = racecheck ] && filter=$RACECHECK_FILTER cap=30
  t0=$SECONDS
  n=$("$TESTS" --gtest_list_tests --gtest_filter="$filter" 2>/dev/null | grep -c '^  ')
  if [ "$n" = 0 ]; then record "$tool" FAIL 0 "the filter selects no test"; continue; fi
  if [ -z "$SANITIZER" ]; then
    record "$tool" "$([ $DRY = 1 ] && echo skipped || echo FAIL)" 0 "no compute-sanitizer ($n tests selected)"
  elif [ $DRY = 1 ]; then
    run_step "$tool" 20 sanitizer.log "$SANITIZER" --version
    verdict "$tool" "$t0" "dry run: $n tests selected, $(grep -m1 -o 'Version.*' "$STEP_OUT")"
  else
    run_step "$tool" "$cap" sanitizer.log "$SANITIZER" --tool "$tool" --error-exitcode 86 \
      --print-limit 30 "$TESTS" --gtest_filter="$filter" --gtest_color=no
    gtest_verdict "$tool" "$t0" "$(grep -m1 -o '[A-Z]* SUMMARY:.*' "$STEP_OUT")"
  fi
done

# 5. temper bench: the Llama 3.2 1B shape, bf16, 4 × 2048 tokens; full, frozen base, LoRA.
RECIPE=$B/configs/recipes/bench-llama-1b.yaml
SHAPE=() STEPS=(--steps 5 --warmup 2)
if [ $DRY = 1 ]; then  # the same recipe, flags and modes on a tiny model on the CPU
  SHAPE=(backend=cpu model.preset=tiny model.dtype=f32 train.micro_batch_size=2 train.seq_len=64 train.loss_chunk=64)
  STEPS=(--steps 1 --warmup 0)
fi
declare -A MODE_ARGS=(
  [full]="--peft full"
  [partial]="--peft partial peft.trainable=[norm]"
  [lora]="--peft lora peft.r=16 peft.alpha=32 peft.target_modules=all-linear"
)
declare -A MODE_CAP=([full]=50 [partial]=35 [lora]=35)
for mode in full partial lora; do
  t0=$SECONDS
  # shellcheck disable=SC2086  # MODE_ARGS words are meant to split
  run_step "bench:$mode" "${MODE_CAP[$mode]}" bench.log temper bench "$RECIPE" "${SHAPE[@]}" \
    ${MODE_ARGS[$mode]} "${STEPS[@]}" --profile --json "$OUT/bench.jsonl"
  verdict "bench:$mode" "$t0" "$(grep -m1 -o '[0-9]* tokens/s.*MFU [^|]*' "$STEP_OUT")"
done

# 6. The same model and batch in PyTorch: transformers + SDPA, bf16 autocast, AdamW, PEFT.
t0=$SECONDS
TORCH_ARGS=(--model "$B/configs/models/llama-3.2-1b.json" --rows 4 --seq 2048 --steps 5 --warmup 2)
[ $DRY = 1 ] && TORCH_ARGS=(--model "$B/configs/models/tiny.json" --rows 2 --seq 64 --steps 1 --warmup 0 --device cpu --dtype f32)
if [ $DRY = 1 ] && ! "${HOST_ENV[@]}" "$TORCH_PYTHON" -c 'import torch, transformers, peft' 2>/dev/null; then
  record torch skipped 0 "dry run: no torch + transformers + peft in $TORCH_PYTHON (set TORCH_PYTHON)"
else
  run_step torch 85 bench.log "${HOST_ENV[@]}" "$TORCH_PYTHON" "$B/scripts/gpu-bench-torch.py" "${TORCH_ARGS[@]}" \
    --modes full,partial,lora --json "$OUT/bench.jsonl"
  verdict torch "$t0" "$(grep -m1 -o 'torch [0-9][^,]*, transformers [^,]*, peft [^ ,]*' "$STEP_OUT")"
fi

# 7. The summary, last.
echo
"${HOST_ENV[@]}" python3 "$B/scripts/gpu-summary.py" "$OUT" $([ $DRY = 1 ] && echo --dry-run) | tee "$OUT/summary.txt"
! grep -q $'\t\(FAIL\|TIMEOUT\)' "$OUT/steps.tsv"
