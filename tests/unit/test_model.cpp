// Whole-model tests without an outside reference: finite differences of the loss against
// every parameter tensor's gradient, recompute equivalence, and gradient accumulation
// over uneven micro-batches against one batch.
#include <gtest/gtest.h>

#include <cmath>

#include "data/loader.h"
#include "model/transformer.h"
#include "support/test_util.h"
#include "train/train_step.h"

namespace temper {
namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  c.attention_bias = true;
  return c;
}

// Documents of the given lengths with random tokens, in one batch of `rows` × `seq_len`.
MicroBatch batch_of(const std::vector<int>& lengths, int64_t rows, int64_t seq_len, int64_t vocab,
                    uint64_t seed) {
  Rng rng(rng_stream(seed, RngPurpose::Test, 11));
  BatchBuilder b(rows, seq_len, 0);
  for (int len : lengths) {
    std::vector<int32_t> t(len);
    for (auto& x : t) x = int32_t(rng.below(uint64_t(vocab)));
    Document d = causal_document(t);
    b.add_document(d.tokens, d.targets);
  }
  return b.finish();
}

double mean_loss(Transformer& m, const MicroBatch& b) {
  LossSum s = m.forward_loss(b);
  return s.loss / double(s.tokens);
}

// Directional finite difference per parameter tensor: (L(θ+hu) − L(θ−hu)) / 2h against
// <∇L, u>, u a random ±1 direction over the tensor. Fails on any wrong backward path.
TEST(Model, FiniteDifferenceGradientsOfEveryParameter) {
  auto cpu = make_backend("cpu");
  Transformer m(tiny_config(), *cpu, DType::F32);
  test::randomize_parameters(m.params(), *cpu, 1, 0.3f, 0.2f, 0.3f);
  MicroBatch b = batch_of({5, 7, 4}, 2, 8, 40, 2);
  m.params().zero_grads();
  m.forward_backward(b, 1.0f / float(b.target_count()));
  const float h = 1e-3f;  // small enough for truncation error, large for fp32 noise
  for (auto& p : m.params().all()) {
    const auto [analytic, numeric] = test::directional_derivative(
        *cpu, p, test::to_host(*cpu, p.grad), h, 3, [&] { return mean_loss(m, b); });
    EXPECT_NEAR(analytic, numeric, 5e-3 * std::abs(numeric) + 5e-4) << p.name;
  }
}

TEST(Model, RecomputeGivesIdenticalGradients) {
  auto cpu = make_backend("cpu");
  Transformer m(tiny_config(), *cpu, DType::F32);
  test::randomize_parameters(m.params(), *cpu, 4, 0.3f, 0.2f, 0.3f);
  MicroBatch b = batch_of({9, 3, 6, 6}, 3, 8, 40, 5);
  m.params().zero_grads();
  LossSum a = m.forward_backward(b, 0.1f);
  std::vector<float> ga = test::to_host(*cpu, m.params().flat_grads());
  m.set_recompute(true);
  m.params().zero_grads();
  LossSum r = m.forward_backward(b, 0.1f);
  std::vector<float> gr = test::to_host(*cpu, m.params().flat_grads());
  EXPECT_EQ(a.loss, r.loss);
  EXPECT_EQ(ga, gr);  // the same kernels on the same inputs: bit-identical
}

// Four micro-batches of uneven target counts give the same update as one batch holding
// the same documents: the loss is normalised over the whole global batch.
TEST(Model, AccumulationOverUnevenMicroBatchesEqualsOneBatch) {
  auto cpu = make_backend("cpu");
  const std::vector<std::vector<int>> parts = {{7}, {3, 2}, {8}, {4, 1, 2}};
  std::vector<MicroBatch> micro;
  std::vector<int> all;
  for (size_t i = 0; i < parts.size(); ++i) {
    micro.push_back(batch_of(parts[i], 1, 8, 40, 100 + i));
    all.insert(all.end(), parts[i].begin(), parts[i].end());
  }
  // The same documents, packed as four rows of one batch (each row = one micro-batch).
  MicroBatch whole;
  whole.rows = 4;
  whole.seq_len = 8;
  whole.cu_seqlens = {0};
  for (auto& mb : micro) {
    const int32_t base = int32_t(whole.ids.size());
    whole.ids.insert(whole.ids.end(), mb.ids.begin(), mb.ids.end());
    whole.targets.insert(whole.targets.end(), mb.targets.begin(), mb.targets.end());
    whole.positions.insert(whole.positions.end(), mb.positions.begin(), mb.positions.end());
    for (size_t d = 1; d < mb.cu_seqlens.size(); ++d) whole.cu_seqlens.push_back(base + mb.cu_seqlens[d]);
  }
  int64_t counts[4];
  for (int i = 0; i < 4; ++i) counts[i] = micro[i].target_count();
  ASSERT_NE(counts[0], counts[1]);  // uneven on purpose

  auto run = [&](const std::vector<MicroBatch>& batches, double* loss) {
    Transformer m(tiny_config(), *cpu, DType::F32);
    test::randomize_parameters(m.params(), *cpu, 9, 0.3f, 0.2f, 0.3f);
    AdamW opt(m.params(), *cpu, AdamWConfig{0.9f, 0.95f, 1e-8f, 0.1f, false});
    *loss = train_step(m, opt, batches, 1e-2f, 1.0).loss;
    return test::to_host(*cpu, m.params().flat_values());
  };
  double loss_micro = 0, loss_whole = 0;
  std::vector<float> p_micro = run(micro, &loss_micro), p_whole = run({whole}, &loss_whole);
  EXPECT_NEAR(loss_micro, loss_whole, 1e-6 * loss_whole);
  EXPECT_LE(test::rel_error(p_micro, p_whole), 1e-6);
}

}  // namespace
}  // namespace temper
