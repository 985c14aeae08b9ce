// RMSNorm (Zhang & Sennrich 2019): out = x · rstd · weight, rstd = 1/sqrt(mean(x²) + eps).
//
// Backward, for one row with r = rstd and y = x·r:
//   dx_j = r · (dout_j·w_j − x_j · r² · (Σ_i dout_i·w_i·x_i) / C)
//   dw_j = Σ_rows dout_j · y_j
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

// out[T,C], rstd[T], x[T,C], weight[C]
void CpuBackend::rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
  expect_rank(x, DType::F32, 2, "rmsnorm_forward: x");
  const int64_t T = x.size(0), C = x.size(1);
  expect_f32(weight, {C}, "rmsnorm_forward: weight");
  expect_f32(out, {T, C}, "rmsnorm_forward: out");
  expect_f32(rstd, {T}, "rmsnorm_forward: rstd");

  const float* px = x.ptr<float>();       // [T, C]
  const float* w = weight.ptr<float>();   // [C]
  float* po = out.ptr<float>();           // [T, C]
  float* pr = rstd.ptr<float>();          // [T]
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = px + t * C;
    double ss = 0.0;  // Σ x² in f64: the reference should not lose bits here
    for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * xr[c];
    const float r = float(1.0 / std::sqrt(ss / double(C) + double(eps)));
    pr[t] = r;
    float* orow = po + t * C;
    for (int64_t c = 0; c < C; ++c) orow[c] = xr[c] * r * w[c];
  }
}

// dx[T,C] +=, dweight[C] += (optional), from dout[T,C] and the saved rstd[T]
void CpuBackend::rmsnorm_backward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight,
                                  Tensor rstd) {
  expect_rank(x, DType::F32, 2, "rmsnorm_backward: x");
  const int64_t T = x.size(0), C = x.size(1);
  expect_f32(weight, {C}, "rmsnorm_backward: weight");
  expect_f32(dout, {T, C}, "rmsnorm_backward: dout");
  expect_f32(rstd, {T}, "rmsnorm_backward: rstd");
  expect_f32(dx, {T, C}, "rmsnorm_backward: dx");
  expect_f32_opt(dweight, {C}, "rmsnorm_backward: dweight");

  const float* px = x.ptr<float>();     // [T, C]
  const float* w = weight.ptr<float>(); // [C]
  const float* g = dout.ptr<float>();   // [T, C]
  const float* pr = rstd.ptr<float>();  // [T]

  // dx: rows are independent.
  float* pdx = dx.ptr<float>();  // [T, C]
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = px + t * C;
    const float* gr = g + t * C;
    const float r = pr[t];
    double dot = 0.0;  // Σ_i dout_i·w_i·x_i
    for (int64_t c = 0; c < C; ++c) dot += double(gr[c]) * w[c] * xr[c];
    const float k = float(dot / double(C)) * r * r;
    float* dxr = pdx + t * C;
    for (int64_t c = 0; c < C; ++c) dxr[c] += r * (gr[c] * w[c] - xr[c] * k);
  }

  // dweight: a sum over rows. Parallel over column blocks, rows in order inside, so the
  // result is race-free and independent of the thread count.
  if (!dweight.defined()) return;
  float* pdw = dweight.ptr<float>();  // [C]
  const int64_t nblocks = column_blocks(C);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b * kColumnBlock, c1 = std::min(C, c0 + kColumnBlock);
    float acc[kColumnBlock] = {};  // [block] partial Σ_t dout·y
    for (int64_t t = 0; t < T; ++t) {
      const float* xr = px + t * C;
      const float* gr = g + t * C;
      const float r = pr[t];
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += gr[c] * (xr[c] * r);
    }
    for (int64_t c = c0; c < c1; ++c) pdw[c] += acc[c - c0];
  }
}

}  // namespace temper
