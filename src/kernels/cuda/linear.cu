// CUDA backend: linear layer, out = x · Wᵀ + b in PyTorch's weight layout W[O,I]. The three
// GEMMs go to cuBLASLt (gemm.h; the forward's bias rides the GEMM's epilogue, backward uses
// beta = 1 so gradients accumulate); dbias is a fixed-order column sum (no atomics).
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/gemm.h"

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::to_f32;
using cuda::Trans;

namespace {

// Column-sum geometry: a block owns kColTile consecutive columns; its kRowGroups thread rows
// stride over the token rows, then combine in a fixed tree.
constexpr int kColTile = 32;   // = one warp: each row is read coalesced
constexpr int kRowGroups = 16;

// dbias[O] += Σ_t dout[t, o], fp32 accumulation. Thread (x, y) sums rows y, y + 16, ... of
// column o in order; the 16 partials are added in a fixed tree: deterministic, no atomics.
template <typename T>
__global__ void __launch_bounds__(kColTile* kRowGroups)
    column_sum_kernel(T* __restrict__ dbias, const T* __restrict__ dout, int64_t rows,
                      int64_t cols) {
  __shared__ float partial[kRowGroups][kColTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t o = int64_t(blockIdx.x) * kColTile + tx;
  float acc = 0.0f;
  if (o < cols)
    for (int64_t t = ty; t < rows; t += kRowGroups) acc += to_f32(dout[t * cols + o]);
  partial[ty][tx] = acc;
  __syncthreads();
  for (int w = kRowGroups / 2; w > 0; w >>= 1) {
    if (ty < w) partial[ty][tx] += partial[ty + w][tx];
    __syncthreads();
  }
  if (ty == 0 && o < cols) dbias[o] = from_f32<T>(to_f32(dbias[o]) + partial[0][tx]);
}

// out[rows, cols] = bias[cols] on every row (the forward with I == 0: no GEMM to carry it).
template <typename T>
__global__ void broadcast_rows_kernel(T* __restrict__ out, const T* __restrict__ bias,
                                      int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) out[i] = bias[i % cols];
}

}  // namespace

// out[T,O] = x[T,I] · weight[O,I]ᵀ + bias[O] (bias optional); one dtype for all.
void CudaBackend::linear_forward(Tensor out, Tensor x, Tensor weight, Tensor bias) {
  const char* op = "linear_forward";
  cuda::expect_matrix(x, op, "x");
  cuda::expect_matrix(weight, op, "weight");
  const DType dt = x.dtype();
  const int64_t T = x.size(0), I = x.size(1), O = weight.size(0);
  cuda::expect_shape(weight, dt, {O, I}, op, "weight");
  cuda::expect_shape(out, dt, {T, O}, op, "out");
  if (bias.defined()) cuda::expect_shape(bias, dt, {O}, op, "bias");
  expect_here(x, op, "x");
  expect_here(weight, op, "weight");
  expect_here(out, op, "out");
  if (bias.defined()) expect_here(bias, op, "bias");
  if (T == 0 || O == 0) return;

  if (I == 0) {  // an empty product: out = bias, or 0
    if (!bias.defined()) return zero(out);
    dispatch_float(dt, op, [&](auto tag) {
      using S = decltype(tag);
      broadcast_rows_kernel<S><<<cuda::grid_for(T * O), cuda::kThreads, 0, stream_>>>(
          out.ptr<S>(), bias.ptr<S>(), T, O);
      cuda_check_last_launch("broadcast_rows_kernel");
    });
    return;
  }
  cuda::gemm(*this, dt, T, O, I, x.data(), Trans::N, weight.data(), Trans::T, out.data(),
             /*accumulate=*/false, bias.defined() ? bias.data() : nullptr);
}

// out[T,O] += x[T,I] · weight[O,I]ᵀ (the GEMM with beta = 1, no bias).
void CudaBackend::matmul_add(Tensor out, Tensor x, Tensor weight) {
  const char* op = "matmul_add";
  cuda::expect_matrix(x, op, "x");
  cuda::expect_matrix(weight, op, "weight");
  const DType dt = x.dtype();
  const int64_t T = x.size(0), I = x.size(1), O = weight.size(0);
  cuda::expect_shape(weight, dt, {O, I}, op, "weight");
  cuda::expect_shape(out, dt, {T, O}, op, "out");
  expect_here(x, op, "x");
  expect_here(weight, op, "weight");
  expect_here(out, op, "out");
  if (T == 0 || O == 0 || I == 0) return;
  cuda::gemm(*this, dt, T, O, I, x.data(), Trans::N, weight.data(), Trans::T, out.data(),
             /*accumulate=*/true);
}

// dx[T,I] += dout·W, dweight[O,I] += doutᵀ·x, dbias[O] += Σ_t dout (each optional); one
// dtype for all. weight is needed only for dx, x only for dweight.
void CudaBackend::linear_backward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                                  Tensor weight) {
  const char* op = "linear_backward";
  cuda::expect_matrix(dout, op, "dout");
  const DType dt = dout.dtype();
  const int64_t T = dout.size(0), O = dout.size(1);
  // I comes from whichever of weight / x this call has (dx needs W, dweight needs x).
  if (dx.defined()) cuda::expect_matrix(weight, op, "weight");
  if (dweight.defined()) cuda::expect_matrix(x, op, "x");
  if (weight.defined() && weight.ndim() != 2)
    fail("CUDA backend: {}: weight is {}, expected a 2-D tensor", op, weight.str());
  if (x.defined() && x.ndim() != 2)
    fail("CUDA backend: {}: x is {}, expected a 2-D tensor", op, x.str());
  const int64_t I = weight.defined() ? weight.size(1) : x.defined() ? x.size(1) : 0;
  if (weight.defined()) cuda::expect_shape(weight, dt, {O, I}, op, "weight");
  if (x.defined()) cuda::expect_shape(x, dt, {T, I}, op, "x");
  if (dx.defined()) cuda::expect_shape(dx, dt, {T, I}, op, "dx");
  if (dweight.defined()) cuda::expect_shape(dweight, dt, {O, I}, op, "dweight");
  if (dbias.defined()) cuda::expect_shape(dbias, dt, {O}, op, "dbias");
  expect_here(dout, op, "dout");
  if (x.defined()) expect_here(x, op, "x");
  if (weight.defined()) expect_here(weight, op, "weight");
  if (dx.defined()) expect_here(dx, op, "dx");
  if (dweight.defined()) expect_here(dweight, op, "dweight");
  if (dbias.defined()) expect_here(dbias, op, "dbias");
  if (T == 0 || O == 0) return;

  if (dx.defined() && I > 0)  // dx[T,I] += dout[T,O] · W[O,I]
    cuda::gemm(*this, dt, T, I, O, dout.data(), Trans::N, weight.data(), Trans::N, dx.data(),
               /*accumulate=*/true);
  if (dweight.defined() && I > 0)  // dW[O,I] += dout[T,O]ᵀ · x[T,I]
    cuda::gemm(*this, dt, O, I, T, dout.data(), Trans::T, x.data(), Trans::N, dweight.data(),
               /*accumulate=*/true);
  if (dbias.defined()) {
    const auto blocks = unsigned((O + kColTile - 1) / kColTile);
    dispatch_float(dt, op, [&](auto tag) {
      using S = decltype(tag);
      column_sum_kernel<S><<<blocks, dim3(kColTile, kRowGroups), 0, stream_>>>(
          dbias.ptr<S>(), dout.ptr<S>(), T, O);
      cuda_check_last_launch("column_sum_kernel");
    });
  }
}

}  // namespace temper
