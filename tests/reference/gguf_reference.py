"""GGUF reference data for tests/reference/test_gguf_reference.cpp.

Writes <out_dir>/model.gguf with the PyPI `gguf` package's own GGUFWriter (llama metadata,
a tokenizer token list, a chat template, one key of every value type, and tensors of
types F32, F16, BF16, Q8_0, Q4_0, Q4_1 quantized by gguf.quants.quantize), then reads it
back with the package's GGUFReader and writes the package's dequantized values to
<out_dir>/ref.safetensors as "deq.<gguf name>" (row-major, GGUF dims reversed), plus the
HF-layout originals of the permuted Q/K ("hf.<gguf name>") and a stand-alone permutation
case ("perm.in" / "perm.out"). The metadata records GGML_QUANT_SIZES as JSON.

Usage: gguf_reference.py <out_dir>
"""
import json
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import safetensors_io  # noqa: E402

N_HEAD, N_KV, HIDDEN, FFN = 4, 2, 64, 96
HEAD_DIM = HIDDEN // N_HEAD


def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF rotate-half -> GGUF pairs)."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def main(out_dir):
    rng = np.random.default_rng(1234)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(ord("a") + i) for i in range(26)]
    tokens += ["Ġthe", "Ġa", "ing", "Ġ", "Ċ", "é", "日本", "ĠHello", "!", "?", "x" * 300]
    vocab = len(tokens)  # 40

    w = gguf.GGUFWriter(f"{out_dir}/model.gguf", "llama")
    w.add_name("tiny-test")
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_block_count(1)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(100000.0)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                "<|im_end|>\n{% endfor %}")
    w.add_chat_template(template)
    # One key of every value type.
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62) - 3)
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo wörld")
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_array("test.arr_f32", [0.5, -1.25])
    w.add_array("test.arr_str", ["a", "", "日本"])
    w.add_array("test.arr_empty", [])

    ref, hf = {}, {}

    def add(name, arr, qtype):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if qtype == T.F32:
            w.add_tensor(name, arr)
        elif qtype == T.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)

    def mat(rows, cols, scale=0.5):
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    q_hf = mat(N_HEAD * HEAD_DIM, HIDDEN)
    k_hf = mat(N_KV * HEAD_DIM, HIDDEN).astype(np.float16).astype(np.float32)  # exact in F16
    hf["hf.blk.0.attn_q.weight"], hf["hf.blk.0.attn_k.weight"] = q_hf, k_hf

    add("token_embd.weight", mat(vocab, HIDDEN), T.Q8_0)
    add("blk.0.attn_norm.weight", 1 + 0.1 * rng.standard_normal(HIDDEN), T.F32)
    add("blk.0.attn_q.weight", permute(q_hf, N_HEAD), T.F32)
    add("blk.0.attn_k.weight", permute(k_hf, N_KV), T.F16)
    add("blk.0.attn_v.weight", mat(N_KV * HEAD_DIM, HIDDEN), T.BF16)
    add("blk.0.attn_output.weight", mat(HIDDEN, HIDDEN), T.Q4_1)
    add("blk.0.ffn_norm.weight", 1 + 0.1 * rng.standard_normal(HIDDEN), T.F16)
    add("blk.0.ffn_gate.weight", mat(FFN, HIDDEN), T.Q8_0)
    add("blk.0.ffn_up.weight", mat(FFN, HIDDEN), T.Q4_0)
    add("blk.0.ffn_down.weight", mat(HIDDEN, FFN), T.Q4_1)
    add("output_norm.weight", 1 + 0.1 * rng.standard_normal(HIDDEN), T.F32)
    add("extra.cube", mat(2 * 3, 64).reshape(2, 3, 64), T.Q4_0)  # a 3-D tensor

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Read back with the package's own reader and dequantize with its own code.
    r = gguf.GGUFReader(f"{out_dir}/model.gguf")
    types = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]
        vals = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        ref["deq." + t.name] = np.asarray(vals, dtype=np.float32).reshape(shape)
        types[t.name] = int(t.tensor_type)

    # A stand-alone permutation case with a non-square matrix and odd column count.
    p_in = mat(6 * 8, 5)
    ref["perm.in"], ref["perm.out"] = p_in, permute(p_in, 6)

    meta = {
        "quant_sizes": json.dumps({int(k): list(v) for k, v in gguf.GGML_QUANT_SIZES.items()}),
        "types": json.dumps(types),
        "tokens": json.dumps(tokens),
        "chat_template": template,
        "alignment": str(r.alignment),
        "data_offset": str(r.data_offset),
    }
    safetensors_io.write(f"{out_dir}/ref.safetensors", {**ref, **hf}, meta)
    print("ok", len(r.tensors), "tensors", len(r.fields), "fields")


if __name__ == "__main__":
    main(sys.argv[1])
