// PEFT on the CPU without an outside reference (tests/reference/test_peft_reference.cpp
// compares with Hugging Face PEFT): what trains under each method and rule, LoRA and
// DoRA gradients by finite differences, adapters that start as a no-op, dropout masks
// that a recompute and a second run reproduce, init independent of the tp split, and
// the errors for bad rules and targets.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "data/loader.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "support/rank_only_comm.h"
#include "support/test_util.h"

namespace temper {
namespace {

ModelConfig tiny_config(bool tied = false) {
  ModelConfig c;
  c.vocab_size = 40;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  c.attention_bias = true;
  c.tie_word_embeddings = tied;
  return c;
}

PeftSpec lora_spec(std::vector<std::string> targets, bool dora = false, double dropout = 0.0) {
  PeftSpec s;
  s.method = PeftMethod::Lora;
  s.lora.r = 3;
  s.lora.alpha = 6.0;
  s.lora.target_modules = std::move(targets);
  s.lora.dora = dora;
  s.lora.dropout = dropout;
  return s;
}

PeftSpec partial_spec(std::vector<std::string> rules) {
  PeftSpec s;
  s.method = PeftMethod::Partial;
  s.trainable = std::move(rules);
  return s;
}

MicroBatch batch_of(const std::vector<int>& lengths, int64_t rows, int64_t seq_len, uint64_t seed) {
  Rng rng(rng_stream(seed, RngPurpose::Test, 11));
  BatchBuilder b(rows, seq_len, 0);
  for (int len : lengths) {
    std::vector<int32_t> t(len);
    for (auto& x : t) x = int32_t(rng.below(40));
    Document d = causal_document(t);
    b.add_document(d.tokens, d.targets);
  }
  return b.finish();
}

std::vector<std::string> trainable_names(const Transformer& m) {
  std::vector<std::string> out;
  for (const auto& p : m.params().all())
    if (p.trainable) out.push_back(p.name);
  return out;
}

double mean_loss(Transformer& m, const MicroBatch& b) {
  LossSum s = m.forward_loss(b);
  return s.loss / double(s.tokens);
}

// Directional finite differences of the loss for each trainable tensor `check` accepts.
// The adapters' products (s·B·A on top of random weights) curve the loss more than the
// plain model's weights do: h = 3e-4 keeps the truncation error below the bound (at 1e-3
// it reaches 1% on layer 0's lora_A; the analytic values are what smaller h converge to).
void expect_gradients_match_finite_differences(Transformer& m, Backend& cpu, const MicroBatch& b,
                                               const std::function<bool(const std::string&)>& check) {
  m.params().zero_grads();
  m.forward_backward(b, 1.0f / float(b.target_count()));
  const float h = 3e-4f;
  int checked = 0;
  for (auto& p : m.params().all()) {
    if (!p.trainable) {
      EXPECT_FALSE(p.grad.defined()) << p.name << " is frozen but has a gradient";
      continue;
    }
    if (!check(p.name)) continue;
    ++checked;
    const auto [analytic, numeric] = test::directional_derivative(
        cpu, p, test::to_host(cpu, p.grad), h, 3, [&] { return mean_loss(m, b); });
    EXPECT_NEAR(analytic, numeric, 5e-3 * std::abs(numeric) + 2e-3) << p.name;
  }
  EXPECT_GT(checked, 0);
}

TEST(Peft, FullTrainsEverythingAndPartialRulesSelect) {
  auto cpu = make_backend("cpu");
  const ModelConfig c = tiny_config();
  const size_t all = Transformer(c, *cpu, DType::F32).params().size();
  EXPECT_EQ(trainable_names(Transformer(c, *cpu, DType::F32)).size(), all);

  auto names_for = [&](std::vector<std::string> rules, bool tied = false) {
    return trainable_names(Transformer(tiny_config(tied), *cpu, DType::F32, 1, {}, true,
                                       partial_spec(std::move(rules))));
  };
  EXPECT_EQ(names_for({"head"}), std::vector<std::string>{"lm_head.weight"});
  EXPECT_EQ(names_for({"head"}, true), std::vector<std::string>{"model.embed_tokens.weight"});
  EXPECT_EQ(names_for({"embed"}), std::vector<std::string>{"model.embed_tokens.weight"});
  const auto norms = names_for({"norm"});
  EXPECT_EQ(norms.size(), 2u * 3 + 1);  // two per block and the final norm
  for (const auto& n : norms) EXPECT_TRUE(n.ends_with("norm.weight")) << n;
  const auto biases = names_for({"bias"});
  EXPECT_EQ(biases.size(), 3u * 3);  // q, k, v biases
  const auto last = names_for({"last:1"});
  EXPECT_EQ(last.size(), 12u);  // block 2: 2 norms, 7 weights, 3 biases
  for (const auto& n : last) EXPECT_TRUE(n.starts_with("model.layers.2.")) << n;
  EXPECT_EQ(names_for({R"(layers\.0\..*q_proj)"}),
            (std::vector<std::string>{"model.layers.0.self_attn.q_proj.weight",
                                      "model.layers.0.self_attn.q_proj.bias"}));
}

TEST(Peft, RulesAndTargetsThatMatchNothingAreErrorsNamingThem) {
  auto cpu = make_backend("cpu");
  auto error_with = [&](const PeftSpec& spec, bool tied = false) {
    return test::error_of([&] { Transformer(tiny_config(tied), *cpu, DType::F32, 1, {}, true, spec); });
  };
  ModelConfig no_bias = tiny_config();
  no_bias.attention_bias = false;
  EXPECT_NE(test::error_of([&] {
              Transformer(no_bias, *cpu, DType::F32, 1, {}, true, partial_spec({"bias"}));
            }).find("rule 'bias' matches no parameter"),
            std::string::npos);
  EXPECT_NE(error_with(partial_spec({"last:9"})).find("'last:9'"), std::string::npos);
  EXPECT_NE(error_with(partial_spec({"nonexistent_thing"})).find("'nonexistent_thing'"), std::string::npos);
  EXPECT_NE(error_with(lora_spec({"q_proj", "qkv_proj"})).find("'qkv_proj' matches no module"),
            std::string::npos);
  EXPECT_NE(error_with(lora_spec({"lm_head"})).find("modules_to_save"), std::string::npos);
  PeftSpec r0 = lora_spec({"q_proj"});
  r0.lora.r = 0;
  EXPECT_NE(error_with(r0).find("peft.r"), std::string::npos);
  PeftSpec layers = lora_spec({"q_proj"});
  layers.lora.layers = {5};
  EXPECT_NE(error_with(layers).find("block 5 does not exist"), std::string::npos);
  PeftSpec head = lora_spec({"q_proj"});
  head.modules_to_save = {"lm_head"};
  EXPECT_NE(error_with(head, true).find("ties lm_head"), std::string::npos);
  head.modules_to_save = {"not_a_module"};
  EXPECT_NE(error_with(head).find("'not_a_module' matches no module"), std::string::npos);
}

TEST(Peft, LoraDeclaresPeftNamesAndTrainsOnlyAdaptersAndModulesToSave) {
  auto cpu = make_backend("cpu");
  PeftSpec spec = lora_spec({"all-linear"}, /*dora=*/true);
  spec.lora.layers = {0, 2};
  spec.modules_to_save = {"lm_head"};
  Transformer m(tiny_config(), *cpu, DType::F32, 1, {}, true, spec);
  const auto names = trainable_names(m);
  EXPECT_EQ(names.size(), 2u * 7 * 3 + 1);  // 2 blocks × 7 projections × (A, B, m) + head
  const ParameterSet& ps = m.params();
  const Parameter& A = *ps.find("model.layers.2.mlp.down_proj.lora_A.weight");
  EXPECT_EQ(A.shape, (Shape{3, 24}));
  EXPECT_EQ(ps.find("model.layers.2.mlp.down_proj.lora_B.weight")->shape, (Shape{16, 3}));
  EXPECT_EQ(ps.find("model.layers.0.self_attn.k_proj.lora_magnitude_vector")->shape, (Shape{8}));
  EXPECT_EQ(ps.find("model.layers.1.self_attn.q_proj.lora_A.weight"), nullptr);
  EXPECT_TRUE(ps.find("lm_head.weight")->trainable);
  EXPECT_FALSE(ps.find("model.layers.0.self_attn.q_proj.weight")->trainable);
  // Frozen parameters: no gradient and no optimizer state (f32: m and v, 8 bytes each).
  int64_t trainable = 0;
  for (const auto& p : ps.all()) {
    EXPECT_EQ(p.grad.defined(), p.trainable) << p.name;
    if (p.trainable) trainable += p.shape.numel();
  }
  EXPECT_EQ(ps.trainable_numel(), trainable);
  EXPECT_EQ(ps.flat_grads().numel(), trainable);
  AdamW opt(m.params(), *cpu, AdamWConfig{});
  int64_t with_state = 0;
  for (const auto& piece : opt.state_pieces()) {
    EXPECT_TRUE(ps[piece.param].trainable) << ps[piece.param].name;
    with_state += piece.end - piece.begin;
  }
  EXPECT_EQ(with_state, trainable);
}

TEST(Peft, AdaptersStartAsANoOp) {
  auto cpu = make_backend("cpu");
  const MicroBatch b = batch_of({5, 7, 4}, 2, 8, 2);
  Transformer base(tiny_config(), *cpu, DType::F32);
  base.init_weights(7);
  const std::vector<float> ref = base.logits(b);
  for (bool dora : {false, true}) {
    Transformer m(tiny_config(), *cpu, DType::F32, 1, {}, true, lora_spec({"all-linear"}, dora));
    m.init_weights(7);
    m.init_adapters(11);
    // A is drawn (nonzero), B is zero: the adapted model equals the base.
    EXPECT_GT(cpu->sum_squares(m.params().at("model.layers.1.mlp.up_proj.lora_A.weight").value), 0.0);
    EXPECT_LE(test::rel_error(m.logits(b), ref), 1e-6) << (dora ? "DoRA" : "LoRA");
  }
}

TEST(Peft, LoraGradientsMatchFiniteDifferences) {
  auto cpu = make_backend("cpu");
  for (bool rslora : {false, true}) {
    PeftSpec spec = lora_spec({"all-linear"});
    spec.lora.rslora = rslora;
    spec.modules_to_save = {"model.norm"};
    Transformer m(tiny_config(), *cpu, DType::F32, 1, {}, true, spec);
    test::randomize_parameters(m.params(), *cpu, 1, 0.2f, 0.2f, 0.2f);  // B != 0
    expect_gradients_match_finite_differences(m, *cpu, batch_of({5, 7, 4}, 2, 8, 2),
                                              [](const std::string&) { return true; });
  }
}

// DoRA's A and B gradients treat the row norm as a constant (PEFT's and the paper's
// choice), so finite differences of the loss check only the magnitude here; the
// reference test checks A and B against PEFT's autograd.
TEST(Peft, DoraMagnitudeGradientMatchesFiniteDifferences) {
  auto cpu = make_backend("cpu");
  Transformer m(tiny_config(), *cpu, DType::F32, 1, {}, true, lora_spec({"all-linear"}, true));
  test::randomize_parameters(m.params(), *cpu, 1, 0.3f, 0.2f, 0.3f);
  expect_gradients_match_finite_differences(m, *cpu, batch_of({5, 7, 4}, 2, 8, 2),
                                            [](const std::string& n) { return n.ends_with("magnitude_vector"); });
}

TEST(Peft, DropoutMasksAreReproducibleAndRecomputeIsBitIdentical) {
  auto cpu = make_backend("cpu");
  const MicroBatch b = batch_of({9, 3, 6, 6}, 3, 8, 5);
  auto grads = [&](uint64_t index, bool recompute, double dropout) {
    Transformer m(tiny_config(), *cpu, DType::F32, 1, {}, true, lora_spec({"all-linear"}, false, dropout));
    test::randomize_parameters(m.params(), *cpu, 4, 0.3f, 0.2f, 0.3f);
    m.set_dropout_seed(99);
    m.set_micro_batch_index(index);
    m.set_recompute(recompute);
    m.params().zero_grads();
    m.forward_backward(b, 0.1f);
    return test::to_host(*cpu, m.params().flat_grads());
  };
  const auto a = grads(3, false, 0.3);
  EXPECT_EQ(a, grads(3, false, 0.3));  // the same micro-batch index: the same masks
  EXPECT_EQ(a, grads(3, true, 0.3));   // recompute redraws the same masks
  EXPECT_NE(a, grads(4, false, 0.3));  // another micro-batch: other masks
  EXPECT_NE(a, grads(3, false, 0.0));  // dropout changes the gradients
}

// Each tp rank's adapter shard is its slice of the one-process tensor (docs/peft.md, "Layouts tested").
TEST(Peft, AdapterInitDoesNotDependOnTheTensorParallelSplit) {
  auto cpu = make_backend("cpu");
  const PeftSpec spec = lora_spec({"all-linear"});
  Transformer whole(tiny_config(), *cpu, DType::F32, 1, {}, true, spec);
  whole.init_adapters(5);
  for (int rank = 0; rank < 2; ++rank) {
    test::RankOnlyComm comm(rank, 2);
    Transformer shard(tiny_config(), *cpu, DType::F32, 1, TensorParallel(comm), true, spec);
    shard.init_adapters(5);
    for (const auto& p : shard.params().all()) {
      if (p.init != ParamInit::Adapter) continue;
      const std::vector<float> mine = test::to_host(*cpu, p.value);
      const std::vector<float> full = test::to_host(*cpu, whole.params().at(p.name).value);
      const int64_t rows = p.full_shape[0], cols = p.full_shape.ndim > 1 ? p.full_shape[1] : 1;
      std::vector<float> expect;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const bool in_rows = p.split_dim != 0 || (r / (rows / 2)) == rank;
          const bool in_cols = p.split_dim != 1 || (c / (cols / 2)) == rank;
          if (in_rows && in_cols) expect.push_back(full[size_t(r * cols + c)]);
        }
      EXPECT_EQ(mine, expect) << p.name << " on tp rank " << rank;
    }
  }
}

// ---- the ops under the projection unit -------------------------------------------------

TEST(PeftOps, DropoutKeepsOneMinusPScaledAndTheSameMaskForAColumnBlock) {
  auto cpu = make_backend("cpu");
  HostMemory mem;
  Arena arena(mem, "dropout test");
  const int64_t T = 64, C = 96;
  const float p = 0.25f;
  Tensor x = arena.allocate(DType::F32, Shape{T, C}), y = arena.allocate(DType::F32, Shape{T, C});
  cpu->fill(x, 2.0f);
  const RngStream s = rng_stream(1, RngPurpose::Dropout, 7);
  cpu->dropout(y, x, p, s, 1000, C, 0, false);
  const std::vector<float> out = test::to_host(*cpu, y);
  int64_t kept = 0;
  for (float v : out) {
    ASSERT_TRUE(v == 0.0f || std::abs(v - 2.0f / (1.0f - p)) < 1e-6f) << v;
    kept += v != 0.0f;
  }
  const double frac = double(kept) / double(T * C);
  EXPECT_NEAR(frac, 1.0 - p, 4.0 * std::sqrt(p * (1 - p) / double(T * C)));  // 4 sigma
  // The right half of the columns, as a tp rank holds it: the same entries.
  Tensor xh = arena.allocate(DType::F32, Shape{T, C / 2}), yh = arena.allocate(DType::F32, Shape{T, C / 2});
  cpu->fill(xh, 2.0f);
  cpu->dropout(yh, xh, p, s, 1000, C, C / 2, false);
  const std::vector<float> half = test::to_host(*cpu, yh);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < C / 2; ++j) ASSERT_EQ(half[t * C / 2 + j], out[t * C + C / 2 + j]);
  // Backward (accumulate) applies the same mask.
  cpu->fill(y, 1.0f);
  cpu->dropout(y, x, p, s, 1000, C, 0, true);
  const std::vector<float> acc = test::to_host(*cpu, y);
  for (size_t i = 0; i < acc.size(); ++i) ASSERT_EQ(acc[i], 1.0f + out[i]);
}

TEST(PeftOps, DoraScaleForwardAndBackwardFollowTheirDefinitions) {
  auto cpu = make_backend("cpu");
  HostMemory mem;
  Arena arena(mem, "dora test");
  const int64_t T = 5, O = 70;
  Rng rng(rng_stream(2, RngPurpose::Test, 1));
  auto random = [&](Shape shape, float offset) {
    Tensor t = arena.allocate(DType::F32, shape);
    std::vector<float> v(size_t(shape.numel()));
    for (auto& x : v) x = offset + rng.normal();
    cpu->copy_from_host(t, v.data());
    return std::pair{t, v};
  };
  auto [w, wv] = random(Shape{O, 9}, 0.0f);
  Tensor sumsq = arena.allocate(DType::F32, Shape{O});
  cpu->row_sum_squares(sumsq, w);
  const std::vector<float> ss = test::to_host(*cpu, sumsq);
  auto [z, zv] = random(Shape{T, O}, 0.0f);
  auto [m, mv] = random(Shape{O}, 3.0f);
  auto [bias, bv] = random(Shape{O}, 0.0f);
  auto [dout, gv] = random(Shape{T, O}, 0.0f);
  Tensor out = arena.allocate(DType::F32, Shape{T, O}), dz = arena.allocate(DType::F32, Shape{T, O});
  Tensor dm = arena.allocate(DType::F32, Shape{O});
  cpu->dora_scale_forward(out, z, m, sumsq, bias);
  cpu->zero(dz);
  cpu->fill(dm, 0.5f);
  cpu->dora_scale_backward(dz, dm, dout, z, m, sumsq);
  const auto o = test::to_host(*cpu, out), dzv = test::to_host(*cpu, dz), dmv = test::to_host(*cpu, dm);
  for (int64_t r = 0; r < O; ++r) {
    double sq = 0, dmr = 0.5;
    for (int64_t i = 0; i < 9; ++i) sq += double(wv[r * 9 + i]) * wv[r * 9 + i];
    EXPECT_NEAR(ss[r], sq, 1e-5 * sq);
    const double c = mv[r] / std::sqrt(sq);
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_NEAR(o[t * O + r], c * zv[t * O + r] + bv[r], 1e-5);
      EXPECT_NEAR(dzv[t * O + r], c * gv[t * O + r], 1e-5);
      dmr += gv[t * O + r] * zv[t * O + r] / std::sqrt(sq);
    }
    EXPECT_NEAR(dmv[r], dmr, 1e-5);
  }
}

}  // namespace
}  // namespace temper
