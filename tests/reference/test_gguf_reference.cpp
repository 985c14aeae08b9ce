// GGUF reader against the PyPI `gguf` package (tests/reference/gguf_reference.py): the
// package's GGUFWriter writes a small llama file with tensors of types F32, F16, BF16,
// Q8_0, Q4_0 and Q4_1 (quantized by gguf.quants); our reader must read the same metadata
// and dequantize every tensor to exactly the values of the package's GGUFReader +
// gguf.quants.dequantize, and our unpermutation of the llama Q/K must give back the HF
// originals exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "support/test_util.h"

namespace temper {
namespace {

// The script runs once per process; its failure fails every test (in SetUp, not in
// SetUpTestSuite, where gtest would report the tests as skipped).
struct ScriptRun {
  std::string dir, error;
};
const ScriptRun& script_run() {
  static const ScriptRun run = [] {
    ScriptRun r{test::temp_dir("gguf_reference").string(), ""};
    std::string out;
    if (test::run_python("reference/gguf_reference.py", {r.dir}, &out) != 0)
      r.error = "gguf_reference.py failed:\n" + out;
    return r;
  }();
  return run;
}

class GgufReference : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(script_run().error, "");
    dir_ = script_run().dir;
  }
  std::string dir_;
};

void expect_same(const std::vector<float>& ours, const std::vector<float>& ref,
                 const std::string& what) {
  ASSERT_EQ(ours.size(), ref.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    const double tol = 1e-6 * std::fabs(double(ref[i]));
    if (!(std::fabs(double(ours[i]) - double(ref[i])) <= tol) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: ours " << ours[i] << ", gguf " << ref[i];
  }
  EXPECT_EQ(bad, 0u) << what;
}

TEST_F(GgufReference, TensorsMatchPackageDequantization) {
  GgufFile f = read_gguf(dir_ + "/model.gguf");
  SafetensorsFile ref = read_safetensors(dir_ + "/ref.safetensors");
  auto types = nlohmann::json::parse(ref.metadata.at("types"));
  EXPECT_EQ(f.alignment, std::stoull(ref.metadata.at("alignment")));
  EXPECT_EQ(f.data_offset, std::stoull(ref.metadata.at("data_offset")));
  ASSERT_EQ(f.tensors.size(), types.size());
  std::set<std::string> seen_types;
  for (const GgufTensor& t : f.tensors) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.type, types.at(t.name).get<uint32_t>());
    seen_types.insert(ggml_type_name(t.type));
    const SafetensorsEntry& e = ref.at("deq." + t.name);
    EXPECT_EQ(t.shape, e.shape);
    expect_same(dequantize(t), e.to_f32(), t.name);
  }
  EXPECT_EQ(seen_types, (std::set<std::string>{"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"}));
  EXPECT_EQ(f.tensor("extra.cube").shape, (std::vector<int64_t>{2, 3, 64}));
  EXPECT_EQ(f.tensor("extra.cube").ne, (std::vector<int64_t>{64, 3, 2}));
}

TEST_F(GgufReference, MetadataMatches) {
  GgufFile f = read_gguf(dir_ + "/model.gguf");
  SafetensorsFile ref = read_safetensors(dir_ + "/ref.safetensors");
  EXPECT_EQ(f.version, 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("general.name"), "tiny-test");
  auto tokens = nlohmann::json::parse(ref.metadata.at("tokens")).get<std::vector<std::string>>();
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"), tokens);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.merges"),
            (std::vector<std::string>{"Ġ t", "h e", "Ġt he"}));
  std::vector<int64_t> types = f.get_int_array("tokenizer.ggml.token_type");
  ASSERT_EQ(types.size(), tokens.size());
  EXPECT_EQ(types[0], 3);
  EXPECT_EQ(types[5], 1);
  EXPECT_EQ(f.get_string("tokenizer.chat_template"), ref.metadata.at("chat_template"));
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "smollm");
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(f.get_int("test.u8"), 200);
  EXPECT_EQ(f.get_int("test.i8"), -100);
  EXPECT_EQ(f.get_int("test.u16"), 60000);
  EXPECT_EQ(f.get_int("test.i16"), -30000);
  EXPECT_EQ(f.get_int("test.u32"), 4000000000LL);
  EXPECT_EQ(f.get_int("test.i32"), -2000000000LL);
  EXPECT_EQ(f.get("test.u64").type, GgufValueType::UINT64);
  EXPECT_EQ(f.get("test.u64").u, (uint64_t(1) << 63) + 5);
  EXPECT_THROW(f.get_int("test.u64"), Error);  // does not fit in int64
  EXPECT_EQ(f.get_int("test.i64"), -(int64_t(1) << 62) - 3);
  EXPECT_EQ(f.get_float("test.f32"), double(0.1f));
  EXPECT_EQ(f.get_float("test.f64"), 0.1);
  EXPECT_TRUE(f.get_bool("test.bool"));
  EXPECT_EQ(f.get_string("test.string"), "héllo wörld");
  EXPECT_EQ(f.get_int_array("test.arr_i32"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.get("test.arr_f32").array.at(1).f, -1.25);
  EXPECT_EQ(f.get_string_array("test.arr_str"), (std::vector<std::string>{"a", "", "日本"}));

  // Our block-size table agrees with gguf-py's GGML_QUANT_SIZES for every type we both know.
  // (Q8_1 is skipped: gguf-py lists 40 bytes, ggml-common.h's block_q8_1 is 36.)
  auto sizes = nlohmann::json::parse(ref.metadata.at("quant_sizes"));
  int compared = 0;
  for (auto& [id, bs] : sizes.items()) {
    const GgmlTypeInfo* ti = ggml_type_info(uint32_t(std::stoul(id)));
    if (!ti || std::string(ti->name) == "Q8_1") continue;
    EXPECT_EQ(ti->block_size, bs[0].get<int64_t>()) << ti->name;
    EXPECT_EQ(ti->type_size, bs[1].get<int64_t>()) << ti->name;
    ++compared;
  }
  EXPECT_GE(compared, 30);
}

TEST_F(GgufReference, ConfigNamesAndUnpermute) {
  GgufFile f = read_gguf(dir_ + "/model.gguf");
  SafetensorsFile ref = read_safetensors(dir_ + "/ref.safetensors");
  ModelConfig c = model_config_from_gguf(f);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 40);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 96);
  EXPECT_EQ(c.num_hidden_layers, 1);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 128);
  EXPECT_EQ(c.rms_norm_eps, double(1e-5f));
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);

  for (const char* name : {"blk.0.attn_q.weight", "blk.0.attn_k.weight"}) {
    SCOPED_TRACE(name);
    const GgufTensor& t = f.tensor(name);
    EXPECT_EQ(gguf_tensor_to_hf(f, t, c), ref.at(std::string("hf.") + name).to_f32());
    EXPECT_NE(dequantize(t), ref.at(std::string("hf.") + name).to_f32());  // really permuted
  }
  // V is not permuted.
  EXPECT_EQ(gguf_tensor_to_hf(f, f.tensor("blk.0.attn_v.weight"), c),
            dequantize(f.tensor("blk.0.attn_v.weight")));
  std::vector<float> p = ref.at("perm.out").to_f32();
  unpermute_llama_qk(p, 48, 5, 6);
  EXPECT_EQ(p, ref.at("perm.in").to_f32());

  for (const GgufTensor& t : f.tensors)
    if (t.name != "extra.cube") EXPECT_NO_THROW(hf_name_for_gguf(t.name)) << t.name;
}

}  // namespace
}  // namespace temper
