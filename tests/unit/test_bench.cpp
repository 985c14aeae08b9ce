// The FLOP count behind TFLOP/s and MFU, recomputed here matrix by matrix from the
// Llama 3.2 1B config (docs/user-guide.md, `temper bench`: 6 per weight per token for the GEMMs, forward and
// both backward GEMMs, plus 12·L·H·Q·T for attention scores and values).
#include <gtest/gtest.h>

#include <set>

#include "model/config.h"
#include "train/bench.h"
#include "train/run_config.h"

namespace temper {
namespace {

TEST(Bench, FlopsPerTokenCountsEveryGemmWeightAndAttention) {
  ModelConfig c = load_hf_config(std::string(TEMPER_SOURCE_DIR) + "/configs/models/llama-3.2-1b.json");
  const double C = 2048, F = 8192, L = 16, H = 32, Hkv = 8, Q = 64, V = 128256, T = 2048;
  const double per_layer = C * H * Q + 2 * C * Hkv * Q + H * Q * C + 3 * C * F;  // q,k,v,o + mlp
  const double gemm_weights = L * per_layer + V * C;  // + the (tied) LM head
  const double norms = 2 * L * C + C;  // counted as parameters too (negligible)
  const double attention = 12 * L * H * Q * T;
  const double n = gemm_weights + norms;
  EXPECT_DOUBLE_EQ(model_flops_per_token(c, 2048, 0, n), 6 * n + attention);  // full
  EXPECT_DOUBLE_EQ(model_flops_per_token(c, 2048, 0, 0), 4 * n + attention);  // frozen base
  // LoRA r = 16 on q and v: forward, input gradient and weight gradients of A and B.
  const double lora = L * 16 * ((C + H * Q) + (C + Hkv * Q));
  EXPECT_DOUBLE_EQ(model_flops_per_token(c, 2048, lora, lora), 4 * n + 6 * lora + attention);
}

TEST(Bench, KnownPeaks) {
  EXPECT_EQ(known_peak_tflops("NVIDIA H100 80GB HBM3"), 989.0);
  EXPECT_EQ(known_peak_tflops("NVIDIA H100 PCIe"), 756.0);
  EXPECT_EQ(known_peak_tflops("NVIDIA H200"), 989.0);
  EXPECT_EQ(known_peak_tflops("cpu (2 OpenMP threads)"), 0.0);
}

// `temper bench --profile` on the CPU (host clock): every op of a step goes through the
// profiler, so the ops' times add up to nearly the whole step (what is left is host work
// between ops), and the GEMM FLOPs it counts are exactly 6 per GEMM weight per token for
// full fine-tuning without recompute: forward, input gradient and weight gradient of every
// projection and of the (tied) LM head.
TEST(Bench, ProfileAccountsForTheWholeStepOnTheCpu) {
  const RunConfig c = load_run_config(std::string(TEMPER_SOURCE_DIR) + "/configs/recipes/tiny.yaml",
                                      {"train.micro_batch_size=4", "train.seq_len=64",
                                       "train.grad_accum=2", "train.recompute=false"});
  BenchOptions o;
  o.steps = 3;
  o.warmup_steps = 1;
  o.peft = "full";
  o.profile = true;
  const nlohmann::json r = run_bench(c, o);
  ASSERT_TRUE(r.contains("profile"));
  const nlohmann::json& p = r["profile"];
  EXPECT_EQ(p["steps"].get<int64_t>(), 3);
  EXPECT_EQ(p["clock"].get<std::string>(), "host clock");
  const double step = p["step_seconds"].get<double>(), ops = p["op_seconds_per_step"].get<double>();
  EXPECT_GT(ops, 0.8 * step) << "ops account for too little of the step: an op bypasses the profiler?";
  EXPECT_LE(ops, step * 1.0001) << "intervals on the host clock cannot add up to more than the step";

  std::set<std::string> names;
  double sum = 0, gemm_flops = 0;
  for (const auto& op : p["ops"]) {
    names.insert(op["op"].get<std::string>());
    sum += op["seconds_per_step"].get<double>();
    if (op.contains("flops_per_step")) gemm_flops += op["flops_per_step"].get<double>();
  }
  EXPECT_NEAR(sum, ops, 1e-9 * ops + 1e-12);
  for (const char* want : {"embedding_forward", "embedding_backward", "rmsnorm_forward",
                           "rmsnorm_backward", "linear_forward", "linear_backward", "rope_forward",
                           "rope_backward", "attention_forward", "attention_backward",
                           "swiglu_forward", "swiglu_backward", "lm_head_cross_entropy",
                           "adamw_update"})
    EXPECT_TRUE(names.count(want)) << want << " missing from the profile";

  const ModelConfig mc = load_hf_config(std::string(TEMPER_SOURCE_DIR) + "/configs/models/tiny.json");
  const double C = double(mc.hidden_size), F = double(mc.intermediate_size), D = double(mc.head_dim);
  const double H = double(mc.num_attention_heads), Hkv = double(mc.num_key_value_heads);
  const double per_layer = C * H * D + 2 * C * Hkv * D + H * D * C + 3 * C * F;
  const double weights = double(mc.num_hidden_layers) * per_layer + double(mc.vocab_size) * C;
  const double tokens = 2.0 * 4 * 64;  // grad_accum × rows × seq_len
  EXPECT_DOUBLE_EQ(p["gemm_flops_per_step"].get<double>(), 6 * weights * tokens);
  EXPECT_DOUBLE_EQ(gemm_flops, 6 * weights * tokens);

  // The table names every op and its GEMM shapes (tokens × in → out).
  const std::string table = format_profile(p);
  EXPECT_NE(table.find("host clock"), std::string::npos) << table;
  EXPECT_NE(table.find("256×64 → 176"), std::string::npos) << table;  // gate/up projections
}

}  // namespace
}  // namespace temper
