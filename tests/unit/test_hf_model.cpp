// The model as a Hugging Face directory: save then load is bit-exact (f32 and bf16, one
// file and a sharded index), tensor-parallel ranks load their own slices, and a bad
// checkpoint (missing tensor, wrong shape, truncated file, a tensor the model would not
// use) is an error naming the file and the tensor; rotary inv_freq buffers and a tied
// model's copy of the embedding as lm_head.weight are the tensors that may go unused.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/hf_model.h"
#include "io/safetensors.h"
#include "support/rank_only_comm.h"
#include "support/test_util.h"

namespace temper {
namespace {

ModelConfig small(bool tied) {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  c.tie_word_embeddings = tied;
  c.attention_bias = true;
  return c;
}

std::vector<uint8_t> raw(Backend& b, const Tensor& t) {
  std::vector<uint8_t> v(t.nbytes());
  b.copy_to_host(v.data(), t);
  return v;
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

TEST(HfModel, SaveThenLoadIsBitExact) {
  auto cpu = make_backend("cpu");
  for (DType t : {DType::F32, DType::BF16}) {
    for (bool tied : {false, true}) {
      auto dir = test::temp_dir(fmt::format("hf_roundtrip_{}_{}", dtype_name(t), tied));
      Transformer a(small(tied), *cpu, t);
      {  // the CPU backend initialises in f32; bf16 values are that, rounded
        Transformer f32(small(tied), *cpu, DType::F32);
        f32.init_weights(7);
        cpu->copy(a.params().flat_values(), f32.params().flat_values());
      }
      save_hf_model(a, dir.string());
      SafetensorsFile f = read_safetensors((dir / "model.safetensors").string());
      EXPECT_EQ(f.metadata.at("format"), "pt");
      EXPECT_EQ(f.tensors.count("lm_head.weight"), tied ? 0u : 1u);
      EXPECT_EQ(f.tensors.at("model.norm.weight").dtype, t == DType::F32 ? "F32" : "BF16");
      ModelConfig back = load_hf_config((dir / "config.json").string());
      EXPECT_EQ(back.num_parameters(), a.config().num_parameters());
      Transformer b(back, *cpu, t);
      load_hf_weights(b, dir.string());
      EXPECT_EQ(raw(*cpu, a.params().flat_values()), raw(*cpu, b.params().flat_values()));
    }
  }
}

TEST(HfModel, ShardedIndexLoads) {
  auto cpu = make_backend("cpu");
  auto dir = test::temp_dir("hf_sharded");
  Transformer a(small(false), *cpu, DType::F32);
  a.init_weights(3);
  save_hf_model(a, dir.string());
  SafetensorsFile whole = read_safetensors((dir / "model.safetensors").string());
  std::filesystem::remove(dir / "model.safetensors");
  SafetensorsFile parts[2];
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  int i = 0;
  for (auto& [name, t] : whole.tensors) {
    const int k = i++ % 2;
    parts[k].tensors[name] = t;
    index["weight_map"][name] = fmt::format("model-0000{}-of-00002.safetensors", k + 1);
  }
  for (int k = 0; k < 2; ++k)
    write_safetensors((dir / fmt::format("model-0000{}-of-00002.safetensors", k + 1)).string(), parts[k]);
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  Transformer b(small(false), *cpu, DType::F32);
  load_hf_weights(b, dir.string());
  EXPECT_EQ(raw(*cpu, a.params().flat_values()), raw(*cpu, b.params().flat_values()));
}

TEST(HfModel, TensorParallelRanksLoadTheirSlices) {
  auto cpu = make_backend("cpu");
  auto dir = test::temp_dir("hf_tp");
  Transformer full(small(false), *cpu, DType::F32);
  full.init_weights(5);
  save_hf_model(full, dir.string());
  for (int rank : {0, 1}) {
    test::RankOnlyComm comm(rank, 2);
    Transformer shard(small(false), *cpu, DType::F32, 1, TensorParallel(comm));
    load_hf_weights(shard, dir.string());
    // A freshly initialised shard draws the same values as the full tensor's slice, so
    // loading and initialising must agree element for element.
    Transformer init(small(false), *cpu, DType::F32, 1, TensorParallel(comm));
    init.init_weights(5);
    EXPECT_EQ(raw(*cpu, shard.params().flat_values()), raw(*cpu, init.params().flat_values()));
    // And explicitly: o_proj is split by columns, q_proj by rows.
    std::vector<float> o_full = test::to_host(*cpu, full.params().at("model.layers.1.self_attn.o_proj.weight").value);
    std::vector<float> o_mine = test::to_host(*cpu, shard.params().at("model.layers.1.self_attn.o_proj.weight").value);
    const int64_t cols = 32 / 2;  // q_dim 32 over 2 ranks
    for (int64_t r = 0; r < 32; ++r)
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(o_mine[r * cols + c], o_full[r * 32 + rank * cols + c]);
  }
}

TEST(HfModel, BadCheckpointsNameFileAndTensor) {
  auto cpu = make_backend("cpu");
  auto dir = test::temp_dir("hf_bad");
  Transformer a(small(false), *cpu, DType::F32);
  a.init_weights(1);
  save_hf_model(a, dir.string());
  const std::string st = (dir / "model.safetensors").string();
  // Another hidden size: every matrix has the wrong shape.
  ModelConfig wider = small(false);
  wider.hidden_size = 64;
  Transformer w(wider, *cpu, DType::F32);
  expect_error([&] { load_hf_weights(w, dir.string()); },
               {dir.string(), "model.embed_tokens.weight", "[64, 32]", "[64, 64]"});
  // A missing tensor.
  SafetensorsFile f = read_safetensors(st);
  f.tensors.erase("model.layers.1.mlp.up_proj.weight");
  write_safetensors(st, f);
  Transformer b(small(false), *cpu, DType::F32);
  expect_error([&] { load_hf_weights(b, dir.string()); }, {"model.layers.1.mlp.up_proj.weight", "missing"});
  // A truncated file.
  const auto size = std::filesystem::file_size(st);
  std::filesystem::resize_file(st, size / 2);
  expect_error([&] { load_hf_weights(b, dir.string()); }, {st});
  // No weights at all.
  std::filesystem::remove(st);
  expect_error([&] { load_hf_weights(b, dir.string()); }, {"neither model.safetensors"});
}

TEST(HfModel, UnusedTensorsAreErrorsUnlessHarmless) {
  auto cpu = make_backend("cpu");
  auto dir = test::temp_dir("hf_unused");
  const std::string st = (dir / "model.safetensors").string();
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    Transformer a(small(tied), *cpu, DType::F32);
    a.init_weights(2);
    save_hf_model(a, dir.string());
    const SafetensorsFile saved = read_safetensors(st);
    auto load_with = [&](const std::function<void(SafetensorsFile&)>& edit) {
      SafetensorsFile f = saved;
      edit(f);
      write_safetensors(st, f);
      Transformer b(small(tied), *cpu, DType::F32);
      load_hf_weights(b, dir.string());
      EXPECT_EQ(raw(*cpu, a.params().flat_values()), raw(*cpu, b.params().flat_values()));
    };
    // Harmless: rotary buffers (old and new places), and for a tied model the embedding
    // stored again as lm_head.weight.
    load_with([&](SafetensorsFile& f) {
      f.tensors["model.rotary_emb.inv_freq"] = safetensors_f32(std::vector<float>(4, 1.0f), {4});
      f.tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = safetensors_f32(std::vector<float>(4, 1.0f), {4});
      if (tied) f.tensors["lm_head.weight"] = f.tensors.at("model.embed_tokens.weight");
    });
    // An output-projection bias (HF Llama's attention_bias also biases o_proj): an error
    // naming it, as is a tied model's lm_head.weight that is not the embedding.
    expect_error([&] {
      load_with([&](SafetensorsFile& f) {
        f.tensors["model.layers.1.self_attn.o_proj.bias"] = safetensors_f32(std::vector<float>(32, 0.5f), {32});
      });
    }, {dir.string(), "'model.layers.1.self_attn.o_proj.bias' is not used"});
    if (tied) {
      expect_error([&] {
        load_with([&](SafetensorsFile& f) {
          SafetensorsEntry head = f.tensors.at("model.embed_tokens.weight");
          head.data[0] ^= 1;
          f.tensors["lm_head.weight"] = head;
        });
      }, {dir.string(), "'lm_head.weight' is not used"});
    }
  }
  // In a sharded checkpoint, a shard holding only unused tensors counts too.
  Transformer a(small(false), *cpu, DType::F32);
  save_hf_model(a, dir.string());
  SafetensorsFile extra;
  extra.tensors["model.layers.0.self_attn.o_proj.bias"] = safetensors_f32(std::vector<float>(32, 0.5f), {32});
  extra.tensors["model.layers.1.self_attn.o_proj.bias"] = extra.tensors.begin()->second;
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(), extra);
  std::filesystem::rename(st, dir / "model-00001-of-00002.safetensors");
  nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
  for (auto& [name, t] : read_safetensors((dir / "model-00001-of-00002.safetensors").string()).tensors)
    index["weight_map"][name] = "model-00001-of-00002.safetensors";
  for (auto& [name, t] : extra.tensors) index["weight_map"][name] = "model-00002-of-00002.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  Transformer b(small(false), *cpu, DType::F32);
  expect_error([&] { load_hf_weights(b, dir.string()); },
               {"'model.layers.0.self_attn.o_proj.bias' is not used", "nor are 1 more: model.layers.1.self_attn.o_proj.bias"});
}

}  // namespace
}  // namespace temper
