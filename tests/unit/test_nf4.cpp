// NF4 (QLoRA) on the CPU: a tensor made of exact NF4 values times its block absmaxes
// quantizes back to the same bytes; double quantization stays inside its bound; a
// tensor-parallel shard dequantizes to exactly its slice of the whole tensor; and the QLoRA
// forward and backward equal dequantize-then-LoRA. (The code books against their
// definitions and bitsandbytes' file layout: tests/reference/test_nf4_reference.cpp.)
#include <gtest/gtest.h>

#include <cmath>

#include "data/loader.h"
#include "io/hf_model.h"
#include "model/transformer.h"
#include "peft/nf4.h"
#include "support/rank_only_comm.h"
#include "support/test_util.h"

namespace temper {
namespace {

// Blocks of 64 code indices with a random absmax each; every block holds index 15 (+1) or
// 0 (-1) once, so the block's absmax is exactly its scale.
struct ExactNf4 {
  std::vector<float> values;
  std::vector<uint8_t> indices;
  std::vector<float> absmax;
};

ExactNf4 exact_nf4(int64_t n, uint64_t seed) {
  Rng rng(rng_stream(seed, RngPurpose::Test, 1));
  ExactNf4 e;
  e.values.resize(size_t(n));
  e.indices.resize(size_t(n));
  for (int64_t b = 0; b < n / kNf4Block; ++b) {
    const float a = 0.01f + rng.uniform();
    e.absmax.push_back(a);
    for (int64_t i = b * kNf4Block; i < (b + 1) * kNf4Block; ++i) {
      uint8_t idx = uint8_t(rng.below(16));
      if (i == b * kNf4Block + int64_t(rng.below(64)) || i == b * kNf4Block) idx = rng.below(2) ? 15 : 0;
      e.indices[size_t(i)] = idx;
      e.values[size_t(i)] = nf4_code()[idx] * a;
    }
  }
  return e;
}

TEST(Nf4, ExactValuesQuantizeBackToTheSameBytes) {
  const ExactNf4 e = exact_nf4(64 * 300, 1);
  const Nf4Tensor q = nf4_quantize(e.values.data(), int64_t(e.values.size()), false);
  ASSERT_EQ(q.packed.size(), e.values.size() / 2);
  for (size_t i = 0; i < e.values.size(); ++i) ASSERT_EQ(nf4_index(q.packed, int64_t(i)), e.indices[i]) << i;
  for (size_t i = 0; i < q.packed.size(); ++i)  // the even element in the high nibble
    ASSERT_EQ(q.packed[i], uint8_t(e.indices[2 * i] << 4 | e.indices[2 * i + 1]));
  EXPECT_EQ(q.absmax, e.absmax);
  std::vector<float> back(e.values.size());
  nf4_dequantize(q, back.data());
  EXPECT_EQ(back, e.values);
  // With double quantization the codes are the same (the weights see the exact absmax).
  const Nf4Tensor dq = nf4_quantize(e.values.data(), int64_t(e.values.size()), true);
  EXPECT_EQ(dq.packed, q.packed);
}

TEST(Nf4, DoubleQuantizationErrorStaysInsideItsBound) {
  Rng rng(rng_stream(2, RngPurpose::Test, 3));
  std::vector<float> w(64 * 1000);  // 1000 blocks: 4 nested groups, the last one partial
  for (auto& x : w) x = 0.05f * rng.normal();
  const Nf4Tensor q = nf4_quantize(w.data(), int64_t(w.size()), false);
  const Nf4Tensor dq = nf4_quantize(w.data(), int64_t(w.size()), true);
  ASSERT_EQ(dq.nested_absmax.size(), 4u);
  // The dynamic map's widest gap: no value is farther than half of it (times the group's
  // nested absmax) from its code.
  const auto& map = dynamic_map();
  float gap = 0;
  for (size_t i = 1; i < map.size(); ++i) gap = std::max(gap, map[i] - map[i - 1]);
  double worst = 0;
  for (int64_t b = 0; b < q.blocks(); ++b) {
    const double err = std::fabs(dq.block_absmax(b) - q.absmax[size_t(b)]);
    const double bound = 0.5 * gap * dq.nested_absmax[size_t(b / kNf4Nested)] * (1 + 1e-6) + 1e-9;
    EXPECT_LE(err, bound) << "block " << b;
    worst = std::max(worst, err / q.absmax[size_t(b)]);
  }
  EXPECT_GT(worst, 0.0);  // it is a quantization
  EXPECT_LT(worst, 0.02) << "relative absmax error";
  // 0.5 bytes per weight plus the statistics: 0.127 bits per weight with double
  // quantization (8 / 64 + 32 / (64 · 256)), 0.5 bits without.
  EXPECT_NEAR(nf4_bytes_per_weight(64 * 256 * 64, true) - 0.5, (8.0 / 64 + 32.0 / (64 * 256)) / 8, 1e-5);
  EXPECT_NEAR(nf4_bytes_per_weight(64 * 256 * 64, false) - 0.5, 32.0 / 64 / 8, 1e-9);
}

// A [96, 256] weight split in two by rows and by columns: each rank's quantized block
// dequantizes to exactly its slice of the whole tensor's dequantization.
TEST(Nf4, TensorParallelShardsDequantizeToTheirSliceOfTheWhole) {
  auto cpu = make_backend("cpu");
  const int64_t R = 96, C = 256;
  Rng rng(rng_stream(4, RngPurpose::Test, 5));
  std::vector<float> w(size_t(R * C));
  for (auto& x : w) x = rng.normal();
  for (bool dq : {false, true}) {
    const Nf4Tensor whole = nf4_quantize(w.data(), R * C, dq);
    std::vector<float> ref(w.size());
    nf4_dequantize(whole, ref.data());
    for (int split : {0, 1})
      for (int shard = 0; shard < 2; ++shard) {
        ParameterSet ps(*cpu);
        ps.declare("w", Shape{R, C}, ParamInit::Normal, false, split, 2, shard);
        ps[0].trainable = false;
        ps[0].quantized = true;
        ps[0].double_quant = dq;
        ps.allocate(DType::F32);
        set_nf4_parameter(*cpu, ps[0], whole);
        const std::vector<float> got = nf4_parameter_values(*cpu, ps[0]);
        std::vector<float> want;
        for (int64_t r = 0; r < R; ++r)
          for (int64_t c = 0; c < C; ++c)
            if ((split == 0 && r / (R / 2) == shard) || (split == 1 && c / (C / 2) == shard))
              want.push_back(ref[size_t(r * C + c)]);
        EXPECT_EQ(got, want) << "split " << split << " shard " << shard << " dq " << dq;
      }
  }
}

ModelConfig nf4_config() {  // with q/k/v biases, so the dequantized path keeps them
  ModelConfig c = test::nf4_model_config();
  c.attention_bias = true;
  return c;
}

// QLoRA = LoRA on the dequantized base: the same logits, loss and adapter gradients (and
// DoRA too), bit for bit, as a model whose dense base holds the dequantized values.
TEST(Nf4, QloraEqualsLoraOnTheDequantizedBase) {
  auto cpu = make_backend("cpu");
  const MicroBatch b = test::packed_batch(40, 6);
  for (bool dora : {false, true}) {
    PeftSpec spec;
    spec.method = PeftMethod::Lora;
    spec.lora.r = 4;
    spec.lora.target_modules = {"all-linear"};
    spec.lora.dora = dora;
    PeftSpec nf4 = spec;
    nf4.nf4 = true;
    Transformer q(nf4_config(), *cpu, DType::F32, 1, {}, true, nf4);
    q.init_weights(3);  // dense draws, quantized
    EXPECT_GT(q.params().quantized_numel(), 0);
    Transformer d(nf4_config(), *cpu, DType::F32, 1, {}, true, spec);
    for (auto& p : d.params().all()) {
      const Parameter& src = q.params().at(p.name);
      if (src.quantized) {
        const std::vector<float> v = nf4_parameter_values(*cpu, src);
        cpu->copy_from_host(p.value, v.data());
      } else if (src.init != ParamInit::Adapter) {
        cpu->copy(p.value, src.value);
      }
    }
    q.init_adapters(5);
    d.init_adapters(5);
    for (Transformer* m : {&q, &d})  // B != 0: every adapter gradient is nonzero
      for (auto& p : m->params().all())
        if (p.name.ends_with("lora_B.weight")) cpu->fill(p.value, 0.01f);
    EXPECT_EQ(q.logits(b), d.logits(b)) << (dora ? "DoRA" : "LoRA");
    q.params().zero_grads();
    d.params().zero_grads();
    EXPECT_EQ(q.forward_backward(b, 0.1f).loss, d.forward_backward(b, 0.1f).loss);
    EXPECT_EQ(test::to_host(*cpu, q.params().flat_grads()), test::to_host(*cpu, d.params().flat_grads()));
    // The quantized model keeps no dense copy of its projections: per weight its codes (n/2
    // bytes), one 8-bit absmax per 64, the nested absmaxes, and its own code books (16 + 256
    // floats, as a bitsandbytes file carries them).
    size_t expect = 0;
    for (const auto& p : q.params().all())
      if (p.quantized) {
        const int64_t n = p.shape.numel(), blocks = n / 64;
        expect += size_t(n / 2 + blocks + 4 * ((blocks + 255) / 256) + 4 * (16 + 256));
        EXPECT_FALSE(p.value.defined()) << p.name;
      }
    EXPECT_EQ(q.params().quantized_bytes(), expect);
  }
}

TEST(Nf4, WidthsThatAreNotAMultipleOf64AreErrorsNamingTheWeight) {
  auto cpu = make_backend("cpu");
  ModelConfig c = nf4_config();
  c.intermediate_size = 96;  // down_proj's input
  PeftSpec spec;
  spec.method = PeftMethod::Lora;
  spec.nf4 = true;
  const std::string e = test::error_of([&] { Transformer(c, *cpu, DType::F32, 1, {}, true, spec); });
  EXPECT_NE(e.find("model.layers.0.mlp.down_proj.weight has input width 96"), std::string::npos) << e;
  spec.method = PeftMethod::Full;  // quantized weights cannot train
  const std::string f = test::error_of([&] { Transformer(nf4_config(), *cpu, DType::F32, 1, {}, true, spec); });
  EXPECT_NE(f.find("NF4 weights are frozen"), std::string::npos) << f;
}

}  // namespace
}  // namespace temper
