"""Hugging Face transformers' own model classes as the reference of the whole-model tests
(test_model_reference.cpp). Reads weights, a packed batch and Temper's config.json text
from a safetensors file; builds the class the config names (LlamaForCausalLM,
Qwen2ForCausalLM, MistralForCausalLM) with AutoConfig.for_model from that config, eager
attention, in float64; loads the weights by their (shared) Hugging Face names; writes
logits, loss, every parameter gradient and the parameters after torch.optim.AdamW steps.

Each packed segment (cu_seqlens) runs through the model as its own sequence with the
batch's positions (which must restart at 0), so transformers never sees packing and any
cross-document leak in Temper would show.

Notes on transformers 4.46.3:
- RoPE: LlamaRotaryEmbedding (also used by Qwen2 and Mistral) computes inv_freq and
  cos/sin in float32 even in a float64 model (`.float()` in its forward): relative errors
  of ~1e-7 in the angles at the short positions used here.
- Sliding window (Mistral, eager and sdpa attention): the mask hides key s from query t
  when s <= t - sliding_window, so a query sees t - s < sliding_window (itself and the
  window - 1 keys before it), which is Temper's rule. transformers' flash_attention_2 path
  passes window_size=(sliding_window, sliding_window) to flash-attn, which lets a query see
  t - s <= sliding_window, one key more: the implementations of transformers disagree by
  one; Temper follows the eager/sdpa mask (what this script runs).
- Qwen2Attention uses hidden_size // num_attention_heads as the head size (it ignores a
  config head_dim), so a Qwen2 config must have head_dim = hidden / heads.

usage: hf_model_reference.py model IN.safetensors OUT.safetensors
       hf_model_reference.py rope  IN.safetensors OUT.safetensors
"""
import json
import sys

import torch
import torch.nn.functional as F
import transformers
import transformers.modeling_rope_utils as rope_utils
from transformers import AutoConfig
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import safetensors_io  # noqa: E402


def hf_config(meta):
    cfg = json.loads(meta["config"])
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def build_model(config, tensors):
    arch = config.architectures[0]
    model = getattr(transformers, arch)._from_config(config, attn_implementation="eager",
                                                     torch_dtype=torch.float64)
    model = model.double().train(False)
    assert type(model).__name__ == arch, (type(model).__name__, arch)
    assert model.config._attn_implementation == "eager"
    state = {k: torch.from_numpy(v.astype("float64")) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, f"tensors transformers' {arch} does not have: {unexpected}"
    tied = ["lm_head.weight"] if config.tie_word_embeddings else []
    assert sorted(missing) == tied, f"{arch} tensors Temper did not give: {missing}"
    if config.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def model_loss(model, ids, targets, positions, cu):
    logits = []
    for d in range(len(cu) - 1):
        a, b = cu[d], cu[d + 1]
        assert positions[a:b].tolist() == list(range(b - a)), "positions must restart per segment"
        out = model(input_ids=ids[None, a:b], position_ids=positions[None, a:b], use_cache=False)
        logits.append(out.logits[0])
    logits = torch.cat(logits)
    n_targets = int((targets != -100).sum())
    loss = F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum") / n_targets
    return logits, loss


def is_no_decay(name):
    return name.endswith("norm.weight") or name.endswith(".bias")


def run_model(inp, meta, out_path):
    ids = torch.from_numpy(inp.pop("input.ids")).long()
    targets = torch.from_numpy(inp.pop("input.targets")).long()
    positions = torch.from_numpy(inp.pop("input.positions")).long()
    cu = [int(c) for c in inp.pop("input.cu_seqlens")]
    model = build_model(hf_config(meta), inp)
    params = dict(model.named_parameters())  # tied weights appear once, by the embedding's name
    logits, loss = model_loss(model, ids, targets, positions, cu)
    loss.backward()
    out = {"logits": logits.detach().numpy(), "loss": loss.detach().reshape(1).numpy()}
    for k, v in params.items():
        out["grad." + k] = v.grad.numpy().copy()

    # AdamW steps on the same batch (decay off for norms and biases, as Temper defaults).
    lr, b1, b2 = float(meta["lr"]), float(meta["beta1"]), float(meta["beta2"])
    eps, wd, steps = float(meta["eps"]), float(meta["weight_decay"]), int(meta["steps"])
    max_norm = float(meta["max_grad_norm"])
    groups = [
        {"params": [v for k, v in params.items() if not is_no_decay(k)], "weight_decay": wd},
        {"params": [v for k, v in params.items() if is_no_decay(k)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        _, l = model_loss(model, ids, targets, positions, cu)
        l.backward()
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)
        opt.step()
        losses.append(l.item())
    out["adamw.losses"] = torch.tensor(losses).numpy()
    for k, v in params.items():
        out["adamw." + k] = v.detach().numpy()
    safetensors_io.write(out_path, out)


def inverse_frequencies_f64(config):
    """transformers' RoPE init function for the config's rope_type, run in float64.

    transformers computes the plain RoPE inverse frequencies in float32; they are recomputed
    here in float64 with the same formula (checked against transformers' float32 values), and
    the rope-type function (e.g. Llama 3 scaling) runs on them unchanged, in float64."""
    original = rope_utils._compute_default_rope_parameters

    def default_f64(config=None, device=None, seq_len=None, **kwargs):
        inv32, factor = original(config, device, seq_len, **kwargs)
        dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        inv64 = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).double() / dim))
        assert torch.allclose(inv64.float(), inv32, rtol=1e-6, atol=0), "float64 RoPE base differs"
        return inv64, factor

    rope_type = (config.rope_scaling or {}).get("rope_type", "default")
    rope_utils._compute_default_rope_parameters = default_f64
    try:
        init = default_f64 if rope_type == "default" else rope_utils.ROPE_INIT_FUNCTIONS[rope_type]
        inv, attention_factor = init(config, None)
    finally:
        rope_utils._compute_default_rope_parameters = original
    assert inv.dtype == torch.float64
    return inv, attention_factor


def run_rope(inp, meta, out_path):
    config = hf_config(meta)
    x = torch.from_numpy(inp["x"].astype("float64"))  # [T, H, D]
    pos = torch.from_numpy(inp["positions"]).long()
    inv, factor = inverse_frequencies_f64(config)
    ang = pos.double()[:, None] * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1)[None]  # [1, T, D], as LlamaRotaryEmbedding builds it
    q = x.permute(1, 0, 2)[None]  # [1, H, T, D]
    y, _ = apply_rotary_pos_emb(q, q, emb.cos() * factor, emb.sin() * factor)
    safetensors_io.write(out_path, {"y": y[0].permute(1, 0, 2).contiguous().numpy(),
                                    "inv_freq": inv.numpy()})


if __name__ == "__main__":
    mode, inp_path, out_path = sys.argv[1:4]
    tensors, meta = safetensors_io.read(inp_path)
    {"model": run_model, "rope": run_rope}[mode](tensors, meta, out_path)
    print("reference ok:", mode, transformers.__version__)
