// CUDA GEMM ops vs the CPU reference: linear_forward / linear_backward (cuBLASLt through
// kernels/cuda/gemm.h, dbias by a column-sum kernel) and the fused lm_head_cross_entropy.
// Forward outputs are poisoned (NaN) first; gradients start from known random values on
// both sides, so accumulation (+=) is checked, not just the product. f32 must meet the
// 1e-5 bound (so TF32 must be off); bf16/f16 1e-2. bf16/f16 cases feed the CPU the same
// already-rounded values in f32. Skipped (with a message) when no CUDA device is visible.
#include <fmt/format.h>

#include <string>
#include <vector>

#include "gpu_fixture.h"

namespace temper {

namespace {

using CudaGemmTest = GpuTest;

struct LinearShape {
  int64_t T, I, O;
};
// Not multiples of 8/16 (odd leading dimensions for bf16), and aligned ones.
const LinearShape kLinearShapes[] = {{37, 200, 72}, {64, 128, 96}, {13, 51, 29}};

std::string label(DType t, const LinearShape& s) {
  return fmt::format("{} T={} I={} O={}", dtype_name(t), s.T, s.I, s.O);
}

// ---- linear_forward -----------------------------------------------------------------

TEST_F(CudaGemmTest, LinearForwardMatchesCpu) {
  struct Case {
    DType t;
    LinearShape s;
  };
  std::vector<Case> cases;
  for (DType t : {DType::F32, DType::BF16})
    for (const LinearShape& s : kLinearShapes) cases.push_back({t, s});
  cases.push_back({DType::F16, kLinearShapes[0]});

  for (const Case& c : cases) {
    const auto [T, I, O] = c.s;
    for (bool with_bias : {false, true}) {
      SCOPED_TRACE(label(c.t, c.s) + (with_bias ? " bias" : " no bias"));
      auto x = random(T * I, c.t), w = random(O * I, c.t, 0.1f), b = random(O, c.t);
      Tensor cout = on_cpu(DType::F32, {T, O});
      cpu_->linear_forward(cout, cpu_with(x, {T, I}), cpu_with(w, {O, I}),
                           with_bias ? cpu_with(b) : Tensor{});
      Tensor gx = gpu_with(c.t, x, {T, I}), gw = gpu_with(c.t, w, {O, I});
      Tensor gout = on_gpu(c.t, {T, O});
      gpu_->fill(gout, NAN);
      gpu_->linear_forward(gout, gx, gw, with_bias ? gpu_with(c.t, b) : Tensor{});
      expect_close(download(*gpu_, gout), download(*cpu_, cout), c.t, "out");

      if (with_bias) {  // same shape again (a cached plan) with another bias tensor
        auto b2 = random(O, c.t, 3.0f);
        cpu_->linear_forward(cout, cpu_with(x, {T, I}), cpu_with(w, {O, I}), cpu_with(b2));
        gpu_->fill(gout, NAN);
        gpu_->linear_forward(gout, gx, gw, gpu_with(c.t, b2));
        expect_close(download(*gpu_, gout), download(*cpu_, cout), c.t, "out, second bias");
      }
    }
  }
}

// ---- linear_backward ----------------------------------------------------------------

TEST_F(CudaGemmTest, LinearBackwardAccumulatesLikeCpu) {
  struct Case {
    DType t;
    LinearShape s;
    int mask;  // 1: dx, 2: dweight, 4: dbias
  };
  std::vector<Case> cases;
  for (DType t : {DType::F32, DType::BF16})
    for (const LinearShape& s : kLinearShapes)
      for (int mask = 0; mask < 8; ++mask) cases.push_back({t, s, mask});
  cases.push_back({DType::F16, kLinearShapes[0], 7});

  for (const Case& c : cases) {
    const auto [T, I, O] = c.s;
    const bool hx = c.mask & 1, hw = c.mask & 2, hb = c.mask & 4;
    // The model passes x and weight always; the interface needs only what the gradients
    // use (weight for dx, x for dweight): try both.
    for (bool pass_unneeded : {true, false}) {
      SCOPED_TRACE(label(c.t, c.s) + fmt::format(" dx={} dweight={} dbias={} pass_unneeded={}",
                                                 hx, hw, hb, pass_unneeded));
      auto dout = random(T * O, c.t), x = random(T * I, c.t), w = random(O * I, c.t, 0.1f);
      auto dx0 = random(T * I, c.t), dw0 = random(O * I, c.t), db0 = random(O, c.t);
      const bool give_x = hw || pass_unneeded, give_w = hx || pass_unneeded;

      Tensor cdx = hx ? cpu_with(dx0, {T, I}) : Tensor{};
      Tensor cdw = hw ? cpu_with(dw0, {O, I}) : Tensor{};
      Tensor cdb = hb ? cpu_with(db0) : Tensor{};
      cpu_->linear_backward(cdx, cdw, cdb, cpu_with(dout, {T, O}),
                            give_x ? cpu_with(x, {T, I}) : Tensor{},
                            give_w ? cpu_with(w, {O, I}) : Tensor{});

      Tensor gdx = hx ? gpu_with(c.t, dx0, {T, I}) : Tensor{};
      Tensor gdw = hw ? gpu_with(c.t, dw0, {O, I}) : Tensor{};
      Tensor gdb = hb ? gpu_with(c.t, db0) : Tensor{};
      gpu_->linear_backward(gdx, gdw, gdb, gpu_with(c.t, dout, {T, O}),
                            give_x ? gpu_with(c.t, x, {T, I}) : Tensor{},
                            give_w ? gpu_with(c.t, w, {O, I}) : Tensor{});
      if (hx) expect_close(download(*gpu_, gdx), download(*cpu_, cdx), c.t, "dx");
      if (hw) expect_close(download(*gpu_, gdw), download(*cpu_, cdw), c.t, "dweight");
      if (hb) expect_close(download(*gpu_, gdb), download(*cpu_, cdb), c.t, "dbias");
    }
  }
}

TEST_F(CudaGemmTest, LinearBiasGradientIsDeterministic) {
  // Many rows: every thread row of the column-sum sums a long run.
  const int64_t T = 4099, O = 333;
  auto dout = random(T * O, DType::F32);
  Tensor gdout = gpu_with(DType::F32, dout, {T, O});
  Tensor a = on_gpu(DType::F32, {O}), b = on_gpu(DType::F32, {O});
  gpu_->zero(a);
  gpu_->zero(b);
  gpu_->linear_backward(Tensor{}, Tensor{}, a, gdout, Tensor{}, Tensor{});
  gpu_->linear_backward(Tensor{}, Tensor{}, b, gdout, Tensor{}, Tensor{});
  auto ga = download(*gpu_, a), gb = download(*gpu_, b);
  for (int64_t o = 0; o < O; ++o) ASSERT_EQ(ga[o], gb[o]) << o;
  Tensor c = on_cpu(DType::F32, {O});
  cpu_->zero(c);
  cpu_->linear_backward(Tensor{}, Tensor{}, c, cpu_with(dout, {T, O}), Tensor{}, Tensor{});
  expect_close(ga, download(*cpu_, c), DType::F32, "dbias");
}

TEST_F(CudaGemmTest, LinearRejectsBadArguments) {
  Tensor x = on_gpu(DType::F32, {6, 4}), w = on_gpu(DType::F32, {3, 4}),
         out = on_gpu(DType::F32, {6, 3});
  Tensor wrong_w = on_gpu(DType::F32, {3, 5}), bf_w = on_gpu(DType::BF16, {3, 4});
  Tensor host_w = on_cpu(DType::F32, {3, 4});
  EXPECT_THROW(gpu_->linear_forward(out, x, wrong_w, Tensor{}), Error);
  EXPECT_THROW(gpu_->linear_forward(out, x, bf_w, Tensor{}), Error);
  EXPECT_THROW(gpu_->linear_forward(out, x, host_w, Tensor{}), Error);
  EXPECT_THROW(gpu_->linear_forward(out, x, w, on_gpu(DType::F32, {4})), Error);
  EXPECT_THROW(gpu_->linear_backward(on_gpu(DType::F32, {6, 4}), Tensor{}, Tensor{}, out, x,
                                     Tensor{}),
               Error);  // dx without weight
  try {
    gpu_->linear_forward(out, x, wrong_w, Tensor{});
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("linear_forward"), std::string::npos) << msg;
    EXPECT_NE(msg.find("weight"), std::string::npos) << msg;
  }
}

// ---- lm_head_cross_entropy ----------------------------------------------------------

// Targets in [0, V) with every fifth token ignored, and both vocabulary ends present.
std::vector<int32_t> make_targets(int64_t T, int64_t V) {
  std::vector<int32_t> t(T);
  for (int64_t i = 0; i < T; ++i) t[i] = int32_t((i * 7919 + 13) % V);
  for (int64_t i = 2; i < T; i += 5) t[i] = kIgnoreIndex;
  t[0] = int32_t(V - 1);
  t[1] = 0;
  return t;
}

struct XentCase {
  DType t;
  int64_t T, C, V, chunk;
};

TEST_F(CudaGemmTest, LmHeadCrossEntropyMatchesCpu) {
  std::vector<XentCase> cases;
  for (DType t : {DType::F32, DType::BF16}) {
    cases.push_back({t, 45, 64, 1000, 16});  // 16 + 16 + 13
    cases.push_back({t, 45, 50, 1000, 7});   // odd C: chunk slices only 4/8-byte aligned
    cases.push_back({t, 45, 64, 1000, 64});  // one chunk (chunk > T)
  }
  cases.push_back({DType::F16, 45, 64, 1000, 16});

  for (const XentCase& c : cases) {
    SCOPED_TRACE(fmt::format("{} T={} C={} V={} chunk={}", dtype_name(c.t), c.T, c.C, c.V,
                             c.chunk));
    const int64_t T = c.T, C = c.C, V = c.V;
    auto x = random(T * C, c.t), w = random(V * C, c.t, 0.05f);
    // Known non-zero starting gradients on the scale of what is added.
    auto dx0 = random(T * C, c.t, 1e-3f), dw0 = random(V * C, c.t, 1e-3f);
    const auto targets = make_targets(T, V);
    int64_t counted = 0;
    for (int32_t t : targets) counted += t != kIgnoreIndex;
    const float grad_scale = 1.0f / float(counted);

    Tensor cx = cpu_with(x, {T, C}), cw = cpu_with(w, {V, C}), ct = cpu_ints(targets);
    Tensor cdx = cpu_with(dx0, {T, C}), cdw = cpu_with(dw0, {V, C});
    const LossSum want = cpu_->lm_head_cross_entropy(cdx, cdw, cx, cw, ct, grad_scale, c.chunk);

    Tensor gx = gpu_with(c.t, x, {T, C}), gw = gpu_with(c.t, w, {V, C}), gt = gpu_ints(targets);
    Tensor gdx = gpu_with(c.t, dx0, {T, C}), gdw = gpu_with(c.t, dw0, {V, C});
    const LossSum got = gpu_->lm_head_cross_entropy(gdx, gdw, gx, gw, gt, grad_scale, c.chunk);

    EXPECT_EQ(got.tokens, counted);
    EXPECT_EQ(got.tokens, want.tokens);
    ASSERT_FALSE(std::isnan(got.loss));
    EXPECT_LE(std::abs(got.loss - want.loss) / std::abs(want.loss), tol_for(c.t))
        << "loss " << got.loss << " vs " << want.loss;
    expect_close(download(*gpu_, gdx), download(*cpu_, cdx), c.t, "dx");
    expect_close(download(*gpu_, gdw), download(*cpu_, cdw), c.t, "dweight");
    // The gradient part alone, so the starting values cannot hide an error in it.
    {
      auto g = download(*gpu_, gdw), r = download(*cpu_, cdw);
      for (size_t i = 0; i < g.size(); ++i) {
        g[i] -= dw0[i];
        r[i] -= dw0[i];
      }
      EXPECT_LE(test::rel_error(g, r), c.t == DType::F32 ? 1e-4 : 5e-2) << "dweight increment";
    }

    // Forward only: same loss, and dx / dweight untouched (undefined).
    const LossSum fwd = gpu_->lm_head_cross_entropy(Tensor{}, Tensor{}, gx, gw, gt, grad_scale,
                                                    c.chunk);
    EXPECT_EQ(fwd.tokens, counted);
    EXPECT_LE(std::abs(fwd.loss - want.loss) / std::abs(want.loss), tol_for(c.t)) << "fwd loss";
    // Deterministic: the same call gives the same bits.
    EXPECT_EQ(gpu_->lm_head_cross_entropy(Tensor{}, Tensor{}, gx, gw, gt, grad_scale, c.chunk)
                  .loss,
              fwd.loss);
  }
}

TEST_F(CudaGemmTest, LmHeadCrossEntropyOnlyDxOrOnlyDweight) {
  const int64_t T = 29, C = 40, V = 1000, chunk = 8;
  auto x = random(T * C), w = random(V * C, DType::F32, 0.05f);
  auto dx0 = random(T * C, DType::F32, 1e-3f), dw0 = random(V * C, DType::F32, 1e-3f);
  const auto targets = make_targets(T, V);
  for (int which = 0; which < 2; ++which) {
    SCOPED_TRACE(which == 0 ? "dx only" : "dweight only");
    Tensor cdx = which == 0 ? cpu_with(dx0, {T, C}) : Tensor{};
    Tensor cdw = which == 1 ? cpu_with(dw0, {V, C}) : Tensor{};
    const LossSum want = cpu_->lm_head_cross_entropy(cdx, cdw, cpu_with(x, {T, C}),
                                                     cpu_with(w, {V, C}), cpu_ints(targets),
                                                     0.5f, chunk);
    Tensor gdx = which == 0 ? gpu_with(DType::F32, dx0, {T, C}) : Tensor{};
    Tensor gdw = which == 1 ? gpu_with(DType::F32, dw0, {V, C}) : Tensor{};
    const LossSum got = gpu_->lm_head_cross_entropy(
        gdx, gdw, gpu_with(DType::F32, x, {T, C}), gpu_with(DType::F32, w, {V, C}),
        gpu_ints(targets), 0.5f, chunk);
    EXPECT_EQ(got.tokens, want.tokens);
    EXPECT_LE(std::abs(got.loss - want.loss) / std::abs(want.loss), kTolF32);
    if (which == 0) expect_close(download(*gpu_, gdx), download(*cpu_, cdx), DType::F32, "dx");
    if (which == 1)
      expect_close(download(*gpu_, gdw), download(*cpu_, cdw), DType::F32, "dweight");
  }
}

TEST_F(CudaGemmTest, LmHeadCrossEntropyRejectsTargetsOutsideTheVocabulary) {
  const int64_t T = 20, C = 16, V = 100;
  Tensor x = gpu_with(DType::F32, random(T * C), {T, C});
  Tensor w = gpu_with(DType::F32, random(V * C, DType::F32, 0.1f), {V, C});
  Tensor dx = on_gpu(DType::F32, {T, C}), dw = on_gpu(DType::F32, {V, C});
  gpu_->zero(dx);
  gpu_->zero(dw);
  auto targets = make_targets(T, V);
  targets[9] = -5;
  targets[13] = int32_t(V);  // one past the end
  for (bool grads : {false, true}) {
    SCOPED_TRACE(grads ? "with gradients" : "forward only");
    try {
      gpu_->lm_head_cross_entropy(grads ? dx : Tensor{}, grads ? dw : Tensor{}, x, w,
                                  gpu_ints(targets), 1.0f, 8);
      FAIL() << "invalid targets were accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("token 9"), std::string::npos) << msg;  // the first bad one
      EXPECT_NE(msg.find("-5"), std::string::npos) << msg;
    }
  }
  // The backend is still usable, and gradients stayed finite.
  targets[9] = 3;
  targets[13] = kIgnoreIndex;
  const LossSum ok = gpu_->lm_head_cross_entropy(dx, dw, x, w, gpu_ints(targets), 1.0f, 8);
  EXPECT_GT(ok.tokens, 0);
  EXPECT_FALSE(std::isnan(ok.loss));
  for (float f : download(*gpu_, dw)) ASSERT_FALSE(std::isnan(f));
  // Shape and dtype errors name the argument.
  EXPECT_THROW(gpu_->lm_head_cross_entropy(Tensor{}, Tensor{}, x, w, gpu_ints({1, 2}), 1.0f, 8),
               Error);
  EXPECT_THROW(gpu_->lm_head_cross_entropy(Tensor{}, Tensor{}, x, w, gpu_ints(targets), 1.0f, 0),
               Error);
  EXPECT_THROW(gpu_->lm_head_cross_entropy(on_gpu(DType::BF16, {T, C}), Tensor{}, x, w,
                                           gpu_ints(targets), 1.0f, 8),
               Error);
}

TEST_F(CudaGemmTest, LmHeadCrossEntropyAllIgnored) {
  const int64_t T = 10, C = 8, V = 50;
  Tensor x = gpu_with(DType::F32, random(T * C), {T, C});
  Tensor w = gpu_with(DType::F32, random(V * C), {V, C});
  Tensor dx = on_gpu(DType::F32, {T, C}), dw = on_gpu(DType::F32, {V, C});
  gpu_->zero(dx);
  gpu_->zero(dw);
  const LossSum r = gpu_->lm_head_cross_entropy(
      dx, dw, x, w, gpu_ints(std::vector<int32_t>(T, kIgnoreIndex)), 1.0f, 4);
  EXPECT_EQ(r.tokens, 0);
  EXPECT_EQ(r.loss, 0.0);
  for (float f : download(*gpu_, dx)) ASSERT_EQ(f, 0.0f);
  for (float f : download(*gpu_, dw)) ASSERT_EQ(f, 0.0f);
}

}  // namespace
}  // namespace temper
