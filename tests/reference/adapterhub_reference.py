"""AdapterHub `adapters` (1.0.1, pinned) on transformers' own Llama, used live by
tests/reference/test_adapterhub_reference.cpp: the independent implementation our
bottleneck adapters (peft.method: adapter) are checked against.

Temper's adapter is AdapterHub's BnConfig with the Houlsby block's settings (swish, the
projection's output as the adapter's input, the residual added after) after attention
(mh_adapter) unless peft.adapter_placement is pfeiffer, and after the MLP (output_adapter).

usage:
  adapterhub_reference.py grad IN OUT
      IN: the model's parameters by Temper's names (base and adapters), metadata "config"
      (config.json), "peft" (Temper's spec: reduction_factor, mlp_only) and one packed
      batch batch.0.{ids,targets,positions,cu_seqlens}; float64, each document alone.
      OUT: logits, loss and grad.<name> of every adapter parameter.
  adapterhub_reference.py load BASE_DIR ADAPTER_DIR IN OUT
      model.load_adapter on an adapter directory Temper wrote: OUT logits of IN's batch.
  adapterhub_reference.py save BASE_DIR ADAPTER_DIR IN OUT
      add_adapter with IN's "peft", weights drawn at random, save_adapter to ADAPTER_DIR
      (safetensors): OUT logits of IN's batch, for Temper to reproduce.
"""
import json
import sys

import torch
import torch.nn.functional as F

import adapters
import transformers
from adapters import BnConfig
from safetensors import safe_open
from safetensors.torch import save_file

NAME = "temper"


def read(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def bn_config(spec):
    return BnConfig(mh_adapter=not spec["mlp_only"], output_adapter=True,
                    reduction_factor=spec["reduction_factor"], non_linearity="swish",
                    original_ln_before=False, original_ln_after=True, residual_before_ln=True)


def ours(name):
    """AdapterHub's parameter name -> Temper's (the adapter's name taken out)."""
    return name.replace(f".adapters.{NAME}.", ".")


def with_adapter(model, spec):
    adapters.init(model)
    model.add_adapter(NAME, config=bn_config(spec))
    model.train_adapter(NAME)  # freezes the base, activates the adapter
    return model


def batch0(tensors):
    return {f: tensors[f"batch.0.{f}"].long() for f in ("ids", "targets", "positions", "cu_seqlens")}


def packed_logits(model, batch):
    cu = batch["cu_seqlens"].tolist()
    parts = [model(input_ids=batch["ids"][a:b][None], position_ids=batch["positions"][a:b][None]).logits[0]
             for a, b in zip(cu[:-1], cu[1:])]
    return torch.cat(parts)


def run_grad(inp, outp):
    tensors, meta = read(inp)
    cfg, spec = json.loads(meta["config"]), json.loads(meta["peft"])
    config = transformers.AutoConfig.for_model(**cfg)
    config._attn_implementation = "eager"
    model = with_adapter(transformers.AutoModelForCausalLM.from_config(config), spec).double()
    params = {ours(n): p for n, p in model.named_parameters() if p.requires_grad}
    theirs_all = {ours(n) for n, _ in model.named_parameters()}
    mine = {k for k in tensors if not k.startswith("batch.")}
    if set(params) != {k for k in mine if "_adapters." in k}:
        raise SystemExit(f"AdapterHub trains {sorted(params)}, Temper's adapters differ")
    tied = model.config.tie_word_embeddings
    missing = theirs_all - mine - ({"lm_head.weight"} if tied else set())
    if missing or mine - theirs_all:
        raise SystemExit(f"parameters differ: missing {sorted(missing)}, extra {sorted(mine - theirs_all)}")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ours(n) in tensors:
                p.copy_(tensors[ours(n)].double().view_as(p))
    model.train()
    batch = batch0(tensors)
    logits = packed_logits(model, batch)
    n = int((batch["targets"] != -100).sum())
    loss = F.cross_entropy(logits, batch["targets"], ignore_index=-100, reduction="sum") / n
    loss.backward()
    out = {"logits": logits.detach().float(), "loss": loss.detach().float().reshape(1)}
    for name, p in params.items():
        out[f"grad.{name}"] = p.grad.float()
    save_file({k: v.contiguous() for k, v in out.items()}, outp)


def pretrained(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32,
                                                             attn_implementation="eager")


def logits_of(model, inp):
    tensors, _ = read(inp)
    model.eval()
    with torch.no_grad():
        return packed_logits(model, batch0(tensors)).float()


def run_load(base_dir, adapter_dir, inp, outp):
    model = pretrained(base_dir)
    adapters.init(model)
    name = model.load_adapter(adapter_dir, use_safetensors=True)
    model.set_active_adapters(name)
    save_file({"logits": logits_of(model, inp)}, outp)


def run_save(base_dir, adapter_dir, inp, outp):
    _, meta = read(inp)
    model = with_adapter(pretrained(base_dir), json.loads(meta["peft"]))
    torch.manual_seed(1)
    with torch.no_grad():  # an adapter that changes the model (up != 0)
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.2)
    model.save_adapter(adapter_dir, NAME, use_safetensors=True)
    save_file({"logits": logits_of(model, inp)}, outp)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"grad": run_grad, "load": run_load, "save": run_save}[mode](*args)
