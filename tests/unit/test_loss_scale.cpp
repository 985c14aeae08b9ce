// Dynamic loss scaling and non-finite step skipping, on the CPU: a loss scale changes no
// result in f32 (it is divided back exactly for powers of two), an injected non-finite
// gradient skips the update and halves the scale, and good steps grow it again.
#include <gtest/gtest.h>

#include <cmath>

#include "data/loader.h"
#include "model/transformer.h"
#include "support/test_util.h"
#include "train/train_step.h"

namespace temper {
namespace {

ModelConfig small() {
  ModelConfig c;
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.max_position_embeddings = 16;
  return c;
}

MicroBatch batch() {
  BatchBuilder b(1, 12, 0);
  Document d = causal_document({1, 5, 9, 3, 7, 2, 8, 4, 6, 10, 11, 12});
  b.add_document(d.tokens, d.targets);
  return b.finish();
}

TEST(LossScale, ScheduleHalvesOnOverflowAndGrowsAfterWindow) {
  DynamicLossScale s(1024.0, 3);
  s.overflow();
  EXPECT_EQ(s.scale(), 512.0);
  s.good_step();
  s.good_step();
  EXPECT_EQ(s.scale(), 512.0);
  s.good_step();
  EXPECT_EQ(s.scale(), 1024.0);
  DynamicLossScale floor(1.0, 5);
  floor.overflow();
  EXPECT_EQ(floor.scale(), 1.0);
  EXPECT_EQ(floor.overflows(), 1);
}

TEST(LossScale, PowerOfTwoScaleGivesTheSameUpdateInF32) {
  auto cpu = make_backend("cpu");
  auto run = [&](DynamicLossScale* scale) {
    Transformer m(small(), *cpu, DType::F32);
    test::randomize_parameters(m.params(), *cpu, 3, 0.3f, 0.1f, 0.1f);
    AdamW opt(m.params(), *cpu, AdamWConfig{});
    StepResult r = train_step(m, opt, {batch()}, 1e-2f, 1.0, {scale});
    EXPECT_FALSE(r.skipped);
    return std::make_pair(r.grad_norm, test::to_host(*cpu, m.params().flat_values()));
  };
  DynamicLossScale scale(1024.0, 100);
  auto [norm_plain, plain] = run(nullptr);
  auto [norm_scaled, scaled] = run(&scale);
  EXPECT_NEAR(norm_scaled, norm_plain, 1e-6 * norm_plain);
  EXPECT_LE(test::rel_error(scaled, plain), 1e-6);
}

TEST(LossScale, NonFiniteGradientSkipsTheUpdate) {
  auto cpu = make_backend("cpu");
  Transformer m(small(), *cpu, DType::F32);
  test::randomize_parameters(m.params(), *cpu, 3, 0.3f, 0.1f, 0.1f);
  AdamW opt(m.params(), *cpu, AdamWConfig{});
  // An infinite weight makes the loss and every gradient non-finite.
  Parameter& w = m.params().at("model.layers.0.mlp.down_proj.weight");
  std::vector<float> v = test::to_host(*cpu, w.value);
  v[3] = INFINITY;
  cpu->copy_from_host(w.value, v.data());
  std::vector<float> before = test::to_host(*cpu, m.params().flat_values());
  DynamicLossScale scale(1024.0, 100);
  StepResult r = train_step(m, opt, {batch()}, 1e-2f, 1.0, {&scale});
  EXPECT_TRUE(r.skipped);
  EXPECT_EQ(scale.scale(), 512.0);
  EXPECT_EQ(opt.steps_taken(), 0);
  std::vector<float> after = test::to_host(*cpu, m.params().flat_values());
  EXPECT_EQ(std::memcmp(before.data(), after.data(), before.size() * 4), 0);
}

}  // namespace
}  // namespace temper
