// CUDA backend: RMSNorm (Zhang & Sennrich 2019), the CPU backend's formulas in fp32:
//   forward:  rstd = 1/sqrt(mean(x²) + eps),  out = x · rstd · w
//   backward: dx_j += r · (dout_j·w_j − x_j · r² · (Σ_i dout_i·w_i·x_i) / C)
//             dw_j += Σ_rows dout_j · x_j · r
// Rows are one warp each. dweight is a column sum over rows, done in two fixed-order
// passes (per-chunk partials in fp32 scratch, then a sum over chunks): no atomics, so it is
// deterministic always and deterministic() needs no extra path.
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::grid_for;
using cuda::kThreads;
using cuda::StreamScratch;
using cuda::to_f32;

namespace {

constexpr int kWarp = 32;
// dweight pass 1: at least this many rows per chunk, and at most this many chunks (so the
// scratch is at most kMaxChunks·C floats). A function of T alone: the order is fixed.
constexpr int64_t kMinChunkRows = 32;
constexpr int64_t kMaxChunks = 256;

void expect_shape(const Tensor& t, const Shape& shape, const char* op, const char* what) {
  if (!(t.shape() == shape))
    fail("CUDA backend: {}: {} is {}, expected shape {}", op, what, t.str(), shape.str());
}

// Butterfly sum across a warp: every lane gets the same total, in a fixed order.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp per row t (grid-stride over rows; the loop is warp-uniform).
// out[T,C], rstd[T] f32, x[T,C], weight[C]
template <typename S>
__global__ void rmsnorm_forward_kernel(S* __restrict__ out, float* __restrict__ rstd,
                                       const S* __restrict__ x, const S* __restrict__ weight,
                                       int64_t T, int64_t C, float eps) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t t = cuda::global_index() / kWarp; t < T; t += cuda::grid_stride() / kWarp) {
    const S* xr = x + t * C;  // [C]
    float ss = 0.0f;
    for (int64_t c = lane; c < C; c += kWarp) {
      const float v = to_f32(xr[c]);
      ss += v * v;
    }
    ss = warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / float(C) + eps);
    if (lane == 0) rstd[t] = r;
    S* orow = out + t * C;  // [C]
    for (int64_t c = lane; c < C; c += kWarp)
      orow[c] = from_f32<S>(to_f32(xr[c]) * r * to_f32(weight[c]));
  }
}

// dx += per row; one warp per row. dx[T,C], dout[T,C], x[T,C], weight[C], rstd[T]
template <typename S>
__global__ void rmsnorm_backward_dx_kernel(S* __restrict__ dx, const S* __restrict__ dout,
                                           const S* __restrict__ x, const S* __restrict__ weight,
                                           const float* __restrict__ rstd, int64_t T, int64_t C) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t t = cuda::global_index() / kWarp; t < T; t += cuda::grid_stride() / kWarp) {
    const S* xr = x + t * C;     // [C]
    const S* gr = dout + t * C;  // [C]
    float dot = 0.0f;            // Σ_i dout_i·w_i·x_i
    for (int64_t c = lane; c < C; c += kWarp)
      dot += to_f32(gr[c]) * to_f32(weight[c]) * to_f32(xr[c]);
    dot = warp_sum(dot);
    const float r = rstd[t];
    const float k = dot / float(C) * r * r;
    S* dxr = dx + t * C;  // [C]
    for (int64_t c = lane; c < C; c += kWarp) {
      const float d = r * (to_f32(gr[c]) * to_f32(weight[c]) - to_f32(xr[c]) * k);
      dxr[c] = from_f32<S>(to_f32(dxr[c]) + d);
    }
  }
}

// dweight pass 1: partial[b, c] = Σ_{t in chunk b, in order} dout[t,c]·(x[t,c]·rstd[t]).
// Grid (chunks, ceil(C/blockDim)): one thread per column, so each row read is coalesced.
template <typename S>
__global__ void rmsnorm_dweight_partial_kernel(float* __restrict__ partial,  // [chunks, C]
                                               const S* __restrict__ dout,   // [T, C]
                                               const S* __restrict__ x,      // [T, C]
                                               const float* __restrict__ rstd,  // [T]
                                               int64_t T, int64_t C, int64_t chunk_rows) {
  const int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t t0 = int64_t(blockIdx.x) * chunk_rows, t1 = std::min(T, t0 + chunk_rows);
  float acc = 0.0f;
  for (int64_t t = t0; t < t1; ++t)
    acc += to_f32(dout[t * C + c]) * (to_f32(x[t * C + c]) * rstd[t]);
  partial[int64_t(blockIdx.x) * C + c] = acc;
}

// dweight pass 2: dweight[c] += Σ_b partial[b, c], chunks in order; one thread per column.
template <typename S>
__global__ void rmsnorm_dweight_sum_kernel(S* __restrict__ dweight,             // [C]
                                           const float* __restrict__ partial,   // [chunks, C]
                                           int64_t chunks, int64_t C) {
  for (int64_t c = cuda::global_index(); c < C; c += cuda::grid_stride()) {
    float acc = 0.0f;
    for (int64_t b = 0; b < chunks; ++b) acc += partial[b * C + c];
    dweight[c] = from_f32<S>(to_f32(dweight[c]) + acc);
  }
}


// Grid with one warp per row.
unsigned grid_for_rows(int64_t T) { return grid_for(T * kWarp); }

}  // namespace

// out[T,C], rstd[T] f32, x[T,C], weight[C]
void CudaBackend::rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
  const char* op = "rmsnorm_forward";
  expect_here(out, op, "out");
  expect_here(rstd, op, "rstd");
  expect_here(x, op, "x");
  expect_here(weight, op, "weight");
  if (x.ndim() != 2) fail("CUDA backend: {}: x is {}, expected [T, C]", op, x.str());
  const int64_t T = x.size(0), C = x.size(1);
  cuda::expect_dtype(out, x.dtype(), op, "out");
  cuda::expect_dtype(weight, x.dtype(), op, "weight");
  cuda::expect_dtype(rstd, DType::F32, op, "rstd");
  expect_shape(out, {T, C}, op, "out");
  expect_shape(weight, {C}, op, "weight");
  expect_shape(rstd, {T}, op, "rstd");
  if (T == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    rmsnorm_forward_kernel<S><<<grid_for_rows(T), kThreads, 0, stream_>>>(
        out.ptr<S>(), rstd.ptr<float>(), x.ptr<S>(), weight.ptr<S>(), T, C, eps);
    cuda_check_last_launch("rmsnorm_forward_kernel");
  });
}

// dx[T,C] +=, dweight[C] += (optional), from dout[T,C] and the saved rstd[T]
void CudaBackend::rmsnorm_backward(Tensor dx, Tensor dweight, Tensor dout, Tensor x,
                                   Tensor weight, Tensor rstd) {
  const char* op = "rmsnorm_backward";
  expect_here(dx, op, "dx");
  expect_here(dout, op, "dout");
  expect_here(x, op, "x");
  expect_here(weight, op, "weight");
  expect_here(rstd, op, "rstd");
  if (x.ndim() != 2) fail("CUDA backend: {}: x is {}, expected [T, C]", op, x.str());
  const int64_t T = x.size(0), C = x.size(1);
  cuda::expect_dtype(dx, x.dtype(), op, "dx");
  cuda::expect_dtype(dout, x.dtype(), op, "dout");
  cuda::expect_dtype(weight, x.dtype(), op, "weight");
  cuda::expect_dtype(rstd, DType::F32, op, "rstd");
  expect_shape(dx, {T, C}, op, "dx");
  expect_shape(dout, {T, C}, op, "dout");
  expect_shape(weight, {C}, op, "weight");
  expect_shape(rstd, {T}, op, "rstd");
  if (dweight.defined()) {
    expect_here(dweight, op, "dweight");
    cuda::expect_dtype(dweight, x.dtype(), op, "dweight");
    expect_shape(dweight, {C}, op, "dweight");
  }
  if (T == 0 || C == 0) return;

  const int64_t col_blocks = (C + kThreads - 1) / kThreads;
  if (col_blocks > 65535)
    fail("CUDA backend: {}: hidden size {} is too large (at most {})", op, C, 65535 * kThreads);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    rmsnorm_backward_dx_kernel<S><<<grid_for_rows(T), kThreads, 0, stream_>>>(
        dx.ptr<S>(), dout.ptr<S>(), x.ptr<S>(), weight.ptr<S>(), rstd.ptr<float>(), T, C);
    cuda_check_last_launch("rmsnorm_backward_dx_kernel");
    if (!dweight.defined()) return;

    // Chunks of rows, each at least kMinChunkRows long, at most kMaxChunks of them.
    const int64_t chunk_rows = std::max(kMinChunkRows, (T + kMaxChunks - 1) / kMaxChunks);
    const int64_t chunks = (T + chunk_rows - 1) / chunk_rows;  // every chunk is non-empty
    StreamScratch partial(size_t(chunks * C) * sizeof(float), stream_);  // [chunks, C] f32
    float* p = partial.get<float>();
    const dim3 grid{unsigned(chunks), unsigned(col_blocks)};
    rmsnorm_dweight_partial_kernel<S><<<grid, kThreads, 0, stream_>>>(
        p, dout.ptr<S>(), x.ptr<S>(), rstd.ptr<float>(), T, C, chunk_rows);
    cuda_check_last_launch("rmsnorm_dweight_partial_kernel");
    rmsnorm_dweight_sum_kernel<S><<<grid_for(C), kThreads, 0, stream_>>>(dweight.ptr<S>(), p,
                                                                         chunks, C);
    cuda_check_last_launch("rmsnorm_dweight_sum_kernel");
  });
}

}  // namespace temper
