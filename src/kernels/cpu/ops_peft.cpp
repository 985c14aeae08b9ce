// PEFT ops on the CPU: the low-rank update's accumulating GEMM, counter-based dropout and
// DoRA's row norms and rescale (backend.h has the contracts). Reductions run in a fixed
// order per output element, so results do not depend on the thread count.
#include <cblas.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

// out[T,O] += x[T,I] · weight[O,I]ᵀ
void CpuBackend::matmul_add(Tensor out, Tensor x, Tensor weight) {
  expect_rank(x, DType::F32, 2, "matmul_add: x");
  expect_rank(weight, DType::F32, 2, "matmul_add: weight");
  const int64_t T = x.size(0), I = x.size(1), O = weight.size(0);
  expect_f32(weight, {O, I}, "matmul_add: weight");
  expect_f32(out, {T, O}, "matmul_add: out");
  if (T == 0 || O == 0 || I == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(T), blasint(O), blasint(I), 1.0f,
              x.ptr<float>(), blasint(I), weight.ptr<float>(), blasint(I), 1.0f, out.ptr<float>(),
              blasint(O));
}

void CpuBackend::dropout(Tensor out, Tensor x, float p, const RngStream& stream, uint64_t offset,
                         int64_t full_cols, int64_t col0, bool accumulate) {
  expect_rank(x, DType::F32, 2, "dropout: x");
  expect_same_f32(out, x, "dropout: out");
  const int64_t T = x.size(0), C = x.size(1);
  if (!(p >= 0.0f && p < 1.0f)) fail("dropout: p = {} must be in [0, 1)", p);
  if (col0 < 0 || col0 + C > full_cols)
    fail("dropout: columns [{}, {}) outside a row of {}", col0, col0 + C, full_cols);
  const float keep_scale = 1.0f / (1.0f - p);
  const float* px = x.ptr<float>();  // [T, C]
  float* po = out.ptr<float>();      // [T, C]
  const RngStream s = stream;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const uint64_t row = offset + uint64_t(t * full_cols + col0);
    for (int64_t j = 0; j < C; ++j) {
      const float v = s.uniform(row + uint64_t(j)) > p ? px[t * C + j] * keep_scale : 0.0f;
      po[t * C + j] = accumulate ? po[t * C + j] + v : v;
    }
  }
}

// sumsq[O] = Σ_i w[o,i]², each row summed in order in f64.
void CpuBackend::row_sum_squares(Tensor sumsq, Tensor w) {
  expect_rank(w, DType::F32, 2, "row_sum_squares: w");
  const int64_t O = w.size(0), I = w.size(1);
  expect_f32(sumsq, {O}, "row_sum_squares: sumsq");
  const float* pw = w.ptr<float>();  // [O, I]
  float* ps = sumsq.ptr<float>();    // [O]
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < O; ++o) {
    double acc = 0.0;
    for (int64_t i = 0; i < I; ++i) acc += double(pw[o * I + i]) * pw[o * I + i];
    ps[o] = float(acc);
  }
}

// out[T,O] = magnitude / sqrt(sumsq) ⊙ z + bias
void CpuBackend::dora_scale_forward(Tensor out, Tensor z, Tensor magnitude, Tensor sumsq,
                                    Tensor bias) {
  expect_rank(z, DType::F32, 2, "dora_scale_forward: z");
  const int64_t T = z.size(0), O = z.size(1);
  expect_f32(out, {T, O}, "dora_scale_forward: out");
  expect_f32(magnitude, {O}, "dora_scale_forward: magnitude");
  expect_f32(sumsq, {O}, "dora_scale_forward: sumsq");
  expect_f32_opt(bias, {O}, "dora_scale_forward: bias");
  std::vector<float> c(static_cast<size_t>(O));  // [O] the per-row scale
  for (int64_t o = 0; o < O; ++o) c[o] = magnitude.ptr<float>()[o] / std::sqrt(sumsq.ptr<float>()[o]);
  const float* pz = z.ptr<float>();
  const float* pb = bias.defined() ? bias.ptr<float>() : nullptr;
  float* po = out.ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < O; ++o) po[t * O + o] = c[o] * pz[t * O + o] + (pb ? pb[o] : 0.0f);
}

// dz += c ⊙ dout;  dmagnitude[o] += Σ_t dout[t,o] z[t,o] / sqrt(sumsq[o]) (rows in order)
void CpuBackend::dora_scale_backward(Tensor dz, Tensor dmagnitude, Tensor dout, Tensor z,
                                     Tensor magnitude, Tensor sumsq) {
  expect_rank(dout, DType::F32, 2, "dora_scale_backward: dout");
  const int64_t T = dout.size(0), O = dout.size(1);
  expect_f32(sumsq, {O}, "dora_scale_backward: sumsq");
  expect_f32_opt(dz, {T, O}, "dora_scale_backward: dz");
  expect_f32_opt(dmagnitude, {O}, "dora_scale_backward: dmagnitude");
  if (dz.defined()) expect_f32(magnitude, {O}, "dora_scale_backward: magnitude");
  if (dmagnitude.defined()) expect_f32(z, {T, O}, "dora_scale_backward: z");
  const float* g = dout.ptr<float>();  // [T, O]
  const float* ps = sumsq.ptr<float>();
  if (dz.defined()) {
    const float* pm = magnitude.ptr<float>();
    float* pd = dz.ptr<float>();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < O; ++o) pd[t * O + o] += pm[o] / std::sqrt(ps[o]) * g[t * O + o];
  }
  if (dmagnitude.defined()) {
    const float* pz = z.ptr<float>();
    float* pdm = dmagnitude.ptr<float>();
    const int64_t nblocks = column_blocks(O);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t o0 = b * kColumnBlock, o1 = std::min(O, o0 + kColumnBlock);
      float acc[kColumnBlock] = {};  // [block]
      for (int64_t t = 0; t < T; ++t)
        for (int64_t o = o0; o < o1; ++o) acc[o - o0] += g[t * O + o] * pz[t * O + o];
      for (int64_t o = o0; o < o1; ++o) pdm[o] += acc[o - o0] / std::sqrt(ps[o]);
    }
  }
}

}  // namespace temper
