"""Independent PyTorch (float64, autograd) implementation of the Llama-family decoder,
used live by the reference tests. Reads weights, a packed batch and the config from a
safetensors file; writes logits, loss, every parameter gradient and the parameters
after torch.optim.AdamW steps.

Each document is run as its own sequence (positions 0..n-1, plain causal attention), so
packing and document isolation in Temper are checked against a model that never packs.

usage: llama_reference.py model IN.safetensors OUT.safetensors
       llama_reference.py rope  IN.safetensors OUT.safetensors
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import safetensors_io  # noqa: E402

torch.set_default_dtype(torch.float64)


def inv_frequencies(cfg, head_dim):
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type") == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= old / high) & (wavelen <= old / low)
        inv = torch.where(is_mid, mid, scaled)
    return inv


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rope(x, positions, inv):
    """x [n, H, D], positions [n]"""
    ang = positions.to(torch.float64)[:, None] * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1)[:, None, :]
    return x * emb.cos() + rotate_half(x) * emb.sin()


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def document_forward(P, cfg, ids, inv):
    n = ids.shape[0]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    window = cfg.get("sliding_window", 0) if cfg.get("use_sliding_window", False) else 0
    pos = torch.arange(n)
    x = P["model.embed_tokens.weight"][ids]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = j <= i
    if window:
        allowed = allowed & (i - j < window)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)

        def proj(name):
            out = h @ P[p + f"self_attn.{name}.weight"].T
            b = P.get(p + f"self_attn.{name}.bias")
            return out if b is None else out + b

        q = apply_rope(proj("q_proj").view(n, H, D), pos, inv)
        k = apply_rope(proj("k_proj").view(n, Hkv, D), pos, inv)
        v = proj("v_proj").view(n, Hkv, D)
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(D)
        s = s.masked_fill(~allowed[None], float("-inf"))
        att = torch.einsum("hqk,khd->qhd", s.softmax(-1), v).reshape(n, H * D)
        x = x + att @ P[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        mlp = F.silu(h @ P[p + "mlp.gate_proj.weight"].T) * (h @ P[p + "mlp.up_proj.weight"].T)
        x = x + mlp @ P[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else P["lm_head.weight"]
    return x @ head.T


def model_loss(P, cfg, ids, targets, cu, inv):
    logits = torch.cat([document_forward(P, cfg, ids[cu[d] : cu[d + 1]], inv) for d in range(len(cu) - 1)])
    n_targets = int((targets != -100).sum())
    loss = F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum") / n_targets
    return logits, loss


def is_no_decay(name):
    return name.endswith("norm.weight") or name.endswith(".bias")


def run_model(inp, meta, out_path):
    cfg = json.loads(meta["config"])
    inv = inv_frequencies(cfg, cfg["head_dim"])
    ids = torch.from_numpy(inp.pop("input.ids")).long()
    targets = torch.from_numpy(inp.pop("input.targets")).long()
    positions = torch.from_numpy(inp.pop("input.positions")).long()
    cu = [int(c) for c in inp.pop("input.cu_seqlens")]
    for d in range(len(cu) - 1):  # positions must restart per document
        assert positions[cu[d] : cu[d + 1]].tolist() == list(range(cu[d + 1] - cu[d])), "positions"
    P = {k: torch.tensor(v.astype("float64"), requires_grad=True) for k, v in inp.items()}
    logits, loss = model_loss(P, cfg, ids, targets, cu, inv)
    loss.backward()
    out = {"logits": logits.detach().numpy(), "loss": loss.detach().reshape(1).numpy()}
    for k, v in P.items():
        out["grad." + k] = v.grad.numpy().copy()

    # AdamW steps on the same batch (decay off for norms and biases, as Temper defaults).
    lr, b1, b2 = float(meta["lr"]), float(meta["beta1"]), float(meta["beta2"])
    eps, wd, steps = float(meta["eps"]), float(meta["weight_decay"]), int(meta["steps"])
    max_norm = float(meta["max_grad_norm"])
    groups = [
        {"params": [v for k, v in P.items() if not is_no_decay(k)], "weight_decay": wd},
        {"params": [v for k, v in P.items() if is_no_decay(k)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        _, l = model_loss(P, cfg, ids, targets, cu, inv)
        l.backward()
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(P.values()), max_norm)
        opt.step()
        losses.append(l.item())
    out["adamw.losses"] = torch.tensor(losses).numpy()
    for k, v in P.items():
        out["adamw." + k] = v.detach().numpy()
    safetensors_io.write(out_path, out)


def run_rope(inp, meta, out_path):
    cfg = json.loads(meta["config"])
    x = torch.from_numpy(inp["x"].astype("float64"))
    pos = torch.from_numpy(inp["positions"]).long()
    inv = inv_frequencies(cfg, x.shape[-1])
    safetensors_io.write(out_path, {"y": apply_rope(x, pos, inv).numpy(), "inv_freq": inv.numpy()})


if __name__ == "__main__":
    mode, inp_path, out_path = sys.argv[1:4]
    tensors, meta = safetensors_io.read(inp_path)
    {"model": run_model, "rope": run_rope}[mode](tensors, meta, out_path)
    print("reference ok:", mode)
