#!/usr/bin/env python3
"""The table scripts/gpu-run.sh prints last, from its OUT folder: each step's status and
seconds (steps.tsv), then temper bench against PyTorch for each mode (bench.jsonl):
tokens/s, MFU and peak memory on both sides and their ratios, and where temper's step
time goes (the top ops of --profile). Standard library only.

usage: gpu-summary.py OUT [--dry-run]
"""
import json
import os
import sys

MODES = [("full", "full fine-tuning"), ("partial", "frozen base (norms train)"),
         ("lora", "LoRA r 16, all linear")]


def read_steps(out):
    rows = []
    path = os.path.join(out, "steps.tsv")
    if os.path.exists(path):
        for line in open(path):
            parts = line.rstrip("\n").split("\t")
            rows.append((parts + ["", "", "", ""])[:4])
    return rows


def read_bench(out):
    temper, torch = {}, {}
    path = os.path.join(out, "bench.jsonl")
    if os.path.exists(path):
        for line in open(path):
            if not line.strip():
                continue
            r = json.loads(line)
            (torch if r.get("side") == "torch" else temper)[r["mode"]] = r
    return temper, torch


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def pct(fraction):
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def gib(r):
    return r["peak_memory_bytes"] / 2**30 if r and "peak_memory_bytes" in r else None


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    out = sys.argv[1]
    dry = "--dry-run" in sys.argv
    bundle_info = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "BUNDLE.txt")
    steps = read_steps(out)
    temper, torch = read_bench(out)
    device = next((r["device"] for r in list(temper.values()) + list(torch.values())), "?")
    print("GPU check summary" + (" (DRY RUN: no GPU; bench on a tiny model on the CPU)" if dry else ""))
    if os.path.exists(bundle_info):
        print("bundle: " + " | ".join(l.strip() for l in open(bundle_info).readlines()[:3]))
    print(f"device: {device}")
    print()
    print(f"{'step':26} {'status':10} {'s':>5}  note")
    total = 0
    for name, status, seconds, note in steps:
        total += int(seconds or 0)
        print(f"{name:26} {status:10} {seconds:>5}  {note}")
    print(f"{'total':26} {'':10} {total:>5}")
    failed = [s[0] for s in steps if s[1].startswith(("FAIL", "TIMEOUT"))]

    if temper or torch:
        any_r = next(iter(list(temper.values()) + list(torch.values())))
        print()
        attention = next((r.get("attention") for r in torch.values()), "sdpa").upper()
        print(f"bench: {any_r.get('dtype')}, {any_r.get('micro_batch_size')} × {any_r.get('seq_len')} tokens "
              f"per step; temper = temper bench, torch = transformers + {attention} + AdamW (+ PEFT); "
              f"GiB: peak memory each allocated (torch on the CPU: peak RSS)")
        print(f"{'mode':28} {'temper tok/s':>12} {'MFU':>6} {'GiB':>6} | {'torch tok/s':>11} {'MFU':>6} "
              f"{'GiB':>6} | {'tok/s ratio':>11} {'mem ratio':>9}")
        for mode, label in MODES:
            t, h = temper.get(mode), torch.get(mode)
            if not t and not h:
                continue
            t_tps, h_tps = t and t.get("tokens_per_s"), h and h.get("tokens_per_s")
            t_mfu, h_mfu = t and t.get("mfu"), h and h.get("mfu")
            print(f"{label:28} {fmt(t_tps, '12.0f'):>12} {pct(t_mfu):>6} {fmt(gib(t), '6.2f'):>6} | "
                  f"{fmt(h_tps, '11.0f'):>11} {pct(h_mfu):>6} {fmt(gib(h), '6.2f'):>6} | "
                  f"{fmt(ratio(t_tps, h_tps), '.2f') + 'x':>11} {fmt(ratio(gib(t), gib(h)), '.2f') + 'x':>9}")
        for mode, label in MODES:
            p = temper.get(mode, {}).get("profile")
            if not p:
                continue
            top = ", ".join(f"{o['op']}{' ' + o['shape'] if 'shape' in o else ''} "
                            f"{100 * o['share_of_step']:.0f}%" for o in p["ops"][:5])
            print(f"temper {mode} step {p['step_seconds']:.4f} s, ops {100 * p['op_seconds_per_step'] / p['step_seconds']:.0f}% "
                  f"of it ({p['clock']}); top: {top}")
    print()
    print("FAILED: " + ", ".join(failed) if failed else "all steps ok" + (" (skips expected in a dry run)" if dry else ""))


if __name__ == "__main__":
    main()
