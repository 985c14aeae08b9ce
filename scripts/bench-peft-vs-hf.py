#!/usr/bin/env python3
"""Side by side on one machine, in one run: `temper bench` and Hugging Face PEFT + torch
training the same model shape with the same method, batch and thread count. Each side runs
in its own child process; the table gives the median step time, tokens/s and the child's
peak RSS (wait4), and the ratios.

Default: the SmolLM2-135M shape (configs/models/smollm2-135m.json, random weights), f32,
4 × 128 tokens, 2 threads, AdamW; every method (METHODS): LoRA (r 16, alpha 32, all linear
layers), DoRA (the same with use_dora), QLoRA (LoRA on an NF4 base: Temper only, as
bitsandbytes needs a GPU; the row gives the base's bytes per parameter), IA3 (PEFT's
targets), prompt tuning, P-tuning, prefix tuning (20 virtual tokens; encoders as wide as
the model) and bottleneck adapters (Houlsby, reduction 16; the other side is AdapterHub).

usage: bench-peft-vs-hf.py [--build build] [--threads 2] [--steps 5] [--warmup 2]
                           [--methods lora,dora,...] [--json results.jsonl]
Needs the reference Python of the build (build/pyenv: torch, transformers, peft, adapters).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "configs/models/smollm2-135m.json")
RECIPE = os.path.join(ROOT, "configs/recipes/bench-smollm2-lora.yaml")
ROWS, SEQ, R, ALPHA = 4, 128, 16, 32
VIRTUAL = 20

# method -> Temper's overrides of the recipe (a LoRA recipe).
METHODS = {
    "lora": [],
    "dora": ["peft.use_dora=true"],
    "qlora": ["model.quantize=nf4"],
    "ia3": ["peft.method=ia3", "peft.target_modules=[]"],
    "prompt_tuning": ["peft.method=prompt_tuning", f"peft.num_virtual_tokens={VIRTUAL}"],
    "p_tuning": ["peft.method=p_tuning", f"peft.num_virtual_tokens={VIRTUAL}"],
    "prefix_tuning": ["peft.method=prefix_tuning", f"peft.num_virtual_tokens={VIRTUAL}",
                      "peft.prefix_projection=true"],
    "adapter": ["peft.method=adapter", "peft.reduction_factor=16"],
}
NO_REFERENCE = {"qlora"}  # bitsandbytes' 4-bit layers need CUDA


def hf_method(model, method, hidden):
    """The other side's model: PEFT's, or AdapterHub's for the bottleneck adapters."""
    import peft
    if method == "adapter":
        import adapters
        adapters.init(model)
        model.add_adapter("b", config=adapters.BnConfig(
            mh_adapter=True, output_adapter=True, reduction_factor=16, non_linearity="swish",
            original_ln_before=False))
        model.train_adapter("b")
        return model
    config = {
        "lora": lambda: peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules="all-linear", lora_dropout=0.0),
        "dora": lambda: peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules="all-linear", lora_dropout=0.0,
                                        use_dora=True),
        "ia3": lambda: peft.IA3Config(task_type="CAUSAL_LM"),
        "prompt_tuning": lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=VIRTUAL),
        "p_tuning": lambda: peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=VIRTUAL,
                                                     encoder_hidden_size=hidden),
        "prefix_tuning": lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=VIRTUAL,
                                                         prefix_projection=True, encoder_hidden_size=hidden),
    }[method]()
    return peft.get_peft_model(model, config)


def hf_child(method, threads, steps, warmup):
    """Runs in a child process: HF LlamaForCausalLM + PEFT, AdamW, random tokens."""
    import torch
    import transformers
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = json.load(open(MODEL))
    config = transformers.AutoConfig.for_model(**cfg)
    model = hf_method(transformers.AutoModelForCausalLM.from_config(config), method, cfg["hidden_size"])
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


def run_child(cmd, env):
    """Runs cmd; returns (stdout, that child's peak RSS in MiB, from wait4's rusage)."""
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.read()[-2000:]}")
        out.seek(0)
        return out.read(), usage.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json")
    ap.add_argument("--hf-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.hf_child:
        return hf_child(a.hf_child, a.threads, a.steps, a.warmup)

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS="1")
    python = os.path.join(a.build, "pyenv", "bin", "python3")
    rows = []
    for method in a.methods.split(","):
        with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
            _, rss = run_child([os.path.join(a.build, "bin", "temper"), "bench", RECIPE, *METHODS[method],
                                "--steps", str(a.steps), "--warmup", str(a.warmup), "--json", result.name], env)
            t = json.loads([l for l in result.read().splitlines() if l.startswith("{")][-1])
        rows.append({"side": "temper", "method": method, "step_s": t["step_seconds_median"],
                     "tokens_per_s": t["tokens_per_s"], "rss_mib": rss,
                     "trainable": t["trainable_parameters"], "parameters": t["parameters"],
                     "nf4_bytes_per_parameter": t.get("nf4_bytes_per_parameter")})
    for method in a.methods.split(","):
        if method in NO_REFERENCE:
            continue
        out, rss = run_child([python, os.path.abspath(__file__), "--hf-child", method,
                              "--threads", str(a.threads), "--steps", str(a.steps),
                              "--warmup", str(a.warmup)], env)
        h = json.loads(out.strip().splitlines()[-1])
        rows.append({"side": "hf-peft", "method": method, "step_s": h["step_seconds_median"],
                     "tokens_per_s": ROWS * SEQ / h["step_seconds_median"], "rss_mib": rss,
                     "trainable": h["trainable_parameters"], "parameters": h["parameters"],
                     "versions": f"torch {h['torch']}, transformers {h['transformers']}"})

    print(f"SmolLM2-135M shape, f32, {ROWS} x {SEQ} tokens, {a.threads} threads, LoRA r={R} alpha={ALPHA} "
          f"all-linear, {VIRTUAL} virtual tokens, median of {a.steps} steps after {a.warmup}")
    print(f"{'side':8} {'method':14} {'step s':>8} {'tokens/s':>9} {'peak RSS MiB':>13} {'trainable':>10}")
    for r in rows:
        nf4 = r.get("nf4_bytes_per_parameter")
        print(f"{r['side']:8} {r['method']:14} {r['step_s']:8.3f} {r['tokens_per_s']:9.1f} "
              f"{r['rss_mib']:13.0f} {r['trainable']:10d}" + (f"  NF4 base {nf4:.4f} bytes/parameter" if nf4 else ""))
    by = {(r["side"], r["method"]): r for r in rows}
    for method in a.methods.split(","):
        if method in NO_REFERENCE:
            continue
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
