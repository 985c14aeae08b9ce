// Core pieces: Philox against the Random123 known-answer vectors (the generator's
// specification), stream independence, arena accounting, tensor views, bf16 rounding,
// errors with context, model config parsing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/allocator.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/config.h"
#include "support/test_util.h"

namespace temper {
namespace {

// Known-answer vectors published with Random123 (kat_vectors, philox4x32 with 10 rounds):
// they define the generator, so they are the specification, not a recorded output.
TEST(Philox, MatchesRandom123KnownAnswers) {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const auto& k : kats) {
    Philox4x32 r = philox4x32_10(k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3], k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(r.v[i], k.out[i]) << "word " << i;
  }
}

TEST(Philox, StreamsDifferByPurposeRankAndSeed) {
  RngStream a = rng_stream(1, RngPurpose::Init, 0), b = rng_stream(1, RngPurpose::Data, 0);
  RngStream c = rng_stream(1, RngPurpose::Init, 1), d = rng_stream(2, RngPurpose::Init, 0);
  int same_ab = 0, same_ac = 0, same_ad = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    same_ab += a.bits(i) == b.bits(i);
    same_ac += a.bits(i) == c.bits(i);
    same_ad += a.bits(i) == d.bits(i);
  }
  EXPECT_LE(same_ab + same_ac + same_ad, 1);
  // Index-addressable: element i does not depend on what was drawn before.
  Rng seq(a);
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(seq.bits(), a.bits(i));
}

TEST(Philox, NormalAndUniformMoments) {
  RngStream s = rng_stream(7, RngPurpose::Test, 3);
  const int n = 200000;
  double m = 0, m2 = 0, u = 0;
  for (int i = 0; i < n; ++i) {
    double x = s.normal(i);
    m += x;
    m2 += x * x;
    float v = s.uniform(i);
    ASSERT_GT(v, 0.0f);
    ASSERT_LE(v, 1.0f);
    u += v;
  }
  // 5 standard errors.
  EXPECT_NEAR(m / n, 0.0, 5.0 / std::sqrt(n));
  EXPECT_NEAR(m2 / n, 1.0, 5.0 * std::sqrt(2.0 / n));
  EXPECT_NEAR(u / n, 0.5, 5.0 * std::sqrt(1.0 / 12.0 / n));
}

TEST(Arena, PeakAccountingAndMarkRelease) {
  HostMemory mem;
  {
    Arena a(mem, "test", 1 << 16);
    Tensor x = a.allocate(DType::F32, Shape{100});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(x.data()) % Arena::kAlign, 0u);
    const size_t after_x = a.used_bytes();
    Arena::Mark m = a.mark();
    a.allocate(DType::F32, Shape{1000});
    a.allocate(DType::BF16, Shape{50000});  // does not fit the first block: a second one
    const size_t peak = a.used_bytes();
    EXPECT_EQ(a.peak_bytes(), peak);
    a.release(m);
    EXPECT_EQ(a.used_bytes(), after_x);
    EXPECT_EQ(a.peak_bytes(), peak);
    // Reuse after release does not grow the device footprint.
    const size_t in_use = mem.bytes_in_use();
    a.allocate(DType::F32, Shape{1000});
    a.allocate(DType::BF16, Shape{50000});
    EXPECT_EQ(mem.bytes_in_use(), in_use);
    EXPECT_GE(mem.peak_bytes(), a.capacity_bytes());
  }
  EXPECT_EQ(mem.bytes_in_use(), 0u);
}

TEST(Tensor, ViewsShareMemoryAndCheckSizes) {
  std::vector<float> buf(24);
  Tensor t(buf.data(), DType::F32, Shape{4, 6});
  Tensor rows = t.slice_rows(1, 3);
  EXPECT_EQ(rows.data(), buf.data() + 6);
  EXPECT_EQ(rows.shape(), (Shape{2, 6}));
  EXPECT_EQ(t.view(Shape{2, 3, 4}).numel(), 24);
  EXPECT_EQ(t.flat(5, 7).data(), buf.data() + 5);
  EXPECT_THROW(t.view(Shape{5, 5}), Error);
  EXPECT_THROW(t.slice_rows(3, 5), Error);
  EXPECT_EQ(t.str(), "f32[4, 6] on cpu");
  try {
    expect_tensor(t, DType::BF16, Shape{4, 6}, "weights");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weights: expected bf16[4, 6], got f32[4, 6]"), std::string::npos);
  }
}

TEST(DType, Bf16RoundsToNearestEven) {
  // Exactly representable values survive; halfway cases go to the even mantissa.
  for (float f : {0.0f, 1.0f, -2.5f, 3.140625f}) EXPECT_EQ(bf16_to_f32(f32_to_bf16(f)), f);
  const float one_plus_half_ulp = 1.0f + std::ldexp(1.0f, -8);  // halfway between 1 and next
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(one_plus_half_ulp)), 1.0f);
  const float next_halfway = 1.0f + 3 * std::ldexp(1.0f, -8);  // rounds up to even
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(next_halfway)), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(parse_dtype("bf16"), DType::BF16);
  EXPECT_THROW(parse_dtype("fp8"), Error);
}

// Against the compiler's own IEEE binary16 (_Float16) conversions, an independent
// implementation, over normals, subnormals, overflow, halfway cases and NaN. Clang 14 (the
// asan preset) has no _Float16 on x86: there its __fp16, converted by compiler-rt.
#if defined(__clang__) && __clang_major__ < 15
using CompilerHalf = __fp16;
#else
using CompilerHalf = _Float16;
#endif
TEST(DType, F16MatchesCompilerFloat16) {
  Rng rng(rng_stream(11, RngPurpose::Test, 0));
  std::vector<float> values = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.0f, 65520.0f, 1e-8f, 6e-5f,
                               5.96e-8f, 2.98e-8f, INFINITY, -INFINITY};
  for (int i = 0; i < 20000; ++i) {
    uint32_t bits = rng.bits();
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) continue;
    values.push_back(std::ldexp(std::fmod(f, 2.0f), int(rng.below(50)) - 30));
  }
  for (float f : values) {
    const CompilerHalf h = static_cast<CompilerHalf>(f);
    uint16_t ref;
    std::memcpy(&ref, &h, 2);
    ASSERT_EQ(f32_to_f16(f), ref) << f;
    ASSERT_EQ(f16_to_f32(ref), float(h)) << f;
  }
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
}

TEST(Error, ContextIsPrepended) {
  try {
    with_context("model.safetensors", [] { fail("tensor '{}' truncated", "lm_head.weight"); });
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "model.safetensors: tensor 'lm_head.weight' truncated");
  }
}

TEST(ModelConfig, PresetsParseAndCountParameters) {
  const std::string dir = std::string(TEMPER_SOURCE_DIR) + "/configs/models/";
  ModelConfig llama = load_hf_config(dir + "llama-3.2-1b.json");
  EXPECT_TRUE(llama.rope_scaling.enabled());
  EXPECT_TRUE(llama.tie_word_embeddings);
  // Llama 3.2 1B is published as 1.24B parameters (tied head counted once).
  EXPECT_NEAR(double(llama.num_parameters()) / 1e9, 1.24, 0.01);
  ModelConfig qwen = load_hf_config(dir + "qwen2-0.5b.json");
  EXPECT_TRUE(qwen.attention_bias);     // implied by qwen2
  EXPECT_EQ(qwen.sliding_window, 0);    // use_sliding_window false
  ModelConfig mistral = load_hf_config(dir + "mistral-7b.json");
  EXPECT_EQ(mistral.sliding_window, 4096);
  EXPECT_EQ(mistral.head_dim, 128);
  ModelConfig smol = load_hf_config(dir + "smollm2-135m.json");
  EXPECT_NEAR(double(smol.num_parameters()) / 1e6, 134.5, 1.0);
  // Round trip through the HF JSON form.
  ModelConfig back = model_config_from_hf_json(model_config_to_hf_json(llama), "round trip");
  EXPECT_EQ(back.num_parameters(), llama.num_parameters());
  EXPECT_EQ(back.rope_scaling.factor, llama.rope_scaling.factor);
}

TEST(ModelConfig, BadConfigsNameFileAndField) {
  auto dir = test::temp_dir("bad_model_config");
  auto expect_error = [&](const std::string& json, const std::string& needle) {
    auto path = (dir / "config.json").string();
    std::ofstream(path) << json;
    try {
      load_hf_config(path);
      ADD_FAILURE() << "no error for " << json;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  };
  const std::string ok_tail =
      R"("intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2)";
  expect_error(R"({"hidden_size": 4, )" + ok_tail + "}", "vocab_size");
  expect_error(R"({"vocab_size": 10, "hidden_size": 8, "num_key_value_heads": 4, )" + ok_tail + "}",
               "num_key_value_heads");
  expect_error(R"({"vocab_size": "ten", "hidden_size": 4, )" + ok_tail + "}", "vocab_size");
  expect_error("{not json", "not valid JSON");
}

}  // namespace
}  // namespace temper
