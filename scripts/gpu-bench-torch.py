#!/usr/bin/env python3
"""The PyTorch side of the GPU check (scripts/gpu-run.sh): the model and batch that
`temper bench` times, trained by Hugging Face transformers on the same GPU.

transformers' LlamaForCausalLM from a config.json (random weights), SDPA attention,
bf16 autocast, torch AdamW (lr 1e-5, gradient clipping at 1.0, as temper bench), random
token ids with labels = ids; one mode after another in this process, each on a fresh model:
  full     every weight trains; fp32 weights under bf16 autocast (fp32 master weights and
           moments, as temper's mixed precision)
  partial  a frozen base: only the RMSNorm weights train (temper: peft.trainable=[norm]);
           the frozen weights are held in bf16, the trained ones in fp32
  lora     PEFT LoRA r 16, alpha 32, every linear layer but the LM head ("all-linear"),
           no dropout; bf16 frozen base, fp32 adapters
Prints one JSON line per mode (and appends it to --json): median step seconds, tokens/s,
model TFLOP/s and MFU by temper bench's formula (src/train/bench.h: 4·N + 2·N_trained +
12·L·H·Q·T per token, N the GEMM weights including the LM head and adapters), and the
peak memory torch allocated (torch.cuda.max_memory_allocated; peak RSS on the CPU).

usage: gpu-bench-torch.py --model CONFIG.json [--rows 4] [--seq 2048] [--steps 5]
       [--warmup 2] [--modes full,partial,lora] [--device cuda] [--dtype bf16] [--json F]
"""
import argparse
import contextlib
import gc
import json
import resource
import statistics
import sys
import time

LORA_R, LORA_ALPHA = 16, 32


def peak_tflops(name):
    """Dense bf16 peak by device name, as temper's known_peak_tflops (src/train/bench.cpp)."""
    if "H200" in name:
        return 989.0
    if "H100" in name:
        return 756.0 if "PCIe" in name else 989.0
    if "A100" in name:
        return 312.0
    return 0.0


def gemm_weights(model):
    """Weights of every nn.Linear (adapters included) and the tied LM head: GEMM weights,
    each (weight, trains) once."""
    import torch
    seen, out = set(), []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            out.append(module.weight)
    return out


def build(mode, cfg, device, dtype):
    import torch
    import transformers
    attn = "sdpa"
    if device == "cpu" and not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        attn = "eager"  # the dry run's older torch (the GPU host's must have SDPA)
    config = transformers.LlamaConfig(attn_implementation=attn,
                                      **{k: v for k, v in cfg.items() if k != "model_type"})
    base_dtype = torch.float32 if mode == "full" or dtype == "f32" else torch.bfloat16
    # Built on the device where torch can (2.0+): initializing 1.2B weights on the host
    # would take longer than the steps.
    on_device = torch.device(device) if hasattr(torch.device, "__enter__") else contextlib.nullcontext()
    with on_device:
        model = transformers.LlamaForCausalLM(config)
    model = model.to(device=device, dtype=base_dtype)
    if mode == "partial":
        for name, p in model.named_parameters():
            p.requires_grad = name.endswith("norm.weight")
    elif mode == "lora":
        import peft
        model = peft.get_peft_model(model, peft.LoraConfig(
            r=LORA_R, lora_alpha=LORA_ALPHA, target_modules="all-linear", lora_dropout=0.0))
    for p in model.parameters():  # trained parameters in fp32: the master weights
        if p.requires_grad:
            p.data = p.data.float()
    return model, model.config._attn_implementation


def run_mode(mode, a, cfg):
    import torch
    device, cuda = a.device, a.device.startswith("cuda")
    torch.manual_seed(0)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, attn = build(mode, cfg, device, a.dtype)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, cfg["vocab_size"], (a.rows, a.seq), device=device)
    autocast = torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16,
                              enabled=a.dtype == "bf16")
    times = []
    for s in range(a.warmup + a.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
        if not torch.isfinite(loss):
            sys.exit(f"{mode}: loss {loss.item()} at step {s}")
    median = statistics.median(times)
    tokens = a.rows * a.seq
    gemm = gemm_weights(model)
    n = sum(w.numel() for w in gemm)
    trained = sum(w.numel() for w in gemm if w.requires_grad)
    L, H = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    Q = cfg.get("head_dim") or cfg["hidden_size"] // H
    flops_per_token = 4.0 * n + 2.0 * trained + 12.0 * L * H * Q * a.seq
    tflops = tokens / median * flops_per_token / 1e12
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = a.peak_tflops or peak_tflops(name)
    result = {
        "side": "torch", "mode": mode, "device": name, "dtype": a.dtype, "attention": attn,
        "seq_len": a.seq, "micro_batch_size": a.rows, "steps_timed": a.steps,
        "step_seconds_median": median, "tokens_per_s": tokens / median, "tflops": tflops,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if cuda else "process peak RSS",
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in params),
        "final_loss": loss.item(),
    }
    if peak > 0:
        result.update(peak_tflops=peak, mfu=tflops / peak)
    del model, opt, params, loss
    gc.collect()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="HF config.json (configs/models/*.json)")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", default="full,partial,lora")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    ap.add_argument("--json")
    a = ap.parse_args()
    import peft
    import torch
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
          f"device {a.device}", flush=True)
    if a.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # bf16 GEMMs as temper's; no TF32 elsewhere
    cfg = json.load(open(a.model))
    for mode in a.modes.split(","):
        r = run_mode(mode, a, cfg)
        r.update(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__)
        line = json.dumps(r)
        print(line, flush=True)
        print(f"torch {mode}: {r['step_seconds_median']:.4f} s/step, {r['tokens_per_s']:.0f} tokens/s, "
              f"{r['tflops']:.2f} TFLOP/s" + (f", MFU {100 * r['mfu']:.1f}%" if "mfu" in r else "") +
              f", peak memory {r['peak_memory_bytes'] / 2**30:.2f} GiB", flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
