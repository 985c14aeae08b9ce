// CPU backend, model ops: every backward is checked against central finite differences
// of its own forward, and every forward against a naive f64 reference written here.
//
// Gradient checks use the scalar loss L = Σ out·R (R random, fixed), computed in f64
// from the f32 forward outputs, so the analytic input gradient is backward(dout = R).
// (Data movement, AdamW and argument checks are in test_cpu_ops_misc.cpp.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/rng.h"
#include "kernels/cpu/cpu_backend.h"
#include "support/test_util.h"

namespace temper {
namespace {

using Vec = std::vector<float>;

// The CPU backend works on plain host memory, so test vectors are the tensors' storage.
Tensor f32(Vec& v, Shape s) {
  EXPECT_EQ(s.numel(), int64_t(v.size())) << s.str();
  return Tensor(v.data(), DType::F32, s);
}
Tensor i32(std::vector<int32_t>& v, Shape s) {
  EXPECT_EQ(s.numel(), int64_t(v.size())) << s.str();
  return Tensor(v.data(), DType::I32, s);
}

// n values mean + std·N(0,1) from Philox test stream `seed`.
Vec randn(int64_t n, uint64_t seed, float std = 1.0f, float mean = 0.0f) {
  const RngStream s = rng_stream(seed, RngPurpose::Test);
  Vec v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = mean + std * s.normal(uint64_t(i));
  return v;
}

// Σ a·b in f64: the scalar test loss L = Σ out·R.
double dot64(const Vec& a, const Vec& b) {
  double acc = 0;
  for (size_t i = 0; i < a.size(); ++i) acc += double(a[i]) * b[i];
  return acc;
}

// Zeroes the gradient buffers, runs backward() twice, and checks the second call added
// the same amount again (d* +=, not =). Leaves the single-call gradient in the buffers.
void backward_twice(const char* name, std::vector<Vec*> grads,
                    const std::function<void()>& backward) {
  SCOPED_TRACE(name);
  for (Vec* g : grads) std::fill(g->begin(), g->end(), 0.0f);
  backward();
  std::vector<Vec> once;
  for (Vec* g : grads) once.push_back(*g);
  backward();
  for (size_t k = 0; k < grads.size(); ++k) {
    Vec twice_expected(once[k].size());
    for (size_t i = 0; i < once[k].size(); ++i) twice_expected[i] = 2.0f * once[k][i];
    EXPECT_LT(test::rel_error(*grads[k], twice_expected), 1e-6)
        << "gradient " << k << " is not accumulated (+=) on a second backward call";
    *grads[k] = once[k];
  }
}

struct FdOptions {
  double h = 1e-2;    // step; fp32 forwards make much smaller steps noisy
  double tol = 2e-3;  // relative error bound (correct kernels stay below 1e-4)
  int elements = 8;   // single entries checked besides the random direction
  uint64_t seed = 7;
};

// Checks `grad` = dL/dx by central differences of loss(), which reruns the forward on
// the current contents of x (x is perturbed in place and restored).
//  - Directional: u ~ N(0,1); L(x+hu) − L(x−hu) vs <grad, x₊ − x₋> (the f32-rounded step),
//    error relative to max(|<grad,u>|, ||grad||)·2h, ||grad|| being the typical size of
//    <grad,u>. This sees every entry at once.
//  - Elementwise: a few random entries, error relative to max(|g_i|, 0.1·max|g|).
// A wrong factor, sign, missing term or transposed index gives errors of order 0.1-1, far
// above the tolerance; fp32 rounding and O(h²) truncation stay below 1e-4. Each "fails
// here" comment below names a bug that was planted in the kernel and caught.
void check_gradient(const char* name, Vec& x, const Vec& grad, const std::function<double()>& loss,
                    FdOptions opt = {}) {
  SCOPED_TRACE(name);
  ASSERT_EQ(x.size(), grad.size());
#ifdef _OPENMP
  // The ~20 tiny forwards below run on one thread: on a loaded machine, spinning OpenMP
  // barriers made them take seconds. (Forwards and backwards outside this loop keep the
  // default thread count; CpuOps.DeterministicAcrossThreadCounts compares 1 vs many.)
  struct OneThread {
    int saved = omp_get_max_threads();
    OneThread() { omp_set_num_threads(1); }
    ~OneThread() { omp_set_num_threads(saved); }
  } one_thread;
#endif
  const size_t n = x.size();
  const Vec x0 = x;
  double gnorm = 0, gmax = 0;
  for (float g : grad) gnorm += double(g) * g, gmax = std::max(gmax, double(std::abs(g)));
  gnorm = std::sqrt(gnorm);
  ASSERT_GT(gnorm, 0.0) << "gradient is identically zero: the check would be vacuous";

  const Vec u = randn(int64_t(n), opt.seed + 1000);
  Vec xp(n), xm(n);
  for (size_t i = 0; i < n; ++i) {
    xp[i] = float(x0[i] + opt.h * u[i]);
    xm[i] = float(x0[i] - opt.h * u[i]);
  }
  x = xp;
  const double lp = loss();
  x = xm;
  const double lm = loss();
  x = x0;
  double analytic = 0;  // <grad, x₊ − x₋>
  for (size_t i = 0; i < n; ++i) analytic += double(grad[i]) * (double(xp[i]) - xm[i]);
  const double fd = lp - lm;
  const double denom = std::max(std::abs(analytic), 2 * opt.h * gnorm);
  EXPECT_LT(std::abs(fd - analytic) / denom, opt.tol)
      << "directional derivative: finite difference " << fd / (2 * opt.h) << " vs analytic "
      << analytic / (2 * opt.h);

  Rng pick(rng_stream(opt.seed, RngPurpose::Test, 1));
  for (int e = 0; e < opt.elements; ++e) {
    const size_t i = size_t(pick.below(n));
    const float up = float(x0[i] + opt.h), down = float(x0[i] - opt.h);
    x[i] = up;
    const double l_up = loss();
    x[i] = down;
    const double l_down = loss();
    x[i] = x0[i];
    const double fdi = (l_up - l_down) / (double(up) - down);
    EXPECT_NEAR(fdi, grad[i], opt.tol * std::max(double(std::abs(grad[i])), 0.1 * gmax))
        << "element " << i;
  }
  loss();  // leave the forward outputs of the unperturbed x behind
}


// ---- embedding ----------------------------------------------------------------------

TEST(CpuGrad, Embedding) {
  CpuBackend be;
  const int64_t V = 11, C = 8, T = 9;
  std::vector<int32_t> ids = {3, 0, 7, 3, 10, 3, 5, 0, 9};  // repeats: the scatter must add
  Vec table = randn(V * C, 1), R = randn(T * C, 2), out(T * C);

  be.embedding_forward(f32(out, {T, C}), i32(ids, {T}), f32(table, {V, C}));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) ASSERT_EQ(out[t * C + c], table[ids[t] * C + c]);

  auto loss = [&] {
    be.embedding_forward(f32(out, {T, C}), i32(ids, {T}), f32(table, {V, C}));
    return dot64(out, R);
  };
  Vec dtable(V * C);
  backward_twice("embedding", {&dtable}, [&] {
    be.embedding_backward(f32(dtable, {V, C}), f32(R, {T, C}), i32(ids, {T}));
  });
  check_gradient("dtable", table, dtable, loss);
}

// ---- RMSNorm ------------------------------------------------------------------------

TEST(CpuGrad, RmsNorm) {
  CpuBackend be;
  const int64_t T = 5, C = 16;
  const float eps = 1e-5f;
  Vec x = randn(T * C, 10), w = randn(C, 11, 0.3f, 1.0f), R = randn(T * C, 12);
  Vec out(T * C), rstd(T);

  auto forward = [&] {
    be.rmsnorm_forward(f32(out, {T, C}), f32(rstd, {T}), f32(x, {T, C}), f32(w, {C}), eps);
  };
  forward();
  for (int64_t t = 0; t < T; ++t) {  // f64 reference
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(x[t * C + c]) * x[t * C + c];
    const double r = 1.0 / std::sqrt(ss / C + eps);
    EXPECT_NEAR(rstd[t], r, 1e-6 * r);
    for (int64_t c = 0; c < C; ++c) EXPECT_NEAR(out[t * C + c], x[t * C + c] * r * w[c], 1e-5);
  }

  Vec dx(T * C), dw(C);
  backward_twice("rmsnorm", {&dx, &dw}, [&] {
    be.rmsnorm_backward(f32(dx, {T, C}), f32(dw, {C}), f32(R, {T, C}), f32(x, {T, C}),
                        f32(w, {C}), f32(rstd, {T}));
  });
  auto loss = [&] { forward(); return dot64(out, R); };
  // Dropping the −x·r²·mean(dout·w·x) term of dx, or rstd from dweight, fails here.
  check_gradient("dx", x, dx, loss);
  check_gradient("dweight", w, dw, loss);
}

// ---- linear -------------------------------------------------------------------------

TEST(CpuGrad, Linear) {
  CpuBackend be;
  const int64_t T = 6, I = 7, O = 5;
  Vec x = randn(T * I, 20), W = randn(O * I, 21, 0.5f), b = randn(O, 22), R = randn(T * O, 23);
  Vec out(T * O);
  auto forward = [&] {
    be.linear_forward(f32(out, {T, O}), f32(x, {T, I}), f32(W, {O, I}), f32(b, {O}));
  };
  forward();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < O; ++o) {
      double ref = b[o];
      for (int64_t i = 0; i < I; ++i) ref += double(x[t * I + i]) * W[o * I + i];
      EXPECT_NEAR(out[t * O + o], ref, 1e-5);
    }

  Vec dx(T * I), dW(O * I), db(O);
  backward_twice("linear", {&dx, &dW, &db}, [&] {
    be.linear_backward(f32(dx, {T, I}), f32(dW, {O, I}), f32(db, {O}), f32(R, {T, O}),
                       f32(x, {T, I}), f32(W, {O, I}));
  });
  auto loss = [&] { forward(); return dot64(out, R); };
  check_gradient("dx", x, dx, loss);
  check_gradient("dweight", W, dW, loss);  // sgemm with beta = 0 fails backward_twice
  check_gradient("dbias", b, db, loss);     // a dbias sum that skips a row fails here

  // Optional outputs: dx alone needs neither x nor dweight / dbias.
  Vec dx_only(T * I);
  be.linear_backward(f32(dx_only, {T, I}), Tensor{}, Tensor{}, f32(R, {T, O}), Tensor{},
                     f32(W, {O, I}));
  EXPECT_LT(test::rel_error(dx_only, dx), 1e-6);
}

// ---- RoPE ---------------------------------------------------------------------------

struct RopeCase {
  int64_t T = 6, H = 3, D = 8, P = 16;
  std::vector<int32_t> pos = {0, 5, 3, 15, 1, 5};
  Vec cos, sin;  // [P, D/2]
  RopeCase() {
    for (int64_t p = 0; p < P; ++p)
      for (int64_t j = 0; j < D / 2; ++j) {
        const double a = p * std::pow(10000.0, -2.0 * j / D);
        cos.push_back(float(std::cos(a)));
        sin.push_back(float(std::sin(a)));
      }
  }
  Tensor c() { return f32(cos, {P, D / 2}); }
  Tensor s() { return f32(sin, {P, D / 2}); }
};

TEST(CpuGrad, Rope) {
  CpuBackend be;
  RopeCase rc;
  const int64_t T = rc.T, H = rc.H, D = rc.D, half = D / 2;
  Vec x = randn(T * H * D, 30), R = randn(T * H * D, 31), y;
  auto forward = [&] {
    y = x;
    be.rope_forward(f32(y, {T, H, D}), i32(rc.pos, {T}), rc.c(), rc.s());
  };
  forward();
  for (int64_t t = 0; t < T; ++t)  // rotate-half reference
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < half; ++j) {
        const int64_t i = (t * H + h) * D + j;
        const double c = rc.cos[rc.pos[t] * half + j], s = rc.sin[rc.pos[t] * half + j];
        EXPECT_NEAR(y[i], x[i] * c - x[i + half] * s, 1e-6);
        EXPECT_NEAR(y[i + half], x[i + half] * c + x[i] * s, 1e-6);
      }

  // In place, so no accumulation: the gradient is rope_backward applied to a copy of R.
  Vec dx = R;
  be.rope_backward(f32(dx, {T, H, D}), i32(rc.pos, {T}), rc.c(), rc.s());
  // Applying the forward rotation again instead of its inverse fails here.
  check_gradient("dx", x, dx, [&] { forward(); return dot64(y, R); });
}

TEST(CpuOps, RopeBackwardInvertsForward) {
  CpuBackend be;
  RopeCase rc;
  Vec x = randn(rc.T * rc.H * rc.D, 32), y = x;
  Tensor ty = f32(y, {rc.T, rc.H, rc.D});
  be.rope_forward(ty, i32(rc.pos, {rc.T}), rc.c(), rc.s());
  EXPECT_GT(test::rel_error(y, x), 0.1);  // it did rotate
  be.rope_backward(ty, i32(rc.pos, {rc.T}), rc.c(), rc.s());
  EXPECT_LT(test::rel_error(y, x), 1e-6);
}

// ---- attention ----------------------------------------------------------------------

// Three packed documents of lengths 5, 7, 1; GQA with 2 query heads per kv head; an
// optional learned prefix of P keys/values [P, Hkv, D] seen by every token.
struct AttnCase {
  int64_t T = 13, Hq = 4, Hkv = 2, D = 8, P = 0;
  std::vector<int32_t> cu = {0, 5, 12, 13};
  int window = 0;
  Vec q, k, v, pk, pv, out, lse;
  explicit AttnCase(int w, uint64_t seed = 40, int64_t prefix = 0) : P(prefix), window(w) {
    q = randn(T * Hq * D, seed);
    k = randn(T * Hkv * D, seed + 1);
    v = randn(T * Hkv * D, seed + 2);
    pk = randn(P * Hkv * D, seed + 3);
    pv = randn(P * Hkv * D, seed + 4);
    out.resize(T * Hq * D);
    lse.resize(Hq * T);
  }
  Tensor prefix_k() { return P ? f32(pk, {P, Hkv, D}) : Tensor{}; }
  Tensor prefix_v() { return P ? f32(pv, {P, Hkv, D}) : Tensor{}; }
  void forward(CpuBackend& be) {
    be.attention_forward(f32(out, {T, Hq, D}), f32(lse, {Hq, T}), f32(q, {T, Hq, D}),
                         f32(k, {T, Hkv, D}), f32(v, {T, Hkv, D}), i32(cu, {4}), window,
                         prefix_k(), prefix_v());
  }
};

// Naive f64 attention with an explicit document/causal/window mask; the P prefix keys
// are always visible.
void check_attention_forward(const AttnCase& a) {
  const int64_t T = a.T, Hq = a.Hq, Hkv = a.Hkv, D = a.D, P = a.P;
  std::vector<int> doc(T);
  for (size_t d = 0; d + 1 < a.cu.size(); ++d)
    for (int t = a.cu[d]; t < a.cu[d + 1]; ++t) doc[t] = int(d);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kh = h / (Hq / Hkv);
      std::vector<double> sc(T, -INFINITY), psc(P);
      double mx = -INFINITY;
      for (int64_t j = 0; j < P; ++j) {
        double d = 0;
        for (int64_t i = 0; i < D; ++i) d += double(a.q[(t * Hq + h) * D + i]) * a.pk[(j * Hkv + kh) * D + i];
        psc[j] = d / std::sqrt(double(D));
        mx = std::max(mx, psc[j]);
      }
      for (int64_t s = 0; s < T; ++s) {
        const bool visible = doc[s] == doc[t] && s <= t && (a.window == 0 || t - s < a.window);
        if (!visible) continue;
        double d = 0;
        for (int64_t i = 0; i < D; ++i) d += double(a.q[(t * Hq + h) * D + i]) * a.k[(s * Hkv + kh) * D + i];
        sc[s] = d / std::sqrt(double(D));
        mx = std::max(mx, sc[s]);
      }
      double sum = 0;
      for (int64_t s = 0; s < T; ++s) sum += std::exp(sc[s] - mx);
      for (int64_t j = 0; j < P; ++j) sum += std::exp(psc[j] - mx);
      EXPECT_NEAR(a.lse[h * T + t], mx + std::log(sum), 1e-5) << "t=" << t << " h=" << h;
      for (int64_t i = 0; i < D; ++i) {
        double o = 0;
        for (int64_t s = 0; s < T; ++s) o += std::exp(sc[s] - mx) / sum * a.v[(s * Hkv + kh) * D + i];
        for (int64_t j = 0; j < P; ++j) o += std::exp(psc[j] - mx) / sum * a.pv[(j * Hkv + kh) * D + i];
        EXPECT_NEAR(a.out[(t * Hq + h) * D + i], o, 1e-5) << "t=" << t << " h=" << h;
      }
    }
}

void check_attention_gradients(int window, int64_t prefix = 0) {
  CpuBackend be;
  AttnCase a(window, 40, prefix);
  const int64_t T = a.T, Hq = a.Hq, Hkv = a.Hkv, D = a.D, P = a.P;
  a.forward(be);
  check_attention_forward(a);

  Vec R = randn(T * Hq * D, 45), dq(a.q.size()), dk(a.k.size()), dv(a.v.size());
  Vec dpk(a.pk.size()), dpv(a.pv.size());
  Vec out_saved = a.out, lse_saved = a.lse;  // activations of the unperturbed inputs
  std::vector<Vec*> grads = {&dq, &dk, &dv};
  if (P) grads.insert(grads.end(), {&dpk, &dpv});
  backward_twice("attention", grads, [&] {
    be.attention_backward(f32(dq, {T, Hq, D}), f32(dk, {T, Hkv, D}), f32(dv, {T, Hkv, D}),
                          f32(R, {T, Hq, D}), f32(a.q, {T, Hq, D}), f32(a.k, {T, Hkv, D}),
                          f32(a.v, {T, Hkv, D}), f32(out_saved, {T, Hq, D}),
                          f32(lse_saved, {Hq, T}), i32(a.cu, {4}), window, a.prefix_k(),
                          a.prefix_v(), P ? f32(dpk, {P, Hkv, D}) : Tensor{},
                          P ? f32(dpv, {P, Hkv, D}) : Tensor{});
  });
  auto loss = [&] { a.forward(be); return dot64(a.out, R); };
  // Forgetting the −D_t term in dS, or the scale on dq/dk, fails the dq/dk checks;
  // mapping query head h to kv head h % Hkv instead of h / (Hq/Hkv) fails all three;
  // a backward window one key wider than the forward's fails the window case.
  check_gradient("dq", a.q, dq, loss);
  check_gradient("dk", a.k, dk, loss);
  check_gradient("dv", a.v, dv, loss);
  if (!P) return;
  // Dropping the −D_t term from dS in the dprefix sums fails dprefix_k; leaving the
  // prefix keys out of dq fails the dq check above.
  check_gradient("dprefix_k", a.pk, dpk, loss);
  check_gradient("dprefix_v", a.pv, dpv, loss);

  // A frozen prefix (undefined dprefix_k / dprefix_v) gives the same dq, dk, dv.
  Vec dq2(dq.size()), dk2(dk.size()), dv2(dv.size());
  be.attention_backward(f32(dq2, {T, Hq, D}), f32(dk2, {T, Hkv, D}), f32(dv2, {T, Hkv, D}),
                        f32(R, {T, Hq, D}), f32(a.q, {T, Hq, D}), f32(a.k, {T, Hkv, D}),
                        f32(a.v, {T, Hkv, D}), f32(out_saved, {T, Hq, D}), f32(lse_saved, {Hq, T}),
                        i32(a.cu, {4}), window, a.prefix_k(), a.prefix_v(), Tensor{}, Tensor{});
  EXPECT_EQ(dq2, dq);
  EXPECT_EQ(dk2, dk);
  EXPECT_EQ(dv2, dv);
}

TEST(CpuGrad, AttentionGqaPackedDocuments) { check_attention_gradients(0); }
TEST(CpuGrad, AttentionSlidingWindow) { check_attention_gradients(3); }
// P = 3 prefix keys, GQA, three documents, and a window of 3: the window must not hide
// the prefix (a backward that masks prefix keys by the window fails dprefix_k/v).
TEST(CpuGrad, AttentionPrefix) { check_attention_gradients(0, 3); }
TEST(CpuGrad, AttentionPrefixSlidingWindow) { check_attention_gradients(3, 3); }

// A prefix is the same as P real keys placed before every document (no window, no RoPE):
// repack each document d as [prefix (P tokens), d] and compare its tokens' outputs.
TEST(CpuOps, AttentionPrefixEqualsPrependedKeys) {
  CpuBackend be;
  AttnCase a(0, 40, 3);
  const int64_t Hq = a.Hq, Hkv = a.Hkv, D = a.D, P = a.P, N = 3;
  a.forward(be);
  const int64_t T2 = a.T + N * P;
  Vec q2(T2 * Hq * D, 0.5f), k2(T2 * Hkv * D), v2(T2 * Hkv * D), out2(T2 * Hq * D), lse2(Hq * T2);
  std::vector<int32_t> cu2 = {0};
  std::vector<int64_t> where(a.T);  // token t of a → its row in the repacked batch
  int64_t r = 0;
  for (int64_t d = 0; d < N; ++d) {
    for (int64_t j = 0; j < P; ++j, ++r)
      for (int64_t i = 0; i < Hkv * D; ++i) {
        k2[r * Hkv * D + i] = a.pk[j * Hkv * D + i];
        v2[r * Hkv * D + i] = a.pv[j * Hkv * D + i];
      }
    for (int64_t t = a.cu[d]; t < a.cu[d + 1]; ++t, ++r) {
      where[t] = r;
      for (int64_t i = 0; i < Hq * D; ++i) q2[r * Hq * D + i] = a.q[t * Hq * D + i];
      for (int64_t i = 0; i < Hkv * D; ++i) {
        k2[r * Hkv * D + i] = a.k[t * Hkv * D + i];
        v2[r * Hkv * D + i] = a.v[t * Hkv * D + i];
      }
    }
    cu2.push_back(int32_t(r));
  }
  be.attention_forward(f32(out2, {T2, Hq, D}), f32(lse2, {Hq, T2}), f32(q2, {T2, Hq, D}),
                       f32(k2, {T2, Hkv, D}), f32(v2, {T2, Hkv, D}), i32(cu2, {N + 1}), 0,
                       Tensor{}, Tensor{});
  for (int64_t t = 0; t < a.T; ++t)
    for (int64_t h = 0; h < Hq; ++h) {
      EXPECT_NEAR(a.lse[h * a.T + t], lse2[h * T2 + where[t]], 1e-5) << "t=" << t;
      for (int64_t i = 0; i < D; ++i)
        EXPECT_NEAR(a.out[(t * Hq + h) * D + i], out2[(where[t] * Hq + h) * D + i], 1e-5)
            << "t=" << t << " h=" << h;
    }
}

TEST(CpuOps, AttentionStaysInsideDocuments) {
  CpuBackend be;
  for (int window : {0, 3}) {
    SCOPED_TRACE(window);
    AttnCase a(window);
    const int64_t row_q = a.Hq * a.D, row_kv = a.Hkv * a.D;
    a.forward(be);
    const Vec base = a.out;
    // Replace every q/k/v value of document `d`; rows of the other documents must not move.
    for (int d = 0; d < 3; ++d) {
      AttnCase b(window);
      const Vec fresh_q = randn(b.q.size(), 90 + d), fresh_kv = randn(b.k.size(), 95 + d);
      for (int64_t t = a.cu[d]; t < a.cu[d + 1]; ++t) {
        for (int64_t i = 0; i < row_q; ++i) b.q[t * row_q + i] = fresh_q[t * row_q + i];
        for (int64_t i = 0; i < row_kv; ++i) {
          b.k[t * row_kv + i] = fresh_kv[t * row_kv + i];
          b.v[t * row_kv + i] = -fresh_kv[t * row_kv + i];
        }
      }
      b.forward(be);
      for (int64_t t = 0; t < a.T; ++t) {
        const bool inside = a.cu[d] <= t && t < a.cu[d + 1];
        bool same = true;
        for (int64_t i = 0; i < row_q; ++i) same &= b.out[t * row_q + i] == base[t * row_q + i];
        EXPECT_EQ(same, !inside) << "document " << d << " changed, token " << t;
      }
    }
    // The first token of a document sees only itself: out = its own v row.
    for (int64_t h = 0; h < a.Hq; ++h)
      for (int64_t i = 0; i < a.D; ++i)
        EXPECT_FLOAT_EQ(a.out[(5 * a.Hq + h) * a.D + i], a.v[(5 * a.Hkv + h / 2) * a.D + i]);
  }
}

// ---- SwiGLU -------------------------------------------------------------------------

TEST(CpuGrad, SwiGlu) {
  CpuBackend be;
  const int64_t T = 4, F = 10;
  Vec gate = randn(T * F, 50, 2.0f), up = randn(T * F, 51), R = randn(T * F, 52), out(T * F);
  auto forward = [&] { be.swiglu_forward(f32(out, {T, F}), f32(gate, {T, F}), f32(up, {T, F})); };
  forward();
  for (int64_t i = 0; i < T * F; ++i)
    EXPECT_NEAR(out[i], gate[i] / (1.0 + std::exp(-double(gate[i]))) * up[i], 1e-5);

  Vec dgate(T * F), dup(T * F);
  backward_twice("swiglu", {&dgate, &dup}, [&] {
    be.swiglu_backward(f32(dgate, {T, F}), f32(dup, {T, F}), f32(R, {T, F}), f32(gate, {T, F}),
                       f32(up, {T, F}));
  });
  auto loss = [&] { forward(); return dot64(out, R); };
  // σ(g)·(1 + g·(1 − σ)) written with (1 + σ) fails here.
  check_gradient("dgate", gate, dgate, loss);
  check_gradient("dup", up, dup, loss);
}

// ---- LM head + cross-entropy ----------------------------------------------------------

struct CeCase {
  int64_t T = 7, C = 8, V = 13;
  std::vector<int32_t> targets = {3, kIgnoreIndex, 12, 0, 7, kIgnoreIndex, 3};
  Vec x = randn(T * C, 60), W = randn(V * C, 61, 0.5f);
  float grad_scale = 0.5f;
  LossSum run(CpuBackend& be, Vec* dx, Vec* dW, int64_t chunk) {
    return be.lm_head_cross_entropy(dx ? f32(*dx, {T, C}) : Tensor{},
                                    dW ? f32(*dW, {V, C}) : Tensor{}, f32(x, {T, C}),
                                    f32(W, {V, C}), i32(targets, {T}), grad_scale, chunk);
  }
};

TEST(CpuGrad, LmHeadCrossEntropy) {
  CpuBackend be;
  CeCase ce;
  const int64_t T = ce.T, C = ce.C, V = ce.V, chunk = 3;  // 3 does not divide T = 7

  LossSum ls = ce.run(be, nullptr, nullptr, chunk);
  EXPECT_EQ(ls.tokens, 5);
  double ref = 0;  // f64 reference: Σ_t lse(logits_t) − logits_t[target]
  for (int64_t t = 0; t < T; ++t) {
    if (ce.targets[t] == kIgnoreIndex) continue;
    std::vector<double> l(V);
    double mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t c = 0; c < C; ++c) l[v] += double(ce.x[t * C + c]) * ce.W[v * C + c];
      mx = std::max(mx, l[v]);
    }
    for (double lv : l) sum += std::exp(lv - mx);
    ref += mx + std::log(sum) - l[ce.targets[t]];
  }
  EXPECT_NEAR(ls.loss, ref, 1e-5 * std::abs(ref));

  Vec dx(T * C), dW(V * C);
  backward_twice("lm_head_cross_entropy", {&dx, &dW}, [&] { ce.run(be, &dx, &dW, chunk); });
  for (int64_t c = 0; c < C; ++c) EXPECT_EQ(dx[1 * C + c], 0.0f) << "ignored row 1 has gradient";
  // The loss whose gradient the op returns is grad_scale · Σ loss.
  auto loss = [&] { return ce.grad_scale * ce.run(be, nullptr, nullptr, chunk).loss; };
  // Leaving ignored rows' dlogits as softmax (not 0), or an unscaled one-hot, fails here.
  check_gradient("dx", ce.x, dx, loss);
  check_gradient("dweight", ce.W, dW, loss);

  // The chunk size is only a memory knob: same loss and gradients for any chunk.
  for (int64_t other : {int64_t(1), T, int64_t(100)}) {
    SCOPED_TRACE(other);
    Vec dx2(T * C), dW2(V * C);
    LossSum l2 = ce.run(be, &dx2, &dW2, other);
    EXPECT_EQ(l2.tokens, ls.tokens);
    EXPECT_NEAR(l2.loss, ls.loss, 1e-6 * ls.loss);
    EXPECT_LT(test::rel_error(dx2, dx), 1e-5);
    EXPECT_LT(test::rel_error(dW2, dW), 1e-5);
  }
}

}  // namespace
}  // namespace temper
