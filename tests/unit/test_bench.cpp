// The FLOP count behind TFLOP/s and MFU, recomputed here matrix by matrix from the
// Llama 3.2 1B config (docs/user-guide.md, `temper bench`: 6 per weight per token for the GEMMs, forward and
// both backward GEMMs, plus 12·L·H·Q·T for attention scores and values).
#include <gtest/gtest.h>

#include "model/config.h"
#include "train/bench.h"

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

}  // namespace
}  // namespace temper
