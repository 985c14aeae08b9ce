// Whole-model reference tests against Hugging Face transformers' own model classes
// (tests/reference/hf_model_reference.py: LlamaForCausalLM, Qwen2ForCausalLM and
// MistralForCausalLM built from the config.json Temper writes, eager attention, float64) on
// identical weights and inputs: logits, loss, every parameter gradient, and three AdamW
// steps against torch.optim.AdamW. Variants cover GQA/MQA/MHA, Llama 3 RoPE scaling, a head
// size other than hidden / heads, Qwen2 q/k/v bias, tied embeddings and Mistral's sliding
// window, all on packed documents (transformers runs each document on its own, so
// cross-document leaks would show).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "io/safetensors.h"
#include "model/rope.h"
#include "model/transformer.h"
#include "support/test_util.h"
#include "train/train_step.h"

namespace temper {
namespace {

// fp32 against float64: the norm-wise relative error bound for logits, loss and gradients.
// Each test prints the largest error it saw (AdamW updates included, bound 1e-3): 2.7e-6
// (Llama 3), 4.1e-5 (Qwen2), 2.9e-6 (Mistral); transformers' float32 RoPE angles add ~1e-7.
// 1e-4 leaves room for other shapes, while a wrong mask, scale, bias or RoPE frequency
// gives errors of 1e-2 and more (a sliding window one key wider: 0.45 on the logits).
constexpr double kFp32Bound = 1e-4;

ModelConfig base_config() {
  ModelConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  return c;
}


// The largest relative error check_close saw in this test (printed at its end).
double& worst_error() {
  static double worst = 0;
  return worst;
}

void check_close(const std::vector<float>& ours, const std::vector<float>& ref, double bound,
                 const std::string& what) {
  ASSERT_EQ(ours.size(), ref.size()) << what;
  const double err = test::rel_error(ours, ref);
  EXPECT_LE(err, bound) << what << ": relative error " << err;
  worst_error() = std::max(worst_error(), err);
}

// max_grad_norm > 0 also checks global-norm clipping against torch's clip_grad_norm_.
void run_reference(const std::string& name, ModelConfig config, double max_grad_norm) {
  auto cpu = make_backend("cpu");
  Transformer model(config, *cpu, DType::F32);
  // Matrices N(0, 0.2), norm weights 1 + N(0, 0.1), biases N(0, 0.1).
  test::randomize_parameters(model.params(), *cpu, 42, 0.2f, 0.1f, 0.1f);
  const ModelConfig& c = model.config();
  MicroBatch batch = test::packed_batch(c.vocab_size, 3);
  ASSERT_GT(batch.cu_seqlens.size(), 5u) << "the batch should hold several documents";

  const float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  const int steps = 3;
  SafetensorsFile in;
  in.metadata = {{"config", model_config_to_hf_json(c).dump()},
                 {"lr", std::to_string(lr)},
                 {"beta1", std::to_string(beta1)},
                 {"beta2", std::to_string(beta2)},
                 {"eps", "1e-8"},
                 {"weight_decay", std::to_string(wd)},
                 {"steps", std::to_string(steps)},
                 {"max_grad_norm", std::to_string(max_grad_norm)}};
  std::map<std::string, std::vector<float>> initial;
  for (auto& p : model.params().all()) {
    initial[p.name] = test::to_host(*cpu, p.value);
    std::vector<int64_t> shape(p.shape.dims.begin(), p.shape.dims.begin() + p.shape.ndim);
    in.tensors[p.name] = safetensors_f32(initial[p.name], shape);
  }
  const int64_t T = batch.tokens();
  in.tensors["input.ids"] = safetensors_i32(batch.ids, {T});
  in.tensors["input.targets"] = safetensors_i32(batch.targets, {T});
  in.tensors["input.positions"] = safetensors_i32(batch.positions, {T});
  in.tensors["input.cu_seqlens"] =
      safetensors_i32(batch.cu_seqlens, {int64_t(batch.cu_seqlens.size())});
  auto dir = test::temp_dir("model_reference_" + name);
  write_safetensors((dir / "in.safetensors").string(), in);

  std::string output;
  ASSERT_EQ(test::run_python("reference/hf_model_reference.py",
                             {"model", (dir / "in.safetensors").string(),
                              (dir / "out.safetensors").string()},
                             &output),
            0)
      << output;
  SafetensorsFile ref = read_safetensors((dir / "out.safetensors").string());

  // Logits and loss.
  check_close(model.logits(batch), ref.at("logits").to_f32(), kFp32Bound, name + " logits");
  model.params().zero_grads();
  LossSum loss = model.forward_backward(batch, 1.0f / float(batch.target_count()));
  const double ref_loss = ref.at("loss").to_f32()[0];
  EXPECT_NEAR(loss.loss / double(loss.tokens), ref_loss, kFp32Bound * std::abs(ref_loss)) << name;
  EXPECT_EQ(loss.tokens, batch.target_count());

  // Every parameter gradient.
  for (auto& p : model.params().all())
    check_close(test::to_host(*cpu, p.grad), ref.at("grad." + p.name).to_f32(), kFp32Bound,
                name + " grad " + p.name);

  // Three AdamW steps on the same batch at a constant lr (clipped when asked).
  AdamWConfig oc{beta1, beta2, eps, wd, false};
  AdamW opt(model.params(), *cpu, oc);
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s) losses.push_back(float(train_step(model, opt, {batch}, lr, max_grad_norm).loss));
  check_close(losses, ref.at("adamw.losses").to_f32(), kFp32Bound, name + " adamw losses");
  for (auto& p : model.params().all()) {
    // Compare the updates (after − before), not the parameters, so the bound is not
    // diluted by the unchanged part of each weight.
    std::vector<float> ours = test::to_host(*cpu, p.value), theirs = ref.at("adamw." + p.name).to_f32();
    const auto& before = initial[p.name];
    for (size_t i = 0; i < ours.size(); ++i) {
      ours[i] -= before[i];
      theirs[i] -= before[i];
    }
    check_close(ours, theirs, 1e-3, name + " adamw update " + p.name);
  }
  std::printf("[ %s ] worst relative error against transformers: %.2e\n", name.c_str(),
              worst_error());
}

TEST(ModelReference, LlamaGqaWithLlama3RopeScaling) {
  ModelConfig c = base_config();
  c.head_dim = 12;  // head_dim * heads = 48 != hidden 32, as some models have
  // original context 8 so the Llama 3 scaling changes every frequency band used here.
  c.rope_scaling = {"llama3", 4.0, 1.0, 4.0, 8};
  run_reference("llama3_gqa", c, 0.0);
}

TEST(ModelReference, Qwen2BiasTiedEmbeddingsMqa) {
  ModelConfig c = base_config();
  c.model_type = "qwen2";
  c.num_key_value_heads = 1;
  c.tie_word_embeddings = true;
  // head_dim stays hidden / heads: transformers' Qwen2Attention takes no other.
  run_reference("qwen2_tied", c, 0.5);  // gradient norms here are ~1-3: clipping is active
}

TEST(ModelReference, MistralSlidingWindowMha) {
  ModelConfig c = base_config();
  c.model_type = "mistral";
  c.num_key_value_heads = 4;
  c.sliding_window = 3;
  run_reference("mistral_window", c, 0.5);
}

// RoPE with the Llama 3.2 scaling at long positions, op level, against transformers'
// llama3 init function and apply_rotary_pos_emb in float64.
TEST(ModelReference, RopeLlama3ScalingLongPositions) {
  ModelConfig c = base_config();
  c.hidden_size = 128;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.rope_theta = 500000.0;
  c.rope_scaling = {"llama3", 32.0, 1.0, 4.0, 8192};
  c.max_position_embeddings = 32768;
  c.finalize();
  auto cpu = make_backend("cpu");
  const int64_t T = 16, H = 2, D = 64, P = c.max_position_embeddings;
  Rng rng(rng_stream(5, RngPurpose::Test, 1));
  std::vector<float> x(T * H * D);
  for (auto& v : x) v = rng.normal();
  std::vector<int32_t> pos(T);
  for (auto& p : pos) p = int32_t(rng.below(uint64_t(P)));
  std::vector<float> cos, sin;
  rope_tables(c, P, cos, sin);
  HostMemory mem;
  Arena arena(mem, "rope test");
  Tensor tx = arena.allocate(DType::F32, Shape{T, H, D}), tp = arena.allocate(DType::I32, Shape{T});
  Tensor tc = arena.allocate(DType::F32, Shape{P, D / 2}), ts = arena.allocate(DType::F32, Shape{P, D / 2});
  cpu->copy_from_host(tx, x.data());
  cpu->copy_from_host(tp, pos.data());
  cpu->copy_from_host(tc, cos.data());
  cpu->copy_from_host(ts, sin.data());
  cpu->rope_forward(tx, tp, tc, ts);

  auto dir = test::temp_dir("rope_reference");
  SafetensorsFile in;
  in.metadata = {{"config", model_config_to_hf_json(c).dump()}};
  in.tensors["x"] = safetensors_f32(x, {T, H, D});
  in.tensors["positions"] = safetensors_i32(pos, {T});
  write_safetensors((dir / "in.safetensors").string(), in);
  std::string output;
  ASSERT_EQ(test::run_python("reference/hf_model_reference.py",
                             {"rope", (dir / "in.safetensors").string(), (dir / "out.safetensors").string()},
                             &output),
            0)
      << output;
  SafetensorsFile ref = read_safetensors((dir / "out.safetensors").string());
  std::vector<double> inv = rope_inverse_frequencies(c);
  std::vector<float> inv_f(inv.begin(), inv.end());
  check_close(inv_f, ref.at("inv_freq").to_f32(), 1e-6, "inverse frequencies");
  check_close(test::to_host(*cpu, tx), ref.at("y").to_f32(), kFp32Bound, "rope output");
}

}  // namespace
}  // namespace temper
