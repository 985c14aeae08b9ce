"""Hugging Face side of the checkpoint round trip in
tests/reference/test_checkpoint_reference.cpp.

  checkpoint_hf.py make DIR DTYPE ARCH
      A tiny random model saved by transformers' save_pretrained (safetensors) in DTYPE
      (float32 | bfloat16): ARCH llama (untied embeddings) or qwen2 (tied, q/k/v biases),
      plus a tokenizer.json and tokenizer_config.json made by the tokenizers package.
  checkpoint_hf.py compare ORIGINAL EXPORTED
      Every tensor of EXPORTED/model.safetensors has the original's name, dtype, shape and
      bytes (and there are no others); its metadata is {"format": "pt"}; the tokenizer
      files are byte-identical; transformers loads EXPORTED and its logits equal the
      original's exactly. Prints "ok" or exits non-zero naming the difference.
"""
import filecmp
import os
import sys

import torch
from safetensors import safe_open
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)


def make(out, dtype, arch):
    torch.manual_seed(3)
    shape = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False))
    model = model.to(getattr(torch, dtype))
    with torch.no_grad():  # HF's init leaves biases and norms constant: spread every tensor
        for p in model.parameters():
            p.copy_(torch.randn_like(p, dtype=torch.float32).to(p.dtype))
    model.save_pretrained(out, safe_serialization=True)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(96)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        f.write('{"model_max_length": 64}\n')


def tensors(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def compare(a_dir, b_dir):
    a, _ = tensors(os.path.join(a_dir, "model.safetensors"))
    b, meta = tensors(os.path.join(b_dir, "model.safetensors"))
    if meta != {"format": "pt"}:
        sys.exit(f"metadata {meta}, expected {{'format': 'pt'}}")
    if sorted(a) != sorted(b):
        sys.exit(f"tensor names differ: only original {sorted(set(a) - set(b))}, only exported {sorted(set(b) - set(a))}")
    for k in a:
        if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape:
            sys.exit(f"{k}: {b[k].dtype} {tuple(b[k].shape)}, original {a[k].dtype} {tuple(a[k].shape)}")
        if a[k].contiguous().view(torch.uint8).flatten().tolist() != b[k].contiguous().view(torch.uint8).flatten().tolist():
            sys.exit(f"{k}: bytes differ")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not filecmp.cmp(os.path.join(a_dir, name), os.path.join(b_dir, name), shallow=False):
            sys.exit(f"{name} differs")
    ids = torch.tensor([[1, 5, 9, 33, 95, 2, 7]])
    with torch.no_grad():
        la = AutoModelForCausalLM.from_pretrained(a_dir, torch_dtype="auto")(ids).logits
        lb = AutoModelForCausalLM.from_pretrained(b_dir, torch_dtype="auto")(ids).logits
    if la.dtype != lb.dtype or not torch.equal(la, lb):
        sys.exit(f"logits differ ({la.dtype} vs {lb.dtype}, max diff {(la.float() - lb.float()).abs().max()})")
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(*sys.argv[2:5])
    else:
        compare(*sys.argv[2:4])
