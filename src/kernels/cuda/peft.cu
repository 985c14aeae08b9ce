// CUDA backend: the PEFT ops of backend.h: counter-based dropout (the CPU's mask bit for
// bit: the same Philox element decides each entry), DoRA's row sums of squares and its
// per-row rescale forward and backward. fp32 arithmetic; reductions in a fixed order
// (no atomics), so results are run-to-run deterministic.
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/gemm.h"  // the shared argument checks

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::to_f32;

namespace {

constexpr int kRowThreads = 256;  // one block per row for the row reductions
constexpr int kColTile = 32;      // column-sum geometry, as linear.cu's dbias
constexpr int kRowGroups = 16;

// out[t, j] (+)= keep ? x[t, j] / (1 - p) : 0, keep = uniform(offset + t·full_cols + col0 + j) > p
template <typename T>
__global__ void dropout_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t rows,
                               int64_t cols, float p, RngStream stream, uint64_t offset,
                               int64_t full_cols, int64_t col0, bool accumulate) {
  const int64_t n = rows * cols;
  const float keep_scale = 1.0f / (1.0f - p);
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const int64_t t = i / cols, j = i % cols;
    const uint64_t e = offset + uint64_t(t * full_cols + col0 + j);
    const float v = stream.uniform(e) > p ? to_f32(x[i]) * keep_scale : 0.0f;
    out[i] = from_f32<T>(accumulate ? to_f32(out[i]) + v : v);
  }
}

// sumsq[o] = Σ_i w[o, i]²: block o strides over its row, then a fixed tree.
template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    row_sum_squares_kernel(float* __restrict__ sumsq, const T* __restrict__ w, int64_t cols) {
  __shared__ float s[kRowThreads];
  const T* row = w + int64_t(blockIdx.x) * cols;
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += kRowThreads) {
    const float v = to_f32(row[i]);
    acc += v * v;
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w2 = kRowThreads / 2; w2 > 0; w2 >>= 1) {
    if (int(threadIdx.x) < w2) s[threadIdx.x] += s[threadIdx.x + w2];
    __syncthreads();
  }
  if (threadIdx.x == 0) sumsq[blockIdx.x] = s[0];
}

// out[t, o] = magnitude[o] / sqrt(sumsq[o]) · z[t, o] + bias[o]
template <typename T>
__global__ void dora_forward_kernel(T* __restrict__ out, const T* __restrict__ z,
                                    const T* __restrict__ magnitude, const float* __restrict__ sumsq,
                                    const T* __restrict__ bias, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const int64_t o = i % cols;
    const float c = to_f32(magnitude[o]) * (sumsq ? rsqrtf(sumsq[o]) : 1.0f);
    out[i] = from_f32<T>(c * to_f32(z[i]) + (bias ? to_f32(bias[o]) : 0.0f));
  }
}

// dz[t, o] += magnitude[o] / sqrt(sumsq[o]) · dout[t, o]
template <typename T>
__global__ void dora_dz_kernel(T* __restrict__ dz, const T* __restrict__ dout,
                               const T* __restrict__ magnitude, const float* __restrict__ sumsq,
                               int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const int64_t o = i % cols;
    const float c = to_f32(magnitude[o]) * (sumsq ? rsqrtf(sumsq[o]) : 1.0f);
    dz[i] = from_f32<T>(to_f32(dz[i]) + c * to_f32(dout[i]));
  }
}

// dmagnitude[o] += Σ_t dout[t, o] · z[t, o] / sqrt(sumsq[o]): a column sum (linear.cu's
// geometry: thread rows stride over t in order, a fixed tree combines them).
template <typename T>
__global__ void __launch_bounds__(kColTile* kRowGroups)
    dora_dmagnitude_kernel(T* __restrict__ dmagnitude, const T* __restrict__ dout,
                           const T* __restrict__ z, const float* __restrict__ sumsq, int64_t rows,
                           int64_t cols) {
  __shared__ float partial[kRowGroups][kColTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t o = int64_t(blockIdx.x) * kColTile + tx;
  float acc = 0.0f;
  if (o < cols)
    for (int64_t t = ty; t < rows; t += kRowGroups)
      acc += to_f32(dout[t * cols + o]) * to_f32(z[t * cols + o]);
  partial[ty][tx] = acc;
  __syncthreads();
  for (int w = kRowGroups / 2; w > 0; w >>= 1) {
    if (ty < w) partial[ty][tx] += partial[ty + w][tx];
    __syncthreads();
  }
  if (ty == 0 && o < cols)
    dmagnitude[o] = from_f32<T>(to_f32(dmagnitude[o]) + partial[0][tx] * (sumsq ? rsqrtf(sumsq[o]) : 1.0f));
}

// One thread per byte: elements 2p (high nibble) and 2p + 1 of this rank's [rows, cols]
// block, scaled by the absmax of their block of the whole tensor.
template <typename T>
__global__ void nf4_dequantize_kernel(T* __restrict__ out, const uint8_t* __restrict__ packed,
                                      const float* __restrict__ absmax, const uint8_t* __restrict__ qabsmax,
                                      const float* __restrict__ nested, const float* __restrict__ code,
                                      const float* __restrict__ nested_map, float offset,
                                      int64_t rows, int64_t cols, int64_t full_cols, int64_t row0,
                                      int64_t col0) {
  const int64_t bytes = rows * cols / 2;
  for (int64_t p = cuda::global_index(); p < bytes; p += cuda::grid_stride()) {
    const int64_t i = 2 * p, r = i / cols, j = i % cols;
    const int64_t local = i / 64, whole = ((row0 + r) * full_cols + col0 + j) / 64;
    const float a = qabsmax ? nested_map[qabsmax[local]] * nested[whole / 256] + offset : absmax[local];
    const uint8_t b = packed[p];
    out[i] = from_f32<T>(code[b >> 4] * a);
    out[i + 1] = from_f32<T>(code[b & 0xF] * a);
  }
}

__device__ __forceinline__ float activate(Backend::Activation f, float x) {
  switch (f) {
    case Backend::Activation::Relu: return x > 0.0f ? x : 0.0f;
    case Backend::Activation::Tanh: return tanhf(x);
    case Backend::Activation::Silu: return x / (1.0f + expf(-x));
  }
  return x;
}

__device__ __forceinline__ float derivative(Backend::Activation f, float x) {
  switch (f) {
    case Backend::Activation::Relu: return x > 0.0f ? 1.0f : 0.0f;
    case Backend::Activation::Tanh: {
      const float t = tanhf(x);
      return 1.0f - t * t;
    }
    case Backend::Activation::Silu: {
      const float s = 1.0f / (1.0f + expf(-x));
      return s * (1.0f + x * (1.0f - s));
    }
  }
  return 1.0f;
}

template <typename T>
__global__ void activation_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t n,
                                  Backend::Activation f) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride())
    out[i] = from_f32<T>(activate(f, to_f32(x[i])));
}

template <typename T>
__global__ void activation_backward_kernel(T* __restrict__ dx, const T* __restrict__ dout,
                                           const T* __restrict__ x, int64_t n, Backend::Activation f) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride())
    dx[i] = from_f32<T>(to_f32(dx[i]) + derivative(f, to_f32(x[i])) * to_f32(dout[i]));
}

void expect_2d(const Tensor& t, const char* op, const char* what) {
  cuda::expect_matrix(t, op, what);
}

}  // namespace

void CudaBackend::dropout(Tensor out, Tensor x, float p, const RngStream& stream, uint64_t offset,
                          int64_t full_cols, int64_t col0, bool accumulate) {
  const char* op = "dropout";
  expect_2d(x, op, "x");
  const int64_t T = x.size(0), C = x.size(1);
  cuda::expect_shape(out, x.dtype(), {T, C}, op, "out");
  expect_here(x, op, "x");
  expect_here(out, op, "out");
  if (!(p >= 0.0f && p < 1.0f)) fail("CUDA backend: dropout: p = {} must be in [0, 1)", p);
  if (col0 < 0 || col0 + C > full_cols)
    fail("CUDA backend: dropout: columns [{}, {}) outside a row of {}", col0, col0 + C, full_cols);
  if (T * C == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    dropout_kernel<S><<<cuda::grid_for(T * C), cuda::kThreads, 0, stream_>>>(
        out.ptr<S>(), x.ptr<S>(), T, C, p, stream, offset, full_cols, col0, accumulate);
    cuda_check_last_launch("dropout_kernel");
  });
}

void CudaBackend::nf4_dequantize(Tensor out, const Nf4Weight& w) {
  const char* op = "nf4_dequantize";
  const int64_t R = w.rows, C = w.cols, n = R * C;
  expect_2d(out, op, "out");
  cuda::expect_shape(out, out.dtype(), {R, C}, op, "out");
  if (C % 64 || w.col0 % 64 || w.full_cols % 64 || w.col0 + C > w.full_cols)
    fail("CUDA backend: {}: columns [{}, {}) of {}: widths and offsets must be multiples of 64", op,
         w.col0, w.col0 + C, w.full_cols);
  cuda::expect_shape(w.packed, DType::U8, {n / 2}, op, "packed");
  cuda::expect_shape(w.code, DType::F32, {16}, op, "code");
  expect_here(out, op, "out");
  expect_here(w.packed, op, "packed");
  expect_here(w.code, op, "code");
  if (w.double_quant()) {
    cuda::expect_shape(w.qabsmax, DType::U8, {n / 64}, op, "qabsmax");
    cuda::expect_shape(w.nested_map, DType::F32, {256}, op, "nested_map");
    expect_here(w.qabsmax, op, "qabsmax");
    expect_here(w.nested_map, op, "nested_map");
    expect_here(w.nested_absmax, op, "nested_absmax");
    const int64_t last = n ? ((w.row0 + R - 1) * w.full_cols + w.col0 + C - 1) / 64 : 0;
    if (n && last / 256 >= w.nested_absmax.numel())
      fail("CUDA backend: {}: block {} has no nested absmax ({} given)", op, last, w.nested_absmax.numel());
  } else {
    cuda::expect_shape(w.absmax, DType::F32, {n / 64}, op, "absmax");
    expect_here(w.absmax, op, "absmax");
  }
  if (n == 0) return;
  const bool dq = w.double_quant();
  dispatch_float(out.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    nf4_dequantize_kernel<S><<<cuda::grid_for(n / 2), cuda::kThreads, 0, stream_>>>(
        out.ptr<S>(), w.packed.ptr<uint8_t>(), dq ? nullptr : w.absmax.ptr<float>(),
        dq ? w.qabsmax.ptr<uint8_t>() : nullptr, dq ? w.nested_absmax.ptr<float>() : nullptr,
        w.code.ptr<float>(), dq ? w.nested_map.ptr<float>() : nullptr, w.offset, R, C, w.full_cols,
        w.row0, w.col0);
    cuda_check_last_launch("nf4_dequantize_kernel");
  });
}

void CudaBackend::activation_forward(Tensor out, Tensor x, Activation f) {
  const char* op = "activation_forward";
  cuda::expect_same_numel(out, x, op, "out", "x");
  cuda::expect_dtype(out, x.dtype(), op, "out");
  expect_here(out, op, "out");
  expect_here(x, op, "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    activation_kernel<S><<<cuda::grid_for(n), cuda::kThreads, 0, stream_>>>(out.ptr<S>(), x.ptr<S>(), n, f);
    cuda_check_last_launch("activation_kernel");
  });
}

void CudaBackend::activation_backward(Tensor dx, Tensor dout, Tensor x, Activation f) {
  const char* op = "activation_backward";
  cuda::expect_same_numel(dx, x, op, "dx", "x");
  cuda::expect_same_numel(dout, x, op, "dout", "x");
  cuda::expect_dtype(dx, x.dtype(), op, "dx");
  cuda::expect_dtype(dout, x.dtype(), op, "dout");
  expect_here(dx, op, "dx");
  expect_here(dout, op, "dout");
  expect_here(x, op, "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    activation_backward_kernel<S><<<cuda::grid_for(n), cuda::kThreads, 0, stream_>>>(
        dx.ptr<S>(), dout.ptr<S>(), x.ptr<S>(), n, f);
    cuda_check_last_launch("activation_backward_kernel");
  });
}

void CudaBackend::row_sum_squares(Tensor sumsq, Tensor w) {
  const char* op = "row_sum_squares";
  expect_2d(w, op, "w");
  const int64_t O = w.size(0), I = w.size(1);
  cuda::expect_shape(sumsq, DType::F32, {O}, op, "sumsq");
  expect_here(w, op, "w");
  expect_here(sumsq, op, "sumsq");
  if (O == 0) return;
  dispatch_float(w.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    row_sum_squares_kernel<S><<<unsigned(O), kRowThreads, 0, stream_>>>(sumsq.ptr<float>(),
                                                                       w.ptr<S>(), I);
    cuda_check_last_launch("row_sum_squares_kernel");
  });
}

void CudaBackend::dora_scale_forward(Tensor out, Tensor z, Tensor magnitude, Tensor sumsq,
                                     Tensor bias) {
  const char* op = "dora_scale_forward";
  expect_2d(z, op, "z");
  const DType dt = z.dtype();
  const int64_t T = z.size(0), O = z.size(1);
  cuda::expect_shape(out, dt, {T, O}, op, "out");
  cuda::expect_shape(magnitude, dt, {O}, op, "magnitude");
  if (sumsq.defined()) cuda::expect_shape(sumsq, DType::F32, {O}, op, "sumsq");
  if (bias.defined()) cuda::expect_shape(bias, dt, {O}, op, "bias");
  expect_here(z, op, "z");
  expect_here(out, op, "out");
  expect_here(magnitude, op, "magnitude");
  if (sumsq.defined()) expect_here(sumsq, op, "sumsq");
  if (bias.defined()) expect_here(bias, op, "bias");
  if (T * O == 0) return;
  dispatch_float(dt, op, [&](auto tag) {
    using S = decltype(tag);
    dora_forward_kernel<S><<<cuda::grid_for(T * O), cuda::kThreads, 0, stream_>>>(
        out.ptr<S>(), z.ptr<S>(), magnitude.ptr<S>(), sumsq.defined() ? sumsq.ptr<float>() : nullptr,
        bias.defined() ? bias.ptr<S>() : nullptr, T, O);
    cuda_check_last_launch("dora_forward_kernel");
  });
}

void CudaBackend::dora_scale_backward(Tensor dz, Tensor dmagnitude, Tensor dout, Tensor z,
                                      Tensor magnitude, Tensor sumsq) {
  const char* op = "dora_scale_backward";
  expect_2d(dout, op, "dout");
  const DType dt = dout.dtype();
  const int64_t T = dout.size(0), O = dout.size(1);
  if (sumsq.defined()) cuda::expect_shape(sumsq, DType::F32, {O}, op, "sumsq");
  expect_here(dout, op, "dout");
  if (sumsq.defined()) expect_here(sumsq, op, "sumsq");
  const float* ss = sumsq.defined() ? sumsq.ptr<float>() : nullptr;
  if (dz.defined()) {
    cuda::expect_shape(dz, dt, {T, O}, op, "dz");
    cuda::expect_shape(magnitude, dt, {O}, op, "magnitude");
    expect_here(dz, op, "dz");
    expect_here(magnitude, op, "magnitude");
  }
  if (dmagnitude.defined()) {
    cuda::expect_shape(dmagnitude, dt, {O}, op, "dmagnitude");
    cuda::expect_shape(z, dt, {T, O}, op, "z");
    expect_here(dmagnitude, op, "dmagnitude");
    expect_here(z, op, "z");
  }
  if (T * O == 0) return;
  dispatch_float(dt, op, [&](auto tag) {
    using S = decltype(tag);
    if (dz.defined()) {
      dora_dz_kernel<S><<<cuda::grid_for(T * O), cuda::kThreads, 0, stream_>>>(
          dz.ptr<S>(), dout.ptr<S>(), magnitude.ptr<S>(), ss, T, O);
      cuda_check_last_launch("dora_dz_kernel");
    }
    if (dmagnitude.defined()) {
      const auto blocks = unsigned((O + kColTile - 1) / kColTile);
      dora_dmagnitude_kernel<S><<<blocks, dim3(kColTile, kRowGroups), 0, stream_>>>(
          dmagnitude.ptr<S>(), dout.ptr<S>(), z.ptr<S>(), ss, T, O);
      cuda_check_last_launch("dora_dmagnitude_kernel");
    }
  });
}

}  // namespace temper
