// The KV-cache decoder on the GPU against the CPU: the same Philox-initialised weights on
// both backends, the same tokens fed as a prefill and then one at a time (so the CUDA
// attention runs with cached prefix keys), with and without a sliding window. Logits at
// every position agree within 1e-4 in f32 and 5e-2 in bf16 (as the whole-model training
// step test), and greedy generation picks the same tokens in f32. Skipped without a GPU.
#include "gpu_fixture.h"

#include "generate/generate.h"

namespace temper {
namespace {

ModelConfig tiny(int64_t window) {
  ModelConfig c;
  c.vocab_size = 300;
  c.hidden_size = 128;
  c.intermediate_size = 344;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 256;
  c.initializer_range = 0.05;
  c.sliding_window = window;
  return c;
}

std::vector<int32_t> tokens(int64_t n) {
  Rng rng(rng_stream(5, RngPurpose::Test, 2));
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng.below(300));
  return t;
}

class CudaGenerate : public GpuTest {
 protected:
  // Logits [n, V] of a prefill of `prefill` tokens followed by single steps.
  std::vector<float> cached_logits(Backend& b, DType dtype, int64_t window,
                                   const std::vector<int32_t>& t, int64_t prefill) {
    Transformer m(tiny(window), b, dtype, 1, TensorParallel{}, false);
    m.init_weights(7);
    CachedDecoder dec(m, 96);
    std::vector<float> all = dec.forward(std::span(t).first(prefill), true);
    for (size_t i = prefill; i < t.size(); ++i) {
      const std::vector<float> row = dec.forward(std::span(t).subspan(i, 1));
      all.insert(all.end(), row.begin(), row.end());
    }
    return all;
  }
  std::vector<int32_t> greedy(Backend& b, const std::vector<int32_t>& prompt) {
    Transformer m(tiny(0), b, DType::F32, 1, TensorParallel{}, false);
    m.init_weights(7);
    CachedDecoder dec(m, 96);
    GenerateOptions o;
    o.max_new_tokens = 24;
    return generate(dec, prompt, o).tokens;
  }
};

TEST_F(CudaGenerate, CachedLogitsMatchCpu) {
  const std::vector<int32_t> t = tokens(70);
  for (int64_t window : {0, 16}) {
    const auto want = cached_logits(*cpu_, DType::F32, window, t, 40);
    const auto f32 = cached_logits(*gpu_, DType::F32, window, t, 40);
    const auto bf16 = cached_logits(*gpu_, DType::BF16, window, t, 40);
    ASSERT_EQ(f32.size(), want.size());
    for (float x : bf16) ASSERT_FALSE(std::isnan(x)) << "bf16 logits hold NaN";
    EXPECT_LE(test::rel_error(f32, want), 1e-4) << "f32, window " << window;
    EXPECT_LE(test::rel_error(bf16, want), 5e-2) << "bf16, window " << window;
  }
}

TEST_F(CudaGenerate, GreedyTokensMatchCpu) {
  const std::vector<int32_t> prompt = tokens(10);
  EXPECT_EQ(greedy(*gpu_, prompt), greedy(*cpu_, prompt));
}

}  // namespace
}  // namespace temper
