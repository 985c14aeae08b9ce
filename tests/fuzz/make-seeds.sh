#!/usr/bin/env bash
# Regenerates the seed corpora under tests/fuzz/corpus/ (committed; run this only to
# change them): every seed is a valid file of its kind.
#   tests/fuzz/make-seeds.sh ASAN_BUILD_DIR REFERENCE_PYTHON
# Binary files our writers make come from temper_fuzz_make_seeds, those of the reference
# libraries (gguf, tokenizers, sentencepiece, peft) from make_seeds.py, and text seeds
# (chat templates, JSON Lines, run configs) from the repository's own files.
set -euo pipefail
build=$1 python=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
corpus=$here/corpus
rm -rf "$corpus"
mkdir -p "$corpus"/{chat_template,jsonl,run_config}
"$build/bin/temper_fuzz_make_seeds" "$corpus"
"$python" "$here/make_seeds.py" "$corpus"

# Chat templates: each reference Jinja file, '\0', then a conversation (fuzz_chat_template.cpp).
conversation=$'system\x1fBe brief.\x1euser\x1fHi there\x1eassistant\x1fHello! How can I help?\x1euser\x1fA joke?'
for f in "$root"/tests/reference/chat_templates/*.jinja; do
  { cat "$f"; printf '\0%s' "$conversation"; } > "$corpus/chat_template/$(basename "$f" .jinja)"
done
for i in 0 4 7 10; do  # by name: the first byte picks the template
  printf "\\x$(printf %02x $i)%s" "$conversation" > "$corpus/chat_template/named-$i"
done

# JSON Lines: the first byte picks the format (fuzz_jsonl.cpp: 0 text, 1 alpaca, 2 chat,
# 3 sharegpt, >= 128 guessed).
jsonl() { printf "\\x$1%s" "$3" > "$corpus/jsonl/$2"; }
jsonl 00 text '{"text": "Hello world.\nSecond line — naïve."}'
jsonl 01 alpaca '{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "system": "Be exact."}'
jsonl 02 chat '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}'
jsonl 03 sharegpt '{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}'
jsonl 80 guessed-chat '{"messages": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]}'
jsonl 81 guessed-alpaca '{"instruction": "Say hi", "output": "hi"}'

# Run configs: the bundled recipes, and one with overrides after '\0' (fuzz_run_config.cpp).
for f in "$root"/configs/recipes/*.yaml; do
  cp "$f" "$corpus/run_config/$(basename "$f" .yaml)"
done
{ cat "$root/configs/recipes/tiny.yaml"; printf '\0train.steps=7\noptim.lr=0.002\npeft.method=lora\npeft.r=4'; } \
  > "$corpus/run_config/tiny-overrides"
find "$corpus" -type f | sort | xargs ls -l | awk '{print $5, $9}'
