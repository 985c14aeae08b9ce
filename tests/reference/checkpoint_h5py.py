"""Reads a Temper checkpoint with h5py alone, as a user would, for
tests/reference/test_checkpoint_reference.cpp.

Every tensor dataset (/model/<name>, /optim/<name>/{master,m,v}) is read through HDF5's
own float conversion to f32 (ds.astype("<f4"), exact for the bf16 and f16 types) and
written as F32 to OUT.safetensors under its path in the file. Prints JSON with what h5py
shows by default (numpy dtype per dataset), the `dtype` attributes and the /meta
attributes.

usage: checkpoint_h5py.py CHECKPOINT.h5 OUT.safetensors
"""
import json
import sys

import h5py
import numpy as np
from safetensors.numpy import save_file


def main(path, out):
    tensors, default_dtypes, dtype_attrs = {}, {}, {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset) or not (name.startswith("model/") or name.startswith("optim/")):
                return
            tensors[name] = np.ascontiguousarray(obj.astype("<f4")[...])
            default_dtypes[name] = obj.dtype.str
            dtype_attrs[name] = obj.attrs["dtype"].decode() if isinstance(obj.attrs["dtype"], bytes) else str(obj.attrs["dtype"])
        f.visititems(visit)
        meta = {}
        for k, v in f["meta"].attrs.items():
            meta[k] = v.decode() if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v)
    save_file(tensors, out)
    print(json.dumps({"default_dtypes": default_dtypes, "dtype_attrs": dtype_attrs, "meta": meta}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
