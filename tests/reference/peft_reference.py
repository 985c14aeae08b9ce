"""Hugging Face PEFT (0.13.2, pinned) on transformers' own model classes, used live by
tests/reference/test_peft_reference.cpp: the independent implementation our LoRA, rsLoRA,
DoRA and IA3 are checked against.

usage:
  peft_reference.py lora IN OUT
      IN: the model's parameters by Temper's names (base and adapter), metadata "config"
      (config.json), "peft" (Temper's spec: r, alpha, use_rslora, use_dora,
      target_modules, layers, modules_to_save), "train" (AdamW settings, steps) and packed
      batches batch.K.{ids,targets,positions,cu_seqlens}. The model runs in float64; each
      document of a batch is its own sequence (so packing in Temper is checked too).
      OUT: logits and loss of batch 0, grad.<name> of every trainable parameter, and
      train.losses / train.<name> after the AdamW steps (step k uses batch k mod n). With
      dropout, IN's mask.<module> tensors replace PEFT's dropout (Temper's masks).
  peft_reference.py load BASE_DIR ADAPTER_DIR IN OUT
      PeftModel.from_pretrained on an adapter Temper wrote: OUT logits of batch 0 (f32).
  peft_reference.py save BASE_DIR ADAPTER_DIR IN OUT
      get_peft_model with IN's "peft", adapter weights drawn at random, save_pretrained to
      ADAPTER_DIR: OUT logits of batch 0 (f32) for Temper to reproduce.
  peft_reference.py prompt IN OUT
      The same for the soft prompts (prompt tuning, P-tuning, prefix tuning with and
      without projection): PEFT's prompt encoder gets Temper's soft-prompt parameters; OUT
      logits and loss of batch 0 (the real tokens' rows) and grad.<name> of each of them.
      PEFT ignores position ids here: every document must start at position 0.
  peft_reference.py merged MERGED_DIR BASE_DIR ADAPTER_DIR IN OUT
      transformers on `temper merge`'s output and the unmerged PeftModel: OUT merged_logits
      and peft_logits of batch 0 (f32).
"""
import json
import sys

import torch
import torch.nn.functional as F

import transformers
from peft import (IA3Config, LoraConfig, PeftModel, PrefixTuningConfig, PromptEncoderConfig,
                  PromptTuningConfig, get_peft_model)
from safetensors import safe_open
from safetensors.torch import save_file


def read(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def write(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)


def hf_model_from_config(cfg, dtype):
    config = transformers.AutoConfig.for_model(**cfg)
    config._attn_implementation = "eager"
    return transformers.AutoModelForCausalLM.from_config(config).to(dtype)


def load_base(model, tensors):
    """Temper's base tensors into a transformers model; every tensor must be used."""
    sd = {k: v for k, v in tensors.items()
          if ".lora_" not in k and not k.endswith(".ia3_l")
          and not k.startswith(("batch.", "mask.", "prompt_", "prefix"))}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = model.config.tie_word_embeddings
    missing = [m for m in missing if not (tied and m == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"base weights do not fit the model: missing {missing}, unexpected {unexpected}")


def canonical(name):
    """A PeftModel parameter's name as Temper names it."""
    name = name.removeprefix("base_model.model.")
    name = name.replace(".default", "").replace("modules_to_save.", "")
    if name.endswith("lora_magnitude_vector.weight"):
        name = name.removesuffix(".weight")
    return name


class FixedMaskDropout(torch.nn.Module):
    """Dropout with Temper's mask [T, in] of the whole packed batch; `rows` is the slice of
    the document being run (set before each document's forward)."""
    rows = slice(0, 0)

    def __init__(self, mask, p):
        super().__init__()
        self.mask, self.p = mask, p

    def forward(self, x):
        return x * self.mask[FixedMaskDropout.rows].to(x.dtype) / (1.0 - self.p)


def use_masks(peft_model, tensors, p):
    """Replaces every LoRA dropout by the fixed mask Temper drew for that module."""
    n = 0
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_dropout") and "default" in module.lora_dropout:
            path = name.removeprefix("base_model.model.")
            module.lora_dropout["default"] = FixedMaskDropout(tensors[f"mask.{path}"], p)
            n += 1
    if n == 0:
        raise SystemExit("no LoRA dropout module found to replace")


def lora_config(spec, init=True):
    """PEFT's config for Temper's spec (LoRA, rsLoRA, DoRA, IA3 or a soft prompt)."""
    method, n, h = spec["method"], spec["num_virtual_tokens"], spec["encoder_hidden_size"] or None
    if method == "prompt_tuning":
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n)
    if method == "p_tuning":
        return PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, encoder_hidden_size=h,
                                   encoder_reparameterization_type="MLP")
    if method == "prefix_tuning":
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, encoder_hidden_size=h,
                                  prefix_projection=spec["prefix_projection"])
    if method == "ia3":
        targets = spec["ia3_target_modules"] or ["k_proj", "v_proj", "down_proj"]
        ff = spec["ia3_feedforward_modules"] or (["down_proj"] if not spec["ia3_target_modules"] else [])
        return IA3Config(target_modules=targets, feedforward_modules=ff,
                         modules_to_save=spec["modules_to_save"] or None, task_type="CAUSAL_LM")
    return LoraConfig(
        r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
        target_modules=spec["target_modules"] if spec["target_modules"] != ["all-linear"] else "all-linear",
        layers_to_transform=spec["layers"] or None,
        modules_to_save=spec["modules_to_save"] or None,
        use_rslora=spec["use_rslora"], use_dora=spec["use_dora"],
        init_lora_weights=init, bias="none", task_type="CAUSAL_LM")


def trainable(peft_model):
    return {canonical(n): p for n, p in peft_model.named_parameters() if p.requires_grad}


def batches(tensors):
    out, k = [], 0
    while f"batch.{k}.ids" in tensors:
        out.append({f: tensors[f"batch.{k}.{f}"].long() for f in ("ids", "targets", "positions", "cu_seqlens")})
        k += 1
    return out


def packed_logits(model, batch, virtual=0, positions=True):
    """Logits [T, V] of a packed batch, each document (cu_seqlens segment) run alone;
    `virtual` rows of virtual tokens before each document's are dropped."""
    cu = batch["cu_seqlens"].tolist()
    parts = []
    for a, b in zip(cu[:-1], cu[1:]):
        FixedMaskDropout.rows = slice(a, b)
        pos = batch["positions"][a:b][None]
        if not positions and not torch.equal(pos[0], torch.arange(b - a)):
            raise SystemExit(f"document [{a}, {b}) does not start at position 0 (PEFT drops position ids)")
        out = model(input_ids=batch["ids"][a:b][None], position_ids=pos if positions else None)
        parts.append(out.logits[0][virtual:])
    return torch.cat(parts)


def mean_loss(logits, batch):
    targets = batch["targets"]
    n = int((targets != -100).sum())
    return F.cross_entropy(logits.double(), targets, ignore_index=-100, reduction="sum") / n


def run_lora(inp, outp):
    tensors, meta = read(inp)
    cfg, spec, train = json.loads(meta["config"]), json.loads(meta["peft"]), json.loads(meta["train"])
    torch.manual_seed(0)
    model = hf_model_from_config(cfg, torch.float64)
    load_base(model, {k: v.double() for k, v in tensors.items()})
    pm = get_peft_model(model, lora_config(spec))
    params = trainable(pm)
    ours = {k for k in tensors if not k.startswith(("batch.", "mask."))}
    if not set(params) <= ours:
        raise SystemExit(f"PEFT trains parameters Temper does not have: {sorted(set(params) - ours)}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].double().view_as(p))
    if spec["method"] == "lora" and spec["dropout"] > 0:
        use_masks(pm, tensors, spec["dropout"])
    pm.train()
    data = batches(tensors)
    out = {}
    logits = packed_logits(pm, data[0])
    loss = mean_loss(logits, data[0])
    loss.backward()
    out["logits"] = logits.detach().float()
    out["loss"] = loss.detach().float().reshape(1)
    for name, p in params.items():
        out[f"grad.{name}"] = p.grad.detach().float()
    pm.zero_grad()

    # AdamW steps; norms and biases without decay, as Temper's default.
    decay = [p for n, p in params.items() if not (n.endswith("norm.weight") or n.endswith(".bias"))]
    no_decay = [p for n, p in params.items() if n.endswith("norm.weight") or n.endswith(".bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": train["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=train["lr"], betas=(train["beta1"], train["beta2"]), eps=train["eps"])
    losses = []
    for step in range(train["steps"]):
        batch = data[step % len(data)]
        opt.zero_grad()
        loss = mean_loss(packed_logits(pm, batch), batch)
        loss.backward()
        if train["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(list(params.values()), train["max_grad_norm"])
        opt.step()
        losses.append(loss.item())
    out["train.losses"] = torch.tensor(losses, dtype=torch.float32)
    for name, p in params.items():
        out[f"train.{name}"] = p.detach().float()
    write(outp, out)


def prompt_parameters(pm, spec, cfg):
    """Temper's soft-prompt parameter names -> (PEFT parameter, column slice or None)."""
    out = {}
    method = spec["method"]
    for name, p in pm.named_parameters():
        if not p.requires_grad:
            continue
        short = name.removeprefix("prompt_encoder.default.")
        if method == "prompt_tuning":
            out["prompt_embeddings"] = (p, None)
        elif method == "p_tuning":
            out["prompt_encoder." + short] = (p, None)
        elif spec["prefix_projection"]:
            out["prefix_encoder." + short] = (p, None)
        else:  # one table [N, L·2·kv_dim]: layer l's keys, then its values
            kv = cfg["num_key_value_heads"] * (cfg["hidden_size"] // cfg["num_attention_heads"])
            for layer in range(cfg["num_hidden_layers"]):
                for j, kind in enumerate(("key", "value")):
                    col = (2 * layer + j) * kv
                    out[f"prefix.layers.{layer}.{kind}"] = (p, slice(col, col + kv))
    return out


def run_prompt(inp, outp):
    tensors, meta = read(inp)
    cfg, spec = json.loads(meta["config"]), json.loads(meta["peft"])
    torch.set_default_dtype(torch.float64)  # PEFT makes the prompt encoder in the default dtype
    model = hf_model_from_config(cfg, torch.float64)
    load_base(model, {k: v.double() for k, v in tensors.items()})
    pm = get_peft_model(model, lora_config(spec))
    params = prompt_parameters(pm, spec, cfg)
    ours = {k for k in tensors if k.startswith(("prompt_", "prefix"))}
    if set(params) != ours:
        raise SystemExit(f"PEFT's soft prompt {sorted(params)} is not Temper's {sorted(ours)}")
    with torch.no_grad():
        for name, (p, cols) in params.items():
            (p if cols is None else p[:, cols]).copy_(tensors[name].double().view_as(p if cols is None else p[:, cols]))
    pm.train()
    batch = batches(tensors)[0]
    virtual = 0 if spec["method"] == "prefix_tuning" else spec["num_virtual_tokens"]
    logits = packed_logits(pm, batch, virtual, positions=False)
    loss = mean_loss(logits, batch)
    loss.backward()
    out = {"logits": logits.detach().float(), "loss": loss.detach().float().reshape(1)}
    for name, (p, cols) in params.items():
        out[f"grad.{name}"] = (p.grad if cols is None else p.grad[:, cols]).float()
    write(outp, out)


def f32_logits(model, inp):
    tensors, _ = read(inp)
    config = getattr(model, "active_peft_config", None)
    prompt = config is not None and config.is_prompt_learning
    virtual = config.num_virtual_tokens if prompt and config.peft_type != "PREFIX_TUNING" else 0
    with torch.no_grad():
        return packed_logits(model, batches(tensors)[0], virtual, positions=not prompt).float()


def pretrained(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32,
                                                             attn_implementation="eager")


def run_load(base_dir, adapter_dir, inp, outp):
    pm = PeftModel.from_pretrained(pretrained(base_dir), adapter_dir)
    write(outp, {"logits": f32_logits(pm, inp)})


def run_save(base_dir, adapter_dir, inp, outp):
    _, meta = read(inp)
    spec = json.loads(meta["peft"])
    torch.manual_seed(1)
    pm = get_peft_model(pretrained(base_dir), lora_config(spec))
    with torch.no_grad():  # an adapter that changes the model: B != 0, magnitudes moved
        for name, p in trainable(pm).items():
            if ".lora_" in name and "magnitude" not in name:
                p.normal_(0.0, 0.2)
            else:
                p.mul_(1.0 + 0.1 * torch.randn_like(p))
    pm.save_pretrained(adapter_dir)
    write(outp, {"logits": f32_logits(pm, inp)})


def run_merged(merged_dir, base_dir, adapter_dir, inp, outp):
    merged = f32_logits(pretrained(merged_dir), inp)
    unmerged = f32_logits(PeftModel.from_pretrained(pretrained(base_dir), adapter_dir), inp)
    write(outp, {"merged_logits": merged, "peft_logits": unmerged})


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"lora": run_lora, "prompt": run_prompt, "load": run_load, "save": run_save, "merged": run_merged}[mode](*args)
