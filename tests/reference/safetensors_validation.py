"""What the safetensors package (the reference reader) accepts, for
tests/reference/test_safetensors_validation.cpp.

usage: safetensors_validation.py DIR
For every DIR/*.safetensors prints one JSON object: {file name: "ok" | "error: ..."},
"ok" when safetensors.deserialize parses the header and every tensor's slice.
"""
import json
import os
import sys

import safetensors

result = {}
for name in sorted(os.listdir(sys.argv[1])):
    if not name.endswith(".safetensors"):
        continue
    with open(os.path.join(sys.argv[1], name), "rb") as f:
        data = f.read()
    try:
        safetensors.deserialize(data)
        result[name] = "ok"
    except Exception as e:  # the reader's own error types
        result[name] = f"error: {e}"
print(json.dumps(result))
