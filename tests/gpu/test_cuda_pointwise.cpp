// CUDA embedding, RMSNorm, RoPE and SwiGLU vs the CPU reference, in f32, bf16 and f16.
// Forward outputs are poisoned (NaN) before the run, so an element the kernel misses fails;
// gradient outputs accumulate (+=), so both sides start them from the same random values.
// The CPU gets the same already-rounded values in f32. Shapes are deliberately not
// multiples of the block sizes (T=37, C=200, H=3, ...), and ids repeat.
// Skipped (with a message) when no CUDA device is visible.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu_fixture.h"

namespace temper {

namespace {

const DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};

class CudaPointwiseTest : public GpuTest {
 protected:
  // n integers uniform in [0, range), from a fresh test stream.
  std::vector<int32_t> random_ints(int64_t n, int64_t range) {
    Rng rng(rng_stream(4321, RngPurpose::Test, next_stream_++));
    std::vector<int32_t> v(n);
    for (auto& x : v) x = int32_t(rng.below(uint64_t(range)));
    return v;
  }
  // 1 + N(0, std²), rounded to t: a norm weight.
  std::vector<float> norm_weight(int64_t n, DType t) {
    auto w = random(n, DType::F32, 0.2f);
    for (auto& x : w) x = round_to(t, 1.0f + x);
    return w;
  }
};

// ---- embedding --------------------------------------------------------------------

TEST_F(CudaPointwiseTest, EmbeddingForwardMatchesCpu) {
  struct Case { int64_t V, T, C; };
  for (Case s : {Case{50, 37, 200}, Case{1000, 1031, 96}}) {
    for (DType t : kFloatTypes) {
      SCOPED_TRACE(fmt::format("V={} T={} C={} {}", s.V, s.T, s.C, dtype_name(t)));
      auto table = random(s.V * s.C, t);
      auto ids = random_ints(s.T, s.V);
      Tensor cout = on_cpu(DType::F32, {s.T, s.C});
      cpu_->embedding_forward(cout, cpu_ints(ids), cpu_with(table, {s.V, s.C}));
      Tensor gout = on_gpu(t, {s.T, s.C});
      gpu_->fill(gout, NAN);
      gpu_->embedding_forward(gout, gpu_ints(ids), gpu_with(t, table, {s.V, s.C}));
      auto got = download(*gpu_, gout), want = download(*cpu_, cout);
      expect_close(got, want, t, "out");
      EXPECT_EQ(got, want) << "a gather must copy exactly";
    }
  }
}

TEST_F(CudaPointwiseTest, EmbeddingBackwardMatchesCpu) {
  // Few distinct ids (heavy repeats), and a larger case spanning many blocks.
  struct Case { int64_t V, T, C, id_range; };
  for (Case s : {Case{50, 37, 200, 10}, Case{300, 3001, 72, 300}, Case{7, 1000, 33, 7}}) {
    for (bool det : {false, true}) {
      for (DType t : kFloatTypes) {
        SCOPED_TRACE(fmt::format("V={} T={} C={} deterministic={} {}", s.V, s.T, s.C, det,
                                 dtype_name(t)));
        auto d0 = random(s.V * s.C, t);  // the accumulator's starting value
        auto dout = random(s.T * s.C, t);
        auto ids = random_ints(s.T, s.id_range);
        Tensor cd = cpu_with(d0, {s.V, s.C});
        cpu_->embedding_backward(cd, cpu_with(dout, {s.T, s.C}), cpu_ints(ids));
        gpu_->set_deterministic(det);
        Tensor gd = gpu_with(t, d0, {s.V, s.C});
        gpu_->embedding_backward(gd, gpu_with(t, dout, {s.T, s.C}), gpu_ints(ids));
        auto got = download(*gpu_, gd), want = download(*cpu_, cd);
        expect_close(got, want, t, "dtable");
        // The ordered path adds each id's tokens in increasing t on top of the old value,
        // in f32 exactly the CPU's sequence of additions.
        if (det && t == DType::F32) EXPECT_EQ(got, want) << "ordered f32 path differs from CPU";
      }
    }
  }
}

TEST_F(CudaPointwiseTest, EmbeddingBackwardDeterministicIsBitExact) {
  const int64_t V = 64, T = 4099, C = 200;
  gpu_->set_deterministic(true);
  for (DType t : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(t));
    auto d0 = random(V * C, t);
    auto ids = random_ints(T, 5);  // ~800 tokens per id: atomics would reorder these sums
    Tensor gids = gpu_ints(ids);
    Tensor gdout = gpu_with(t, random(T * C, t, 10.0f), {T, C});
    std::vector<std::vector<float>> runs;
    for (int r = 0; r < 2; ++r) {
      Tensor gd = gpu_with(t, d0, {V, C});
      gpu_->embedding_backward(gd, gdout, gids);
      runs.push_back(download(*gpu_, gd));
    }
    ASSERT_EQ(runs[0].size(), runs[1].size());
    for (size_t i = 0; i < runs[0].size(); ++i) {
      ASSERT_FALSE(std::isnan(runs[0][i])) << i;
      ASSERT_EQ(runs[0][i], runs[1][i]) << "run 1 and run 2 differ at " << i;
    }
  }
}

// Ids are validated upstream, but a bad one must never be dereferenced: the forward row
// is zeros, the gradient is dropped.
TEST_F(CudaPointwiseTest, EmbeddingInvalidIdsAreSkipped) {
  const int64_t V = 6, C = 40;
  const std::vector<int32_t> ids = {-1, 0, 6, 2, 1000000, 0};
  const int64_t T = int64_t(ids.size());
  for (bool det : {false, true}) {
    for (DType t : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(fmt::format("deterministic={} {}", det, dtype_name(t)));
      gpu_->set_deterministic(det);
      auto table = random(V * C, t);
      Tensor gout = on_gpu(t, {T, C});
      gpu_->fill(gout, NAN);
      gpu_->embedding_forward(gout, gpu_ints(ids), gpu_with(t, table, {V, C}));
      auto out = download(*gpu_, gout);
      for (int64_t i = 0; i < T; ++i)
        for (int64_t c = 0; c < C; ++c) {
          const bool valid = ids[i] >= 0 && ids[i] < V;
          ASSERT_EQ(out[i * C + c], valid ? table[ids[i] * C + c] : 0.0f) << i << "," << c;
        }

      auto dout = random(T * C, t);
      Tensor gd = on_gpu(t, {V, C});
      gpu_->zero(gd);
      gpu_->embedding_backward(gd, gpu_with(t, dout, {T, C}), gpu_ints(ids));
      std::vector<float> want(V * C, 0.0f);
      for (int64_t c = 0; c < C; ++c) {
        want[0 * C + c] = round_to(t, dout[1 * C + c] + dout[5 * C + c]);
        want[2 * C + c] = dout[3 * C + c];
      }
      EXPECT_EQ(download(*gpu_, gd), want);
    }
  }
}

// ---- RMSNorm ----------------------------------------------------------------------

struct NormShape { int64_t T, C; };
// Odd sizes; one row over many warps' worth of columns; more rows than 256 chunks of 32.
const NormShape kNormShapes[] = {{37, 200}, {3, 4096}, {9000, 72}};

TEST_F(CudaPointwiseTest, RmsNormForwardMatchesCpu) {
  const float eps = 1e-5f;
  for (NormShape s : kNormShapes) {
    for (DType t : kFloatTypes) {
      SCOPED_TRACE(fmt::format("T={} C={} {}", s.T, s.C, dtype_name(t)));
      auto x = random(s.T * s.C, t, 2.0f);
      auto w = norm_weight(s.C, t);
      Tensor cout = on_cpu(DType::F32, {s.T, s.C}), crstd = on_cpu(DType::F32, {s.T});
      cpu_->rmsnorm_forward(cout, crstd, cpu_with(x, {s.T, s.C}), cpu_with(w), eps);
      Tensor gout = on_gpu(t, {s.T, s.C}), grstd = on_gpu(DType::F32, {s.T});
      gpu_->fill(gout, NAN);
      gpu_->fill(grstd, NAN);
      gpu_->rmsnorm_forward(gout, grstd, gpu_with(t, x, {s.T, s.C}), gpu_with(t, w), eps);
      expect_close(download(*gpu_, gout), download(*cpu_, cout), t, "out");
      // rstd is f32 from identical inputs whatever the activation dtype.
      expect_close(download(*gpu_, grstd), download(*cpu_, crstd), DType::F32, "rstd");
    }
  }
}

TEST_F(CudaPointwiseTest, RmsNormBackwardMatchesCpu) {
  for (NormShape s : kNormShapes) {
    for (bool with_dweight : {true, false}) {
      for (DType t : kFloatTypes) {
        SCOPED_TRACE(fmt::format("T={} C={} dweight={} {}", s.T, s.C, with_dweight,
                                 dtype_name(t)));
        auto x = random(s.T * s.C, t, 2.0f);
        auto w = norm_weight(s.C, t);
        auto dout = random(s.T * s.C, t);
        auto dx0 = random(s.T * s.C, t), dw0 = random(s.C, t);
        // rstd from the CPU forward, given to both sides (the backward is tested alone).
        Tensor cx = cpu_with(x, {s.T, s.C}), cw = cpu_with(w);
        Tensor cout = on_cpu(DType::F32, {s.T, s.C}), crstd = on_cpu(DType::F32, {s.T});
        cpu_->rmsnorm_forward(cout, crstd, cx, cw, 1e-5f);
        auto rstd = download(*cpu_, crstd);

        Tensor cdx = cpu_with(dx0, {s.T, s.C});
        Tensor cdw = with_dweight ? cpu_with(dw0) : Tensor{};
        cpu_->rmsnorm_backward(cdx, cdw, cpu_with(dout, {s.T, s.C}), cx, cw, crstd);
        Tensor gdx = gpu_with(t, dx0, {s.T, s.C});
        Tensor gdw = with_dweight ? gpu_with(t, dw0) : Tensor{};
        gpu_->rmsnorm_backward(gdx, gdw, gpu_with(t, dout, {s.T, s.C}),
                               gpu_with(t, x, {s.T, s.C}), gpu_with(t, w),
                               gpu_with(DType::F32, rstd));
        expect_close(download(*gpu_, gdx), download(*cpu_, cdx), t, "dx");
        if (with_dweight) expect_close(download(*gpu_, gdw), download(*cpu_, cdw), t, "dweight");
      }
    }
  }
}

// dweight's two-pass reduction has a fixed order: identical bits on every run, with or
// without deterministic mode.
TEST_F(CudaPointwiseTest, RmsNormBackwardIsBitExact) {
  const int64_t T = 9000, C = 200;
  auto x = random(T * C, DType::F32), w = norm_weight(C, DType::F32);
  auto dout = random(T * C, DType::F32, 5.0f);
  Tensor gx = gpu_with(DType::F32, x, {T, C}), gw = gpu_with(DType::F32, w);
  Tensor gdout = gpu_with(DType::F32, dout, {T, C});
  Tensor gout = on_gpu(DType::F32, {T, C}), grstd = on_gpu(DType::F32, {T});
  gpu_->rmsnorm_forward(gout, grstd, gx, gw, 1e-6f);
  std::vector<std::vector<float>> dws, dxs;
  for (bool det : {false, true, false}) {
    gpu_->set_deterministic(det);
    Tensor gdx = on_gpu(DType::F32, {T, C}), gdw = on_gpu(DType::F32, {C});
    gpu_->zero(gdx);
    gpu_->zero(gdw);
    gpu_->rmsnorm_backward(gdx, gdw, gdout, gx, gw, grstd);
    dxs.push_back(download(*gpu_, gdx));
    dws.push_back(download(*gpu_, gdw));
  }
  EXPECT_EQ(dws[0], dws[1]);
  EXPECT_EQ(dws[0], dws[2]);
  EXPECT_EQ(dxs[0], dxs[1]);
}

// ---- RoPE -------------------------------------------------------------------------

// cos/sin [P, D/2] of Llama's angles θ(p, j) = p · 10000^(−2j/D).
void rope_tables(int64_t P, int64_t D, std::vector<float>& cos_t, std::vector<float>& sin_t) {
  const int64_t half = D / 2;
  cos_t.resize(P * half);
  sin_t.resize(P * half);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t j = 0; j < half; ++j) {
      const double a = double(p) * std::pow(10000.0, -2.0 * double(j) / double(D));
      cos_t[p * half + j] = float(std::cos(a));
      sin_t[p * half + j] = float(std::sin(a));
    }
}

TEST_F(CudaPointwiseTest, RopeForwardAndBackwardMatchCpu) {
  struct Case { int64_t T, H, D, P; };
  for (Case s : {Case{37, 3, 64, 50}, Case{5, 32, 128, 4096}, Case{100, 1, 6, 7}}) {
    std::vector<float> cos_t, sin_t;
    rope_tables(s.P, s.D, cos_t, sin_t);
    const Shape tab{s.P, s.D / 2}, xs{s.T, s.H, s.D};
    Tensor ccos = cpu_with(cos_t, tab), csin = cpu_with(sin_t, tab);
    Tensor gcos = gpu_with(DType::F32, cos_t, tab), gsin = gpu_with(DType::F32, sin_t, tab);
    auto pos = random_ints(s.T, s.P);  // repeats and any order
    Tensor cpos = cpu_ints(pos), gpos = gpu_ints(pos);
    for (DType t : kFloatTypes) {
      SCOPED_TRACE(fmt::format("T={} H={} D={} P={} {}", s.T, s.H, s.D, s.P, dtype_name(t)));
      auto x = random(s.T * s.H * s.D, t);
      Tensor cx = cpu_with(x, xs), gx = gpu_with(t, x, xs);
      cpu_->rope_forward(cx, cpos, ccos, csin);
      gpu_->rope_forward(gx, gpos, gcos, gsin);
      expect_close(download(*gpu_, gx), download(*cpu_, cx), t, "rope_forward");

      auto dx = random(s.T * s.H * s.D, t);
      Tensor cdx = cpu_with(dx, xs), gdx = gpu_with(t, dx, xs);
      cpu_->rope_backward(cdx, cpos, ccos, csin);
      gpu_->rope_backward(gdx, gpos, gcos, gsin);
      expect_close(download(*gpu_, gdx), download(*cpu_, cdx), t, "rope_backward");

      if (t == DType::F32) {  // backward undoes forward (an orthogonal rotation)
        gpu_->rope_backward(gx, gpos, gcos, gsin);
        EXPECT_LE(test::rel_error(download(*gpu_, gx), x), kTolF32) << "round trip";
      }
    }
  }
}

// ---- SwiGLU -----------------------------------------------------------------------

TEST_F(CudaPointwiseTest, SwigluForwardAndBackwardMatchCpu) {
  struct Case { int64_t T, F; };
  for (Case s : {Case{37, 200}, Case{129, 1000}}) {
    const Shape sh{s.T, s.F};
    const int64_t n = s.T * s.F;
    for (DType t : kFloatTypes) {
      SCOPED_TRACE(fmt::format("T={} F={} {}", s.T, s.F, dtype_name(t)));
      auto gate = random(n, t, 3.0f), up = random(n, t);  // wide gates: saturated σ too
      Tensor cg = cpu_with(gate, sh), cu = cpu_with(up, sh);
      Tensor gg = gpu_with(t, gate, sh), gu = gpu_with(t, up, sh);

      Tensor cout = on_cpu(DType::F32, sh), gout = on_gpu(t, sh);
      cpu_->swiglu_forward(cout, cg, cu);
      gpu_->fill(gout, NAN);
      gpu_->swiglu_forward(gout, gg, gu);
      expect_close(download(*gpu_, gout), download(*cpu_, cout), t, "out");

      auto dout = random(n, t), dg0 = random(n, t), du0 = random(n, t);
      Tensor cdg = cpu_with(dg0, sh), cdu = cpu_with(du0, sh);
      Tensor gdg = gpu_with(t, dg0, sh), gdu = gpu_with(t, du0, sh);
      cpu_->swiglu_backward(cdg, cdu, cpu_with(dout, sh), cg, cu);
      gpu_->swiglu_backward(gdg, gdu, gpu_with(t, dout, sh), gg, gu);
      expect_close(download(*gpu_, gdg), download(*cpu_, cdg), t, "dgate");
      expect_close(download(*gpu_, gdu), download(*cpu_, cdu), t, "dup");
    }
  }
}

// ---- argument checks --------------------------------------------------------------

// Runs f, which must throw a temper::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<const char*> parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown (expected one mentioning " << *parts.begin() << ")";
  } catch (const Error& e) {
    for (const char* p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST_F(CudaPointwiseTest, ErrorsNameTheProblem) {
  Tensor x = on_gpu(DType::F32, {4, 8}), w = on_gpu(DType::F32, {8});
  Tensor bf = on_gpu(DType::BF16, {4, 8}), r = on_gpu(DType::F32, {4});
  Tensor ids = gpu_ints({0, 1, 2, 3});
  expect_error([&] { gpu_->rmsnorm_forward(x, on_gpu(DType::BF16, {4}), x, w, 1e-5f); },
               {"rmsnorm_forward", "rstd"});
  expect_error([&] { gpu_->rmsnorm_forward(x, r, x, on_gpu(DType::F32, {7}), 1e-5f); },
               {"rmsnorm_forward", "weight"});
  expect_error([&] { gpu_->rmsnorm_backward(bf, Tensor{}, x, x, w, r); },
               {"rmsnorm_backward", "dx"});
  expect_error([&] { gpu_->embedding_forward(x, on_gpu(DType::F32, {4}), x); },
               {"embedding_forward", "ids"});
  expect_error([&] { gpu_->embedding_backward(x, on_gpu(DType::F32, {5, 8}), ids); },
               {"embedding_backward", "dout"});
  expect_error([&] { gpu_->embedding_backward(on_cpu(DType::F32, {4, 8}), x, ids); },
               {"embedding_backward", "dtable"});
  Tensor odd = on_gpu(DType::F32, {4, 2, 7}), tab = on_gpu(DType::F32, {16, 3});
  expect_error([&] { gpu_->rope_forward(odd, ids, tab, tab); }, {"rope_forward", "even"});
  Tensor q = on_gpu(DType::F32, {4, 2, 8});
  expect_error([&] { gpu_->rope_backward(q, ids, tab, tab); }, {"rope_backward", "cos"});
  expect_error([&] { gpu_->swiglu_forward(x, x, bf); }, {"swiglu_forward", "up"});
  expect_error([&] { gpu_->swiglu_backward(x, x, x, x, on_gpu(DType::F32, {8, 4})); },
               {"swiglu_backward", "up"});
  Tensor i = on_gpu(DType::I32, {4, 8});
  expect_error([&] { gpu_->swiglu_forward(i, i, i); }, {"swiglu_forward", "i32"});
}

}  // namespace
}  // namespace temper
