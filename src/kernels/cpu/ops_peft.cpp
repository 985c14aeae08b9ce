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

// out[T,O] = magnitude / sqrt(sumsq) ⊙ z + bias (sumsq undefined: 1)
void CpuBackend::dora_scale_forward(Tensor out, Tensor z, Tensor magnitude, Tensor sumsq,
                                    Tensor bias) {
  expect_rank(z, DType::F32, 2, "dora_scale_forward: z");
  const int64_t T = z.size(0), O = z.size(1);
  expect_f32(out, {T, O}, "dora_scale_forward: out");
  expect_f32(magnitude, {O}, "dora_scale_forward: magnitude");
  expect_f32_opt(sumsq, {O}, "dora_scale_forward: sumsq");
  expect_f32_opt(bias, {O}, "dora_scale_forward: bias");
  std::vector<float> c(static_cast<size_t>(O));  // [O] the per-row scale
  for (int64_t o = 0; o < O; ++o)
    c[o] = sumsq.defined() ? magnitude.ptr<float>()[o] / std::sqrt(sumsq.ptr<float>()[o])
                           : magnitude.ptr<float>()[o];
  const float* pz = z.ptr<float>();
  const float* pb = bias.defined() ? bias.ptr<float>() : nullptr;
  float* po = out.ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < O; ++o) po[t * O + o] = c[o] * pz[t * O + o] + (pb ? pb[o] : 0.0f);
}

// dz += c ⊙ dout;  dmagnitude[o] += Σ_t dout[t,o] z[t,o] / sqrt(sumsq[o]) (rows in order;
// sumsq undefined: 1)
void CpuBackend::dora_scale_backward(Tensor dz, Tensor dmagnitude, Tensor dout, Tensor z,
                                     Tensor magnitude, Tensor sumsq) {
  expect_rank(dout, DType::F32, 2, "dora_scale_backward: dout");
  const int64_t T = dout.size(0), O = dout.size(1);
  expect_f32_opt(sumsq, {O}, "dora_scale_backward: sumsq");
  expect_f32_opt(dz, {T, O}, "dora_scale_backward: dz");
  expect_f32_opt(dmagnitude, {O}, "dora_scale_backward: dmagnitude");
  if (dz.defined()) expect_f32(magnitude, {O}, "dora_scale_backward: magnitude");
  if (dmagnitude.defined()) expect_f32(z, {T, O}, "dora_scale_backward: z");
  const float* g = dout.ptr<float>();  // [T, O]
  std::vector<float> inv(static_cast<size_t>(O), 1.0f);  // [O] 1 / sqrt(sumsq)
  if (sumsq.defined())
    for (int64_t o = 0; o < O; ++o) inv[o] = 1.0f / std::sqrt(sumsq.ptr<float>()[o]);
  if (dz.defined()) {
    const float* pm = magnitude.ptr<float>();
    float* pd = dz.ptr<float>();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < O; ++o) pd[t * O + o] += pm[o] * inv[o] * g[t * O + o];
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
      for (int64_t o = o0; o < o1; ++o) pdm[o] += acc[o - o0] * inv[o];
    }
  }
}

// out[rows, cols] = code[index] · absmax(block), the statistics of the whole tensor's block.
void CpuBackend::nf4_dequantize(Tensor out, const Nf4Weight& w) {
  const int64_t R = w.rows, C = w.cols, n = R * C;
  expect_f32(out, {R, C}, "nf4_dequantize: out");
  if (C % 64 || w.col0 % 64 || w.full_cols % 64 || w.col0 + C > w.full_cols)
    fail("nf4_dequantize: columns [{}, {}) of {}: widths and offsets must be multiples of 64",
         w.col0, w.col0 + C, w.full_cols);
  expect(w.packed, DType::U8, {n / 2}, "nf4_dequantize: packed");
  expect_f32(w.code, {16}, "nf4_dequantize: code");
  if (w.double_quant()) {
    expect(w.qabsmax, DType::U8, {n / 64}, "nf4_dequantize: qabsmax");
    expect_f32(w.nested_map, {256}, "nf4_dequantize: nested_map");
    expect_rank(w.nested_absmax, DType::F32, 1, "nf4_dequantize: nested_absmax");
  } else {
    expect_f32(w.absmax, {n / 64}, "nf4_dequantize: absmax");
  }
  const uint8_t* packed = w.packed.ptr<uint8_t>();
  const float* code = w.code.ptr<float>();
  float* po = out.ptr<float>();
  if (w.double_quant() && n > 0) {
    const int64_t last = ((w.row0 + R - 1) * w.full_cols + w.col0 + C - 1) / 64;  // the last block
    if (last / 256 >= w.nested_absmax.size(0))
      fail("nf4_dequantize: block {} has no nested absmax ({} given)", last, w.nested_absmax.size(0));
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j0 = 0; j0 < C; j0 += 64) {
      const int64_t local = (r * C + j0) / 64, whole = ((w.row0 + r) * w.full_cols + w.col0 + j0) / 64;
      float a;
      if (w.double_quant()) {
        a = w.nested_map.ptr<float>()[w.qabsmax.ptr<uint8_t>()[local]] *
                w.nested_absmax.ptr<float>()[whole / 256] + w.offset;
      } else {
        a = w.absmax.ptr<float>()[local];
      }
      for (int64_t j = j0; j < j0 + 64; j += 2) {
        const uint8_t b = packed[(r * C + j) / 2];
        po[r * C + j] = code[b >> 4] * a;
        po[r * C + j + 1] = code[b & 0xF] * a;
      }
    }
}

namespace {

// f(x) and f'(x) of the activations, in f32.
inline float activate(Backend::Activation f, float x) {
  switch (f) {
    case Backend::Activation::Relu: return x > 0.0f ? x : 0.0f;
    case Backend::Activation::Tanh: return std::tanh(x);
    case Backend::Activation::Silu: return x / (1.0f + std::exp(-x));
  }
  return x;
}
inline float derivative(Backend::Activation f, float x) {
  switch (f) {
    case Backend::Activation::Relu: return x > 0.0f ? 1.0f : 0.0f;
    case Backend::Activation::Tanh: {
      const float t = std::tanh(x);
      return 1.0f - t * t;
    }
    case Backend::Activation::Silu: {
      const float s = 1.0f / (1.0f + std::exp(-x));
      return s * (1.0f + x * (1.0f - s));
    }
  }
  return 1.0f;
}

}  // namespace

void CpuBackend::activation_forward(Tensor out, Tensor x, Activation f) {
  expect_f32_any(x, "activation_forward: x");
  expect_same_f32(out, x, "activation_forward: out");
  const float* px = x.ptr<float>();
  float* po = out.ptr<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) po[i] = activate(f, px[i]);
}

void CpuBackend::activation_backward(Tensor dx, Tensor dout, Tensor x, Activation f) {
  expect_f32_any(x, "activation_backward: x");
  expect_same_f32(dout, x, "activation_backward: dout");
  expect_same_f32(dx, x, "activation_backward: dx");
  const float *px = x.ptr<float>(), *pg = dout.ptr<float>();
  float* pd = dx.ptr<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) pd[i] += derivative(f, px[i]) * pg[i];
}

}  // namespace temper
