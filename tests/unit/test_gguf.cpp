// GGUF reader validation on hand-built files: every corruption (truncation anywhere, bad
// magic, huge lengths and counts, bad offsets, unknown types) is a temper::Error naming
// the file and the key or tensor; plus block decoding, the Q/K unpermutation, names and
// the ModelConfig mapping. The live comparison with the gguf Python package is in
// tests/reference/test_gguf_reference.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/dtype.h"
#include "core/error.h"
#include "io/gguf.h"
#include "support/test_util.h"

namespace temper {
namespace {

// Little-endian byte builder for hand-made GGUF files.
struct Bytes {
  std::string b;
  bool v1 = false;
  template <typename T>
  Bytes& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& u32(uint32_t v) { return put(v); }
  Bytes& u64(uint64_t v) { return put(v); }
  Bytes& size(uint64_t v) { return v1 ? put(uint32_t(v)) : put(v); }
  Bytes& str(const std::string& s) {
    size(s.size());
    b += s;
    return *this;
  }
  Bytes& pad(size_t align) {
    while (b.size() % align) b += '\0';
    return *this;
  }
};

struct Tensor {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  std::string data;
  int64_t offset = -1;  // -1: next aligned position
};

// A file with a few keys (incl. arrays) and the given tensors, 32-byte alignment.
std::string make_gguf(const std::vector<Tensor>& tensors, uint32_t version = 3) {
  Bytes h;
  h.v1 = version == 1;
  h.b = "GGUF";
  h.u32(version).size(tensors.size()).size(5);
  h.str("general.architecture").u32(8).str("llama");
  h.str("general.alignment").u32(4).u32(32);
  h.str("test.nested").u32(9).u32(9).size(2);  // [[1, 2], []] of u16
  h.u32(2).size(2).put(uint16_t(1)).put(uint16_t(2));
  h.u32(2).size(0);
  h.str("test.strings").u32(9).u32(8).size(2).str("ab").str("");
  h.str("test.flag").u32(7).put(uint8_t(1));
  Bytes data;
  for (const Tensor& t : tensors) {
    data.pad(32);
    h.str(t.name).u32(uint32_t(t.ne.size()));
    for (uint64_t d : t.ne) h.size(d);
    h.u32(t.type).u64(t.offset >= 0 ? uint64_t(t.offset) : data.b.size());
    data.b += t.data;
  }
  h.pad(32);
  return h.b + data.b;
}

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

std::string write_file(const std::string& name, const std::string& bytes) {
  const std::string path = (test::temp_dir("gguf_" + name) / "f.gguf").string();
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  return path;
}

// Expects read_gguf to throw a temper::Error mentioning the path and every fragment.
void expect_error(const std::string& name, const std::string& bytes,
                  const std::vector<std::string>& fragments) {
  const std::string path = write_file(name, bytes);
  try {
    read_gguf(path);
    ADD_FAILURE() << name << ": no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << name << ": " << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << name << ": " << msg;
  }
}

std::vector<Tensor> two_tensors() {
  return {{"blk.0.attn_norm.weight", {4}, 0, f32_bytes({1, 2, 3, 4})},
          {"token_embd.weight", {3, 2}, 0, f32_bytes({1, 2, 3, 4, 5, 6})}};
}

TEST(Gguf, ReadsHandMadeFileAllVersions) {
  for (uint32_t version : {1u, 2u, 3u}) {
    GgufFile f = read_gguf(write_file("ok" + std::to_string(version), make_gguf(two_tensors(), version)));
    EXPECT_EQ(f.version, version);
    EXPECT_EQ(f.get_string("general.architecture"), "llama");
    EXPECT_EQ(f.get_int("general.alignment"), 32);
    EXPECT_TRUE(f.get_bool("test.flag"));
    EXPECT_EQ(f.get_string_array("test.strings"), (std::vector<std::string>{"ab", ""}));
    const GgufValue& nested = f.get("test.nested");
    ASSERT_EQ(nested.array.size(), 2u);
    EXPECT_EQ(nested.array[0].array.size(), 2u);
    EXPECT_EQ(nested.array[0].array[1].u, 2u);
    EXPECT_TRUE(nested.array[1].array.empty());
    ASSERT_EQ(f.tensors.size(), 2u);
    const GgufTensor& e = f.tensor("token_embd.weight");
    EXPECT_EQ(e.ne, (std::vector<int64_t>{3, 2}));
    EXPECT_EQ(e.shape, (std::vector<int64_t>{2, 3}));  // row-major: [rows, cols]
    EXPECT_EQ(e.offset, 32u);
    EXPECT_EQ(dequantize(e), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  }
}

TEST(Gguf, TruncationAnywhereIsAnError) {
  const std::string full = make_gguf(two_tensors());
  const std::string path = write_file("trunc", "");
  for (size_t n = 0; n < full.size(); ++n) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(full.data(), std::streamsize(n));
    try {
      read_gguf(path);
      // Cutting only the padding after the last tensor's data is the only harmless cut; our
      // tensors end exactly at the file end, so every shorter file must fail.
      ADD_FAILURE() << "no error when truncated to " << n << " of " << full.size() << " bytes";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

TEST(Gguf, CorruptHeadersNameFileAndKeyOrTensor) {
  std::string bad_magic = make_gguf(two_tensors());
  bad_magic[3] = 'X';
  expect_error("magic", bad_magic, {"magic"});
  std::string bad_version = make_gguf(two_tensors());
  bad_version[4] = 7;
  expect_error("version", bad_version, {"version 7"});

  Bytes h;
  h.b = "GGUF";
  h.u32(3).u64(0).u64(1).u64(uint64_t(1) << 62);  // key length 2^62
  expect_error("huge_key", h.b + std::string(64, 'k'), {"key", "length"});

  Bytes s;
  s.b = "GGUF";
  s.u32(3).u64(0).u64(1).str("my.key").u32(8).u64(~uint64_t(0) - 3);
  expect_error("huge_string", s.b + std::string(64, 'x'), {"'my.key'", "string value length"});

  Bytes a;
  a.b = "GGUF";
  a.u32(3).u64(0).u64(1).str("my.arr").u32(9).u32(8).u64(uint64_t(1) << 60);
  expect_error("huge_array", a.b + std::string(64, 'x'), {"'my.arr'", "array length"});

  Bytes c;
  c.b = "GGUF";
  c.u32(3).u64(uint64_t(1) << 40).u64(0);
  expect_error("huge_count", c.b + std::string(64, 'x'), {"tensor count"});

  Bytes t;
  t.b = "GGUF";
  t.u32(3).u64(0).u64(1).str("my.type").u32(13).u32(0);
  expect_error("value_type", t.b, {"'my.type'", "unknown value type 13"});

  Bytes b;
  b.b = "GGUF";
  b.u32(3).u64(0).u64(1).str("my.bool").u32(7).put(uint8_t(2));
  expect_error("bool", b.b, {"'my.bool'", "bool"});

  Bytes n;
  n.b = "GGUF";
  n.u32(3).u64(0).u64(1).str("my.deep").u32(9);
  for (int i = 0; i < 20; ++i) n.u32(9).u64(1);
  n.u32(0).u64(0);
  expect_error("deep", n.b, {"'my.deep'", "nested"});

  auto ts = two_tensors();
  ts[1].offset = 1 << 20;
  expect_error("offset_range", make_gguf(ts), {"'token_embd.weight'", "runs past the end"});
  ts[1].offset = 40;
  expect_error("offset_align", make_gguf(ts), {"'token_embd.weight'", "alignment"});
  ts = two_tensors();
  ts[0].type = 4;  // removed Q4_2
  expect_error("tensor_type", make_gguf(ts), {"'blk.0.attn_norm.weight'", "unknown ggml tensor type 4"});
  ts = two_tensors();
  ts[0].type = 8;  // Q8_0 with a row of 4: not a multiple of 32
  expect_error("block", make_gguf(ts), {"'blk.0.attn_norm.weight'", "block size 32"});
  ts = two_tensors();
  ts[1].ne = {3, 2, 1, 1, 1};
  expect_error("n_dims", make_gguf(ts), {"'token_embd.weight'", "n_dims 5"});
  ts = two_tensors();
  ts[1].ne = {uint64_t(1) << 40, uint64_t(1) << 40};
  expect_error("overflow", make_gguf(ts), {"'token_embd.weight'"});
  ts = two_tensors();
  ts[1].name = ts[0].name;
  expect_error("dup", make_gguf(ts), {"duplicate"});
}

TEST(Gguf, GettersNameTheKey) {
  GgufFile f = read_gguf(write_file("getters", make_gguf(two_tensors())));
  auto expect_throw = [&](auto fn, const std::string& fragment) {
    try {
      fn();
      ADD_FAILURE() << "no error for " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(f.path), std::string::npos) << e.what();
    }
  };
  expect_throw([&] { f.get_int("general.architecture"); }, "'general.architecture'");
  expect_throw([&] { f.get_string("general.alignment"); }, "'general.alignment'");
  expect_throw([&] { f.get_string("no.such.key"); }, "'no.such.key'");
  expect_throw([&] { f.get_string_array("test.nested"); }, "'test.nested'");
  expect_throw([&] { f.tensor("nope"); }, "'nope'");
  EXPECT_EQ(f.get_int_or("no.such.key", 7), 7);
  EXPECT_DOUBLE_EQ(f.get_float("general.alignment"), 32.0);
}

// Found by tests/fuzz/fuzz_gguf.cpp (regression input regression-empty-f32-tensor): a
// tensor with a zero dimension made dequantize memcpy from a null pointer (UBSan).
TEST(Gguf, AnEmptyTensorDequantizesToNoValues) {
  for (const GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::Q8_0}) {
    GgufTensor t;
    t.name = "empty";
    t.ne = {32, 0};
    t.shape = {0, 32};
    t.type = uint32_t(type);
    EXPECT_TRUE(dequantize(t).empty());
  }
}

TEST(Gguf, DecodesHandMadeBlocks) {
  GgufTensor t;
  t.name = "q";
  t.ne = {32};
  t.shape = {32};
  const uint16_t d = f32_to_f16(0.5f), m = f32_to_f16(-1.0f);
  auto le16 = [](uint16_t v) { return std::string{char(v & 0xff), char(v >> 8)}; };
  std::string qs;
  for (int j = 0; j < 16; ++j) qs += char((j & 0xf) | ((15 - j) << 4));
  t.type = uint32_t(GgmlType::Q4_0);
  std::string blk = le16(d) + qs;
  t.data.assign(blk.begin(), blk.end());
  std::vector<float> v = dequantize(t);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(v[j], float(j - 8) * 0.5f);
    EXPECT_EQ(v[j + 16], float(15 - j - 8) * 0.5f);
  }
  t.type = uint32_t(GgmlType::Q4_1);
  blk = le16(d) + le16(m) + qs;
  t.data.assign(blk.begin(), blk.end());
  v = dequantize(t);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(v[j], float(j) * 0.5f - 1.0f);
    EXPECT_EQ(v[j + 16], float(15 - j) * 0.5f - 1.0f);
  }
  t.type = uint32_t(GgmlType::Q8_0);
  blk = le16(d);
  for (int j = 0; j < 32; ++j) blk += char(int8_t(j * 8 - 128));
  t.data.assign(blk.begin(), blk.end());
  v = dequantize(t);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(v[j], float(j * 8 - 128) * 0.5f);

  t.ne = {256};
  t.shape = {256};
  t.type = uint32_t(GgmlType::Q4_K);
  t.data.assign(144, 0);
  try {
    dequantize(t);
    ADD_FAILURE() << "Q4_K dequantized";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'q'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Q4_K"), std::string::npos) << e.what();
  }
}

TEST(Gguf, UnpermuteInvertsLlamaPermute) {
  const int64_t heads = 3, hd = 8, rows = heads * hd, cols = 5;
  std::vector<float> hf(rows * cols);
  for (size_t i = 0; i < hf.size(); ++i) hf[i] = float(i);
  // llama.cpp: GGUF row h*hd + 2p + s = HF row h*hd + s*hd/2 + p.
  std::vector<float> gg(hf.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t p = 0; p < hd / 2; ++p)
      for (int64_t s = 0; s < 2; ++s)
        for (int64_t c = 0; c < cols; ++c)
          gg[(h * hd + 2 * p + s) * cols + c] = hf[(h * hd + s * hd / 2 + p) * cols + c];
  unpermute_llama_qk(gg, rows, cols, heads);
  EXPECT_EQ(gg, hf);
  EXPECT_THROW(unpermute_llama_qk(gg, rows, cols, 5), Error);
  EXPECT_THROW(unpermute_llama_qk(gg, rows, cols + 1, heads), Error);
}

TEST(Gguf, HfNames) {
  EXPECT_EQ(hf_name_for_gguf("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(hf_name_for_gguf("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(hf_name_for_gguf("output.weight"), "lm_head.weight");
  EXPECT_EQ(hf_name_for_gguf("blk.12.attn_norm.weight"), "model.layers.12.input_layernorm.weight");
  EXPECT_EQ(hf_name_for_gguf("blk.0.attn_q.bias"), "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(hf_name_for_gguf("blk.1.attn_k.weight"), "model.layers.1.self_attn.k_proj.weight");
  EXPECT_EQ(hf_name_for_gguf("blk.1.attn_v.weight"), "model.layers.1.self_attn.v_proj.weight");
  EXPECT_EQ(hf_name_for_gguf("blk.1.attn_output.weight"), "model.layers.1.self_attn.o_proj.weight");
  EXPECT_EQ(hf_name_for_gguf("blk.3.ffn_norm.weight"),
            "model.layers.3.post_attention_layernorm.weight");
  EXPECT_EQ(hf_name_for_gguf("blk.3.ffn_gate.weight"), "model.layers.3.mlp.gate_proj.weight");
  EXPECT_EQ(hf_name_for_gguf("blk.3.ffn_up.weight"), "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(hf_name_for_gguf("blk.3.ffn_down.weight"), "model.layers.3.mlp.down_proj.weight");
  EXPECT_THROW(hf_name_for_gguf("rope_freqs.weight"), Error);
  EXPECT_THROW(hf_name_for_gguf("blk.x.attn_q.weight"), Error);
  EXPECT_THROW(hf_name_for_gguf("blk.0.attn_qq.weight"), Error);
}

GgufValue u32v(uint64_t v) {
  GgufValue x;
  x.type = GgufValueType::UINT32;
  x.u = v;
  return x;
}

TEST(Gguf, ModelConfigQwen2AndMissingKeys) {
  GgufFile f;
  f.path = "mem.gguf";
  GgufValue arch;
  arch.type = GgufValueType::STRING;
  arch.s = "qwen2";
  f.metadata["general.architecture"] = arch;
  f.metadata["qwen2.context_length"] = u32v(256);
  f.metadata["qwen2.embedding_length"] = u32v(64);
  f.metadata["qwen2.feed_forward_length"] = u32v(96);
  f.metadata["qwen2.block_count"] = u32v(2);
  f.metadata["qwen2.attention.head_count"] = u32v(4);
  f.metadata["qwen2.attention.head_count_kv"] = u32v(2);
  GgufValue eps;
  eps.type = GgufValueType::FLOAT32;
  eps.f = 1e-6;
  f.metadata["qwen2.attention.layer_norm_rms_epsilon"] = eps;
  GgufValue toks;
  toks.type = GgufValueType::ARRAY;
  toks.elem_type = GgufValueType::STRING;
  toks.array.resize(77);
  f.metadata["tokenizer.ggml.tokens"] = toks;
  ModelConfig c = model_config_from_gguf(f);
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_EQ(c.vocab_size, 77);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);

  f.metadata.erase("qwen2.block_count");
  try {
    model_config_from_gguf(f);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'qwen2.block_count'"), std::string::npos) << e.what();
  }
  f.metadata["general.architecture"].s = "gpt2";
  EXPECT_THROW(model_config_from_gguf(f), Error);
}

}  // namespace
}  // namespace temper
