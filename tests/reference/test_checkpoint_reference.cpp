// Checkpoints against independent readers and writers:
//  - h5py reads every tensor of our checkpoints (f32, and bf16 through HDF5's own
//    conversion of our 16-bit float type) with exactly the values we wrote, and the meta;
//  - a model saved by transformers (Llama f32 untied, Qwen2 bf16 tied with q/k/v biases)
//    goes through `convert` and `export` bit-exactly (names, dtypes, shapes, bytes,
//    {"format": "pt"}, tokenizer files), and transformers' logits from the export equal
//    the original's;
//  - a GGUF file written by the gguf package converts to a checkpoint whose export holds
//    the original weights exactly; with the SmolLM2 GGUF's tokenizer in it, the export (of
//    the converted checkpoint, and of a run's checkpoint whose model.path is the GGUF)
//    holds a tokenizer.json that gives the GGUF tokenizer's ids.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "checkpoint/convert.h"
#include "core/error.h"
#include "data/model_tokenizer.h"
#include "io/hf_model.h"
#include "io/safetensors.h"
#include "support/checkpoint_state.h"
#include "support/test_util.h"

namespace temper {
namespace {

ModelConfig small() {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  c.attention_bias = true;
  return c;
}

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

TEST(CheckpointReference, H5pyReadsTheValuesWeWrote) {
  auto cpu = make_backend("cpu");
  for (DType dtype : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const auto dir = test::temp_dir(fmt::format("ckpt_h5py_{}", dtype_name(dtype)));
    Transformer model(small(), *cpu, dtype);
    AdamW opt(model.params(), *cpu, AdamWConfig{});
    test::fill_training_state(model, &opt);
    CheckpointMeta meta;
    meta.step = 12;
    meta.config_yaml = "seed: 3\n";
    const std::string path = (dir / "c.h5").string(), out = (dir / "h5py.safetensors").string();
    write_checkpoint(path, meta, model, &opt, RankState{});

    std::string output;
    ASSERT_EQ(test::run_python("reference/checkpoint_h5py.py", {path, out}, &output), 0) << output;
    const nlohmann::json j = nlohmann::json::parse(output.substr(output.rfind("\n{") + 1));
    EXPECT_EQ(j["meta"]["step"].get<int64_t>(), 12);
    EXPECT_EQ(j["meta"]["format_version"].get<int64_t>(), kCheckpointFormatVersion);
    EXPECT_EQ(j["meta"]["config"].get<std::string>(), "seed: 3\n");
    EXPECT_EQ(j["meta"]["model_dtype"].get<std::string>(), dtype_name(dtype));

    const SafetensorsFile f = read_safetensors(out);
    size_t compared = 0;
    for (const Parameter& p : model.params().all()) {
      const std::string name = "model/" + p.name;
      // What h5py shows without asking for a conversion: float32, for bf16 too (the
      // smallest numpy float holding the bf16 range), so ds[...] is already exact.
      EXPECT_EQ(j["default_dtypes"][name].get<std::string>(), "<f4") << name;
      EXPECT_EQ(j["dtype_attrs"][name].get<std::string>(), dtype_name(dtype)) << name;
      const std::vector<float> got = f.at(name).to_f32();
      const test::StateKind kind = dtype == DType::F32 ? test::kMaster : test::kModel;
      ASSERT_EQ(int64_t(got.size()), p.shape.numel()) << name;
      for (int64_t i = 0; i < p.shape.numel(); ++i)
        ASSERT_EQ(bits(got[size_t(i)]), bits(test::stored_as(dtype, test::state_value(p.name, kind, i))))
            << name << " element " << i;
      for (int k = 0; k < 3; ++k) {
        const std::string opt_name = fmt::format("optim/{}/{}", p.name, k == 0 ? "master" : k == 1 ? "m" : "v");
        const std::vector<float> state = f.at(opt_name).to_f32();
        for (int64_t i = 0; i < p.shape.numel(); ++i)
          ASSERT_EQ(bits(state[size_t(i)]), bits(test::state_value(p.name, test::StateKind(k), i)))
              << opt_name << " element " << i;
        EXPECT_EQ(j["default_dtypes"][opt_name].get<std::string>(), "<f4");
      }
      compared += 4;
    }
    EXPECT_EQ(f.tensors.size(), compared);
  }
}

void hf_round_trip(const std::string& dtype, const std::string& arch) {
  const auto dir = test::temp_dir("ckpt_hf_" + dtype + "_" + arch);
  const std::string original = (dir / "original").string(), exported = (dir / "exported").string();
  const std::string ckpt = (dir / "model.h5").string();
  std::string out;
  ASSERT_EQ(test::run_python("reference/checkpoint_hf.py", {"make", original, dtype, arch}, &out), 0)
      << out;
  convert_to_checkpoint(original, ckpt);
  const CheckpointMeta meta = read_checkpoint_meta(ckpt);
  EXPECT_EQ(meta.model_dtype, dtype == "bfloat16" ? "bf16" : "f32");
  EXPECT_FALSE(meta.has_optimizer);
  export_hf(ckpt, exported);
  ASSERT_EQ(test::run_python("reference/checkpoint_hf.py", {"compare", original, exported}, &out), 0) << out;
  EXPECT_NE(out.find("\nok"), std::string::npos) << out;
}

TEST(CheckpointReference, HfLlamaF32ConvertExportIsBitExact) { hf_round_trip("float32", "llama"); }
TEST(CheckpointReference, HfQwen2Bf16TiedConvertExportIsBitExact) { hf_round_trip("bfloat16", "qwen2"); }

TEST(CheckpointReference, GgufConvertHoldsTheWeights) {
  auto cpu = make_backend("cpu");
  Transformer a(small(), *cpu, DType::F32);
  a.init_weights(5);
  const auto dir = test::temp_dir("ckpt_gguf");
  save_hf_model(a, (dir / "hf").string());
  const std::string gguf = (dir / "model.gguf").string(), ckpt = (dir / "model.h5").string();
  std::string out;
  ASSERT_EQ(test::run_python("reference/gguf_from_hf.py", {(dir / "hf").string(), gguf}, &out), 0) << out;
  convert_to_checkpoint(gguf, ckpt);
  export_hf(ckpt, (dir / "back").string());
  const SafetensorsFile want = read_safetensors((dir / "hf" / "model.safetensors").string());
  const SafetensorsFile got = read_safetensors((dir / "back" / "model.safetensors").string());
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (const auto& [name, e] : want.tensors) {
    ASSERT_TRUE(got.tensors.count(name)) << name;
    EXPECT_EQ(got.at(name).dtype, e.dtype) << name;
    EXPECT_EQ(got.at(name).shape, e.shape) << name;
    EXPECT_TRUE(got.at(name).data == e.data) << name;
  }
  EXPECT_EQ(read_checkpoint_meta(ckpt).source, std::filesystem::absolute(gguf).lexically_normal().string());
}

TEST(CheckpointReference, GgufExportCarriesTheGgufTokenizer) {
  auto cpu = make_backend("cpu");
  ModelConfig c = small();
  c.vocab_size = 49152;  // SmolLM2's vocabulary, whose tokenizer the GGUF carries
  Transformer a(c, *cpu, DType::F32);
  a.init_weights(7);
  const auto dir = test::temp_dir("ckpt_gguf_tokenizer");
  save_hf_model(a, (dir / "hf").string());
  const std::string gguf = (dir / "model.gguf").string(), ckpt = (dir / "model.h5").string();
  std::string out;
  ASSERT_EQ(test::run_python("reference/gguf_from_hf.py", {(dir / "hf").string(), gguf, "smollm2"}, &out), 0)
      << out;
  convert_to_checkpoint(gguf, ckpt);
  // A training run's checkpoint names the GGUF only as model.path in its config.
  const std::string run_ckpt = (dir / "run.h5").string();
  CheckpointMeta m;
  m.config_yaml = fmt::format("model:\n  path: {}\n", gguf);
  write_checkpoint(run_ckpt, m, a, nullptr, RankState{});

  const ModelTokenizer want = load_model_tokenizer(gguf);
  const std::vector<std::string> texts = {
      "Hello, world!", "  two spaces and\ttabs\n\nnew lines", "naïve café — 東京 🎉",
      "def f(x):\n    return x**2  # 12345", "<|im_start|>user\nhi<|im_end|>"};
  for (const std::string& from : {ckpt, run_ckpt}) {
    SCOPED_TRACE(from);
    const std::filesystem::path back = dir / (std::filesystem::path(from).stem().string() + "_hf");
    const std::string summary = export_hf(from, back.string());
    EXPECT_NE(summary.find("tokenizer.json"), std::string::npos) << summary;
    ASSERT_TRUE(std::filesystem::exists(back / "tokenizer.json"));
    const ModelTokenizer got = load_model_tokenizer(back);
    EXPECT_EQ(got.tokenizer.vocab_size(), want.tokenizer.vocab_size());
    EXPECT_EQ(got.bos_id, want.bos_id);
    EXPECT_EQ(got.eos_id, want.eos_id);
    EXPECT_FALSE(want.chat_template.empty());
    EXPECT_EQ(got.chat_template, want.chat_template);
    for (const std::string& t : texts) EXPECT_EQ(got.tokenizer.encode(t), want.tokenizer.encode(t)) << t;
  }
}

}  // namespace
}  // namespace temper
