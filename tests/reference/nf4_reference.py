"""Independent NF4 reference for tests/reference/test_nf4_reference.cpp (torch, no
bitsandbytes: its 4-bit kernels need torch >= 2.4, which Debian's torch 1.13 is not; the
bit-for-bit check against bitsandbytes itself runs on the GPU host).

usage:
  nf4_reference.py codes OUT
      The code books from their definitions (shared/reference/peft.md §3.2-3.3):
      nf4 [16]      bitsandbytes' create_normal_map(offset=0.9677083, use_extra_value=True):
                    8 positive and 7 negative quantiles of N(0, 1) and 0, over the largest
      dynamic [256] create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)
  nf4_reference.py model IN DIR OUT
      IN holds a tiny model's dense tensors (Temper's names) and metadata "config"; writes
      DIR as a Hugging Face model directory whose seven projections of every block are
      stored as bitsandbytes 4-bit weights (NF4, blocksize 64, double quantization: the
      keys .absmax (uint8), .quant_map, .nested_absmax, .nested_quant_map and
      .quant_state.bitsandbytes__nf4), the rest dense, quantized here with torch; OUT holds
      each projection's dequantized values ("deq.<name>").
"""
import json
import math
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def normal_ppf(p):
    return math.sqrt(2.0) * torch.erfinv(2.0 * p - 1.0)


def nf4_code():
    offset = 0.9677083
    pos = normal_ppf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -normal_ppf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (values / values.max()).float()


def dynamic_map():
    data = []
    for i in range(7):  # exponent 10^(i-6), 2^i fraction values
        bounds = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float64)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += (10 ** (i - 6) * means).tolist() + (-(10 ** (i - 6)) * means).tolist()
    data += [0.0, 1.0]
    return torch.tensor(sorted(data), dtype=torch.float32)


def nearest(code, x):
    """Index of the nearest code value (the lower one on a tie)."""
    d = (x[:, None] - code[None, :]).abs()
    return torch.argmin(d, dim=1)  # argmin returns the first minimum: the lower index


def quantize(w):
    """bitsandbytes-style NF4 with double quantization of a tensor, as file entries."""
    code, dmap = nf4_code(), dynamic_map()
    flat = w.float().flatten()
    blocks = flat.view(-1, 64)
    absmax = blocks.abs().max(dim=1).values
    idx = nearest(code, (blocks / absmax[:, None]).flatten()).to(torch.uint8)
    packed = (idx[0::2] << 4) | idx[1::2]
    offset = absmax.mean()
    centered = absmax - offset
    groups = [centered[g:g + 256] for g in range(0, centered.numel(), 256)]
    nested = torch.stack([g.abs().max() for g in groups])
    qabs = torch.cat([nearest(dmap, g / n) for g, n in zip(groups, nested)]).to(torch.uint8)
    # Dequantization as bitsandbytes defines it.
    absmax_dq = dmap[qabs.long()] * nested.repeat_interleave(256)[: qabs.numel()] + offset
    deq = (code[idx.long()].view(-1, 64) * absmax_dq[:, None]).view(w.shape)
    state = {"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": list(w.shape),
             "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": offset.item()}
    return {"": packed.view(-1, 1), ".absmax": qabs, ".quant_map": code, ".nested_absmax": nested,
            ".nested_quant_map": dmap,
            ".quant_state.bitsandbytes__nf4": torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)}, deq


def run_model(inp, out_dir, outp):
    with safe_open(inp, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    files, deq = {}, {}
    for name, t in tensors.items():
        if name.split(".")[-2] in PROJECTIONS:
            entries, deq[f"deq.{name}"] = quantize(t)
            for suffix, v in entries.items():
                files[name + suffix] = v.contiguous()
        else:
            files[name] = t.contiguous()
    os.makedirs(out_dir, exist_ok=True)
    save_file(files, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads(meta["config"])
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                  "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file({k: v.contiguous() for k, v in deq.items()}, outp)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "codes":
        save_file({"nf4": nf4_code(), "dynamic": dynamic_map()}, sys.argv[2])
    elif mode == "model":
        run_model(*sys.argv[2:5])
    else:
        sys.exit(f"unknown mode {mode}")
