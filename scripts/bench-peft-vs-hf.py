#!/usr/bin/env python3
"""Side by side on one machine, in one run: `temper bench` and Hugging Face PEFT + torch
training the same model shape with the same method, batch and thread count. Each side runs
in its own child process; the table gives the median step time, tokens/s and the child's
peak RSS (getrusage), and the ratios.

Default: the SmolLM2-135M shape (configs/models/smollm2-135m.json, random weights), f32,
4 × 128 tokens, 2 threads; methods LoRA (r 16, alpha 32, all linear layers) and DoRA (the
same with use_dora), AdamW.

usage: bench-peft-vs-hf.py [--build build] [--threads 2] [--steps 5] [--warmup 2]
                           [--methods lora,dora] [--json results.jsonl]
Needs the reference Python of the build (build/pyenv: torch, transformers, peft).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "configs/models/smollm2-135m.json")
RECIPE = os.path.join(ROOT, "configs/recipes/bench-smollm2-lora.yaml")
ROWS, SEQ, R, ALPHA = 4, 128, 16, 32


def hf_child(method, threads, steps, warmup):
    """Runs in a child process: HF LlamaForCausalLM + PEFT, AdamW, random tokens."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = json.load(open(MODEL))
    config = transformers.AutoConfig.for_model(**cfg)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, target_modules="all-linear",
                                             lora_dropout=0.0, use_dora=method == "dora"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, cfg["vocab_size"], (ROWS, SEQ))
    times = []
    for s in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"step_seconds_median": times[len(times) // 2],
                      "trainable_parameters": sum(p.numel() for p in params),
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "torch": torch.__version__, "transformers": transformers.__version__}))


def child_rss_kib():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def run_child(cmd, env):
    """Runs cmd; returns (stdout, peak RSS of that child in MiB). Children run one at a
    time, so the growth of RUSAGE_CHILDREN's maximum is this child's peak."""
    before = child_rss_kib()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    after = child_rss_kib()
    if after <= before:
        sys.exit("a child's peak RSS did not exceed an earlier one: run the sides in the other order")
    return out.stdout, after / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--methods", default="lora,dora")
    ap.add_argument("--json")
    ap.add_argument("--hf-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.hf_child:
        return hf_child(a.hf_child, a.threads, a.steps, a.warmup)

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS="1")
    python = os.path.join(a.build, "pyenv", "bin", "python3")
    rows = []
    # The smaller process first: RUSAGE_CHILDREN keeps the largest child's peak.
    for method in a.methods.split(","):
        out, rss = run_child([os.path.join(a.build, "bin", "temper"), "bench", RECIPE,
                              f"peft.use_dora={'true' if method == 'dora' else 'false'}",
                              "--steps", str(a.steps), "--warmup", str(a.warmup),
                              "--json", "/dev/stdout"], env)
        t = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
        rows.append({"side": "temper", "method": method, "step_s": t["step_seconds_median"],
                     "tokens_per_s": t["tokens_per_s"], "rss_mib": rss,
                     "trainable": t["trainable_parameters"], "parameters": t["parameters"]})
    for method in a.methods.split(","):
        out, rss = run_child([python, os.path.abspath(__file__), "--hf-child", method,
                              "--threads", str(a.threads), "--steps", str(a.steps),
                              "--warmup", str(a.warmup)], env)
        h = json.loads(out.strip().splitlines()[-1])
        rows.append({"side": "hf-peft", "method": method, "step_s": h["step_seconds_median"],
                     "tokens_per_s": ROWS * SEQ / h["step_seconds_median"], "rss_mib": rss,
                     "trainable": h["trainable_parameters"], "parameters": h["parameters"],
                     "versions": f"torch {h['torch']}, transformers {h['transformers']}"})

    print(f"SmolLM2-135M shape, f32, {ROWS} x {SEQ} tokens, {a.threads} threads, LoRA r={R} alpha={ALPHA} "
          f"all-linear, median of {a.steps} steps after {a.warmup}")
    print(f"{'side':8} {'method':6} {'step s':>8} {'tokens/s':>9} {'peak RSS MiB':>13} {'trainable':>10}")
    for r in rows:
        print(f"{r['side']:8} {r['method']:6} {r['step_s']:8.3f} {r['tokens_per_s']:9.1f} "
              f"{r['rss_mib']:13.0f} {r['trainable']:10d}")
    by = {(r["side"], r["method"]): r for r in rows}
    for method in a.methods.split(","):
        t, h = by[("temper", method)], by[("hf-peft", method)]
        print(f"{method}: temper / hf-peft tokens/s {t['tokens_per_s'] / h['tokens_per_s']:.2f}x, "
              f"peak RSS {t['rss_mib'] / h['rss_mib']:.2f}x")
    if "lora" in a.methods and "dora" in a.methods:
        for side in ("temper", "hf-peft"):
            print(f"{side}: DoRA step time / LoRA step time "
                  f"{by[(side, 'dora')]['step_s'] / by[(side, 'lora')]['step_s']:.2f}")
    if a.json:
        with open(a.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
