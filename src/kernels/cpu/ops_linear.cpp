// Linear layer, out = x · Wᵀ + b, in PyTorch's weight layout W[O,I]. The three GEMMs go
// to OpenBLAS; backward uses beta = 1 so gradients accumulate, as the interface requires.
#include <cblas.h>

#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

// out[T,O] = x[T,I] · weight[O,I]ᵀ + bias[O] (bias optional)
void CpuBackend::linear_forward(Tensor out, Tensor x, Tensor weight, Tensor bias) {
  expect_rank(x, DType::F32, 2, "linear_forward: x");
  expect_rank(weight, DType::F32, 2, "linear_forward: weight");
  const int64_t T = x.size(0), I = x.size(1), O = weight.size(0);
  expect_f32(weight, {O, I}, "linear_forward: weight");
  expect_f32(out, {T, O}, "linear_forward: out");
  expect_f32_opt(bias, {O}, "linear_forward: bias");
  if (T == 0 || O == 0) return;

  float* po = out.ptr<float>();  // [T, O]
  float beta = 0.0f;
  if (bias.defined()) {  // start every row at the bias, then accumulate the product
    const float* pb = bias.ptr<float>();  // [O]
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t) std::memcpy(po + t * O, pb, size_t(O) * sizeof(float));
    beta = 1.0f;
  }
  if (I == 0) {
    if (!bias.defined()) std::memset(po, 0, size_t(T * O) * sizeof(float));
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(T), blasint(O), blasint(I), 1.0f,
              x.ptr<float>(), blasint(I), weight.ptr<float>(), blasint(I), beta, po, blasint(O));
}

// dx[T,I] += dout·W, dweight[O,I] += doutᵀ·x, dbias[O] += Σ_t dout (each optional)
void CpuBackend::linear_backward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                                 Tensor weight) {
  expect_rank(dout, DType::F32, 2, "linear_backward: dout");
  const int64_t T = dout.size(0), O = dout.size(1);
  // I comes from whichever of weight / x this call needs (dx needs W, dweight needs x).
  if (dx.defined()) expect_rank(weight, DType::F32, 2, "linear_backward: weight");
  if (dweight.defined()) expect_rank(x, DType::F32, 2, "linear_backward: x");
  const int64_t I = weight.defined() ? weight.size(1) : x.defined() ? x.size(1) : 0;
  if (weight.defined()) expect_f32(weight, {O, I}, "linear_backward: weight");
  if (x.defined()) expect_f32(x, {T, I}, "linear_backward: x");
  expect_f32_opt(dx, {T, I}, "linear_backward: dx");
  expect_f32_opt(dweight, {O, I}, "linear_backward: dweight");
  expect_f32_opt(dbias, {O}, "linear_backward: dbias");
  if (T == 0 || O == 0) return;
  const float* g = dout.ptr<float>();  // [T, O]

  if (dx.defined() && I > 0)  // dx[T,I] += dout[T,O] · W[O,I]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(T), blasint(I), blasint(O),
                1.0f, g, blasint(O), weight.ptr<float>(), blasint(I), 1.0f, dx.ptr<float>(),
                blasint(I));
  if (dweight.defined() && I > 0)  // dW[O,I] += dout[T,O]ᵀ · x[T,I]
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(O), blasint(I), blasint(T),
                1.0f, g, blasint(O), x.ptr<float>(), blasint(I), 1.0f, dweight.ptr<float>(),
                blasint(I));
  if (dbias.defined()) {  // column sums, rows in order per column block (deterministic)
    float* pdb = dbias.ptr<float>();  // [O]
    const int64_t nblocks = column_blocks(O);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t o0 = b * kColumnBlock, o1 = std::min(O, o0 + kColumnBlock);
      float acc[kColumnBlock] = {};  // [block]
      for (int64_t t = 0; t < T; ++t)
        for (int64_t o = o0; o < o1; ++o) acc[o - o0] += g[t * O + o];
      for (int64_t o = o0; o < o1; ++o) pdb[o] += acc[o - o0];
    }
  }
}

}  // namespace temper
