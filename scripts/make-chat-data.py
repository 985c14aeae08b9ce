#!/usr/bin/env python3
"""Writes a small chat dataset (JSONL, one {"messages": [...]} per line) of arithmetic
and comparison questions with short, uniformly styled answers. `make demo` fine-tunes
SmolLM2 on it; the answers' fixed style makes the effect of a few steps visible.

usage: make-chat-data.py OUT.jsonl [--n N] [--seed S]
"""
import argparse
import json
import random


def example(rng: random.Random) -> dict:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    kind = rng.choice(["add", "sub", "mul", "max"])
    if kind == "add":
        q = rng.choice([f"What is {a} plus {b}?", f"Add {a} and {b}.", f"Compute {a} + {b}."])
        ans = f"{a} + {b} = {a + b}. The answer is {a + b}."
    elif kind == "sub":
        a, b = max(a, b), min(a, b)
        q = rng.choice([f"What is {a} minus {b}?", f"Subtract {b} from {a}.", f"Compute {a} - {b}."])
        ans = f"{a} - {b} = {a - b}. The answer is {a - b}."
    elif kind == "mul":
        a, b = a % 13 + 2, b % 13 + 2
        q = rng.choice([f"What is {a} times {b}?", f"Multiply {a} by {b}.", f"Compute {a} * {b}."])
        ans = f"{a} * {b} = {a * b}. The answer is {a * b}."
    else:
        while b == a:
            b = rng.randint(2, 99)
        q = rng.choice([f"Which is larger, {a} or {b}?", f"Which number is bigger: {a} or {b}?"])
        ans = f"{max(a, b)} > {min(a, b)}. The answer is {max(a, b)}."
    messages = [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "system", "content": "You are a concise calculator."})
    return {"messages": messages}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        for _ in range(args.n):
            f.write(json.dumps(example(rng)) + "\n")


if __name__ == "__main__":
    main()
