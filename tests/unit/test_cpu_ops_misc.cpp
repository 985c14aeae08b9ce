// CPU backend, everything but the model ops' gradients (those are in test_cpu_ops.cpp):
// AdamW against the formula, casts, sum_squares, fill_normal, elementwise ops, argument
// validation, and bitwise reproducibility across OpenMP thread counts.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/error.h"
#include "core/rng.h"
#include "kernels/cpu/cpu_backend.h"
#include "support/test_util.h"

namespace temper {
namespace {

using Vec = std::vector<float>;

Tensor f32(Vec& v, Shape s) { return Tensor(v.data(), DType::F32, s); }
Tensor i32(std::vector<int32_t>& v, Shape s) { return Tensor(v.data(), DType::I32, s); }

Vec randn(int64_t n, uint64_t seed, float std = 1.0f) {
  const RngStream s = rng_stream(seed, RngPurpose::Test);
  Vec v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = std * s.normal(uint64_t(i));
  return v;
}

// The temper::Error message fn() throws, or "" when it throws nothing.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
#define EXPECT_ERROR_CONTAINS(stmt, text)                                    \
  do {                                                                       \
    const std::string msg_ = error_of([&] { stmt; });                        \
    EXPECT_NE(msg_.find(text), std::string::npos) << "message: '" << msg_ << "'"; \
  } while (0)

// ---- AdamW --------------------------------------------------------------------------

// Three steps against the textbook formula in f64:
//   m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;  m̂ = m/(1-β1^t);  v̂ = v/(1-β2^t)
//   p -= lr·(m̂/(sqrt(v̂)+eps) + wd·p),   g = grad·grad_scale
// eps is large next to sqrt(v̂) here, so eps inside the sqrt, a missing bias correction
// or decay applied after the Adam step instead of to the old p all fail the 1e-6 bound.
TEST(CpuOps, AdamWMatchesFormula) {
  CpuBackend be;
  const int64_t n = 6;
  AdamWStep hp;
  hp.lr = 1e-2f, hp.beta1 = 0.9f, hp.beta2 = 0.95f, hp.eps = 1e-3f, hp.weight_decay = 0.1f;
  hp.grad_scale = 0.5f;
  Vec master = randn(n, 1), m(n), v(n), param(n);
  std::vector<uint16_t> param_bf16(n);
  std::vector<double> rp(master.begin(), master.end()), rm(n), rv(n);
  for (int64_t step = 1; step <= 3; ++step) {
    hp.step = step;
    Vec grad = randn(n, 10 + step, 0.01f);
    be.adamw_update(f32(master, {n}), f32(param, {n}), f32(grad, {n}), f32(m, {n}), f32(v, {n}),
                    hp);
    for (int64_t i = 0; i < n; ++i) {
      const double g = double(grad[i]) * hp.grad_scale;
      rm[i] = hp.beta1 * rm[i] + (1 - double(hp.beta1)) * g;
      rv[i] = hp.beta2 * rv[i] + (1 - double(hp.beta2)) * g * g;
      const double mhat = rm[i] / (1 - std::pow(double(hp.beta1), step));
      const double vhat = rv[i] / (1 - std::pow(double(hp.beta2), step));
      rp[i] -= hp.lr * (mhat / (std::sqrt(vhat) + hp.eps) + hp.weight_decay * rp[i]);
      EXPECT_NEAR(master[i], rp[i], 1e-6) << "step " << step << " i " << i;
      EXPECT_NEAR(m[i], rm[i], 1e-9);
      EXPECT_NEAR(v[i], rv[i], 1e-11);
      EXPECT_EQ(param[i], master[i]);  // the separate f32 copy follows master exactly
    }
  }
  // A bf16 param receives master rounded to bf16.
  Vec grad = randn(n, 20);
  hp.step = 4;
  be.adamw_update(f32(master, {n}), Tensor(param_bf16.data(), DType::BF16, Shape{n}),
                  f32(grad, {n}), f32(m, {n}), f32(v, {n}), hp);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(param_bf16[i], f32_to_bf16(master[i]));
}

// ---- copy / fill / elementwise --------------------------------------------------------

TEST(CpuOps, CopyCastsAndMemcpy) {
  CpuBackend be;
  const int64_t n = 1000;
  Vec x = randn(n, 3, 10.0f), back(n);
  x[0] = 0.0f, x[1] = -1e-30f, x[2] = 3e38f, x[3] = 1.0f + 1.0f / 512;  // a tie rounds to even
  std::vector<uint16_t> half(n);
  Tensor tb(half.data(), DType::BF16, Shape{n});
  be.copy(tb, f32(x, {n}));
  be.copy(f32(back, {n}), tb);
  for (int64_t i = 0; i < n; ++i) EXPECT_LE(std::abs(back[i] - x[i]), std::abs(x[i]) / 256) << i;
  EXPECT_EQ(back[3], 1.0f);
  EXPECT_EQ(test::to_host(be, tb), back);

  Tensor th(half.data(), DType::F16, Shape{n});  // f16 has 10 mantissa bits, range 65504
  Vec small = randn(n, 4, 100.0f);
  small[0] = 6e-6f;  // subnormal in f16
  be.copy(th, f32(small, {n}));
  be.copy(f32(back, {n}), th);
  for (int64_t i = 1; i < n; ++i) EXPECT_LE(std::abs(back[i] - small[i]), std::abs(small[i]) / 2048);
  EXPECT_NEAR(back[0], 6e-6f, 6e-8f);

  std::vector<int32_t> a = {1, -2, 3, 1 << 30}, b(4);  // same dtype: a plain copy of any dtype
  be.copy(i32(b, {2, 2}), i32(a, {4}));
  EXPECT_EQ(a, b);
  EXPECT_ERROR_CONTAINS(be.copy(f32(back, {4}), i32(a, {4})), "no cast");
  EXPECT_ERROR_CONTAINS(be.copy(f32(back, {n}), i32(a, {4})), "element counts");
}

TEST(CpuOps, ElementwiseFillZero) {
  CpuBackend be;
  const int64_t n = 37;
  Vec a = randn(n, 5), b = randn(n, 6), out(n);
  be.add(f32(out, {n}), f32(a, {n}), f32(b, {n}));
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] + b[i]);
  Vec a2 = a;
  be.add(f32(a2, {n}), f32(a2, {n}), f32(b, {n}));  // out aliases a
  EXPECT_EQ(a2, out);
  be.scale(f32(out, {n}), -0.5f);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], (a[i] + b[i]) * -0.5f);
  be.fill(f32(out, {n}), 2.5f);
  EXPECT_EQ(out, Vec(n, 2.5f));
  be.zero(f32(out, {n}));
  EXPECT_EQ(out, Vec(n, 0.0f));
}

TEST(CpuOps, SumSquares) {
  CpuBackend be;
  const int64_t n = 10007;  // several 4096-blocks and a ragged tail
  Vec x = randn(n, 7, 3.0f);
  double ref = 0;
  for (float f : x) ref += double(f) * f;
  EXPECT_NEAR(be.sum_squares(f32(x, {n})), ref, 1e-12 * ref);
  EXPECT_EQ(be.sum_squares(f32(x, {0})), 0.0);  // an empty view of real memory
}

TEST(CpuOps, FillNormal) {
  CpuBackend be;
  const int64_t n = 200000;
  const RngStream s = rng_stream(42, RngPurpose::Init, 3);
  Vec a(n), b(n);
  be.fill_normal(f32(a, {n}), s, 0, 2.0f);
  be.fill_normal(f32(b, {n}), s, 0, 2.0f);
  EXPECT_EQ(a, b);  // deterministic
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(a[i], 2.0f * s.normal(uint64_t(i)));
  double sum = 0, sq = 0;
  for (float f : a) sum += f, sq += double(f) * f;
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.02);  // std error of the mean is 2/sqrt(n) = 0.0045
  EXPECT_NEAR(sd, 2.0, 0.02);
  // A shard at offset k draws what the whole tensor has at k.
  Vec shard(1000);
  be.fill_normal(f32(shard, {1000}), s, 5000, 2.0f);
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(shard[i], a[5000 + i]);
  be.fill_normal(f32(b, {n}), rng_stream(43, RngPurpose::Init, 3), 0, 2.0f);
  EXPECT_NE(a, b);  // another seed, another draw
}

// ---- argument validation -------------------------------------------------------------

TEST(CpuOps, BadArgumentsThrow) {
  CpuBackend be;
  Vec x(6 * 4), w(4), out(6 * 4), r(6), W(3 * 5), o(6 * 3);
  std::vector<uint16_t> xb(6 * 4);
  Tensor x_bf16(xb.data(), DType::BF16, Shape{6, 4});
  // dtype: the cpu backend is f32 only
  EXPECT_ERROR_CONTAINS(be.rmsnorm_forward(f32(out, {6, 4}), f32(r, {6}), x_bf16, f32(w, {4}), 1e-5f),
                        "rmsnorm_forward: x");
  // shape: weight [3, 5] does not take x [6, 4]
  EXPECT_ERROR_CONTAINS(be.linear_forward(f32(o, {6, 3}), f32(x, {6, 4}), f32(W, {3, 5}), Tensor{}),
                        "linear_forward: weight");
  EXPECT_THROW(be.linear_forward(f32(o, {3, 6}), f32(x, {6, 4}), f32(w, {1, 4}), Tensor{}), Error);
  EXPECT_THROW(be.add(f32(out, {6, 4}), f32(x, {6, 4}), f32(x, {4, 6})), Error);

  // ids / targets / positions / cu_seqlens are i32 and in range; errors name the token.
  Vec table(5 * 4), emb(3 * 4);
  std::vector<int32_t> ids = {1, 4, 5};
  EXPECT_ERROR_CONTAINS(be.embedding_forward(f32(emb, {3, 4}), i32(ids, {3}), f32(table, {5, 4})),
                        "token 2 has id 5");
  EXPECT_THROW(be.embedding_forward(f32(emb, {3, 4}), f32(table, {3}), f32(table, {5, 4})), Error);
  std::vector<int32_t> targets = {0, -100, 2, -1, 1, 0};
  Vec head(3 * 4);
  EXPECT_ERROR_CONTAINS(be.lm_head_cross_entropy(Tensor{}, Tensor{}, f32(x, {6, 4}), f32(head, {3, 4}),
                                                 i32(targets, {6}), 1.0f, 4),
                        "token 3 has target -1");
  EXPECT_THROW(be.lm_head_cross_entropy(Tensor{}, Tensor{}, f32(x, {6, 4}), f32(head, {3, 4}),
                                        i32(targets, {6}), 1.0f, 0),
               Error);  // chunk 0

  Vec qk(6 * 2 * 2), lse(2 * 6), cs(4 * 1);
  std::vector<int32_t> pos = {0, 1, 2, 3, 4, 0};
  EXPECT_ERROR_CONTAINS(be.rope_forward(f32(qk, {6, 2, 2}), i32(pos, {6}), f32(cs, {4, 1}), f32(cs, {4, 1})),
                        "token 4 has position 4");
  std::vector<int32_t> cu_bad = {0, 4, 5};  // ends at 5, T = 6
  EXPECT_ERROR_CONTAINS(be.attention_forward(f32(qk, {6, 2, 2}), f32(lse, {2, 6}), f32(qk, {6, 2, 2}),
                                             f32(qk, {6, 2, 2}), f32(qk, {6, 2, 2}), i32(cu_bad, {3}), 0,
                                             Tensor{}, Tensor{}),
                        "cu_seqlens");
  Vec kv3(6 * 3 * 2);  // 2 query heads over 3 kv heads
  std::vector<int32_t> cu = {0, 6};
  EXPECT_ERROR_CONTAINS(be.attention_forward(f32(qk, {6, 2, 2}), f32(lse, {2, 6}), f32(qk, {6, 2, 2}),
                                             f32(kv3, {6, 3, 2}), f32(kv3, {6, 3, 2}), i32(cu, {2}), 0,
                                             Tensor{}, Tensor{}),
                        "kv heads");
  EXPECT_ERROR_CONTAINS(be.attention_forward(f32(qk, {6, 2, 2}), f32(lse, {6, 2}), f32(qk, {6, 2, 2}),
                                             f32(qk, {6, 2, 2}), f32(qk, {6, 2, 2}), i32(cu, {2}), 0,
                                             Tensor{}, Tensor{}),
                        "attention_forward: lse");
  // A prefix needs both halves, with q's kv heads and head dim.
  Vec pre(3 * 2 * 2);
  EXPECT_ERROR_CONTAINS(be.attention_forward(f32(qk, {6, 2, 2}), f32(lse, {2, 6}), f32(qk, {6, 2, 2}),
                                             f32(qk, {6, 2, 2}), f32(qk, {6, 2, 2}), i32(cu, {2}), 0,
                                             f32(pre, {3, 2, 2}), Tensor{}),
                        "both");
  EXPECT_ERROR_CONTAINS(be.attention_forward(f32(qk, {6, 2, 2}), f32(lse, {2, 6}), f32(qk, {6, 2, 2}),
                                             f32(qk, {6, 2, 2}), f32(qk, {6, 2, 2}), i32(cu, {2}), 0,
                                             f32(pre, {3, 2, 2}), f32(pre, {3, 4, 1})),
                        "prefix_v");
}

// ---- reproducibility ----------------------------------------------------------------

// The reductions over rows (dweight, dtable, dbias, sum_squares) and attention's dk/dv
// must give the same bits with 1 thread and with several: no races, no order that
// depends on how OpenMP splits the work.
TEST(CpuOps, DeterministicAcrossThreadCounts) {
#ifndef _OPENMP
  GTEST_SKIP() << "built without OpenMP";
#else
  CpuBackend be;
  const int64_t T = 40, C = 130, V = 7, Hq = 4, Hkv = 2, D = 8;
  Vec x = randn(T * C, 1), w = randn(C, 2), g = randn(T * C, 3);
  std::vector<int32_t> ids(T), cu = {0, 17, 18, 40};
  for (int64_t t = 0; t < T; ++t) ids[t] = int32_t((t * 5) % V);
  Vec q = randn(T * Hq * D, 4), k = randn(T * Hkv * D, 5), v = randn(T * Hkv * D, 6);
  Vec dout = randn(T * Hq * D, 7);
  const int64_t P = 3;  // a learned attention prefix: dprefix sums over every token
  Vec pk = randn(P * Hkv * D, 8), pv = randn(P * Hkv * D, 9);

  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    std::vector<Vec> res;
    Vec out(T * C), rstd(T), dx(T * C), dw(C), dtable(V * C), db(C);
    be.rmsnorm_forward(f32(out, {T, C}), f32(rstd, {T}), f32(x, {T, C}), f32(w, {C}), 1e-5f);
    be.rmsnorm_backward(f32(dx, {T, C}), f32(dw, {C}), f32(g, {T, C}), f32(x, {T, C}), f32(w, {C}),
                        f32(rstd, {T}));
    be.embedding_backward(f32(dtable, {V, C}), f32(g, {T, C}), i32(ids, {T}));
    be.linear_backward(Tensor{}, Tensor{}, f32(db, {C}), f32(g, {T, C}), Tensor{}, Tensor{});
    Vec ss = {float(be.sum_squares(f32(g, {T * C})))};
    Vec ao(T * Hq * D), lse(Hq * T), dq(q.size()), dk(k.size()), dv(v.size());
    Vec dpk(pk.size()), dpv(pv.size());
    be.attention_forward(f32(ao, {T, Hq, D}), f32(lse, {Hq, T}), f32(q, {T, Hq, D}),
                         f32(k, {T, Hkv, D}), f32(v, {T, Hkv, D}), i32(cu, {4}), 5,
                         f32(pk, {P, Hkv, D}), f32(pv, {P, Hkv, D}));
    be.attention_backward(f32(dq, {T, Hq, D}), f32(dk, {T, Hkv, D}), f32(dv, {T, Hkv, D}),
                          f32(dout, {T, Hq, D}), f32(q, {T, Hq, D}), f32(k, {T, Hkv, D}),
                          f32(v, {T, Hkv, D}), f32(ao, {T, Hq, D}), f32(lse, {Hq, T}),
                          i32(cu, {4}), 5, f32(pk, {P, Hkv, D}), f32(pv, {P, Hkv, D}),
                          f32(dpk, {P, Hkv, D}), f32(dpv, {P, Hkv, D}));
    return std::vector<Vec>{out, dx, dw, dtable, db, ss, ao, lse, dq, dk, dv, dpk, dpv};
  };
  const int saved = omp_get_max_threads();
  const auto one = run(1), many = run(5);
  omp_set_num_threads(saved);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], many[i]) << "result " << i;
#endif
}

}  // namespace
}  // namespace temper
