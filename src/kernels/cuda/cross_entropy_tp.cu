// Vocab-parallel cross-entropy pieces (tensor parallelism): per-row partials over this
// rank's vocabulary slice, and the combination of every rank's partials into the loss
// and, in place, dlogits. One 256-thread block per row; fp32 math, fixed-order reductions.
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::to_f32;

namespace {

constexpr int kRowThreads = 256;

// Block-wide max / sum in a fixed order (tree over shared memory).
__device__ float block_reduce(float v, float* shared, bool is_max) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s)
      shared[threadIdx.x] = is_max ? fmaxf(shared[threadIdx.x], shared[threadIdx.x + s])
                                   : shared[threadIdx.x] + shared[threadIdx.x + s];
    __syncthreads();
  }
  const float r = shared[0];
  __syncthreads();
  return r;
}

// stats[n,3] = (max, Σ exp(l − max), target logit in slice or 0)
template <typename T>
__global__ void partials_kernel(float* stats, const T* logits, const int32_t* targets, int64_t V,
                                int64_t vocab_start) {
  __shared__ float shared[kRowThreads];
  const int64_t r = blockIdx.x;
  const T* row = logits + r * V;
  float* s = stats + 3 * r;
  if (targets[r] == -100) {
    if (threadIdx.x == 0) s[0] = s[1] = s[2] = 0.0f;
    return;
  }
  float m = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, to_f32(row[v]));
  m = block_reduce(m, shared, true);
  float sum = 0.0f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(to_f32(row[v]) - m);
  sum = block_reduce(sum, shared, false);
  if (threadIdx.x == 0) {
    const int64_t local = int64_t(targets[r]) - vocab_start;
    s[0] = m;
    s[1] = sum;
    s[2] = local >= 0 && local < V ? to_f32(row[local]) : 0.0f;
  }
}

// loss[n]; logits[n,V] -> dlogits when want_grad; stats_all[R,n,3]
template <typename T>
__global__ void combine_kernel(float* loss, T* logits, const float* stats_all, int64_t R,
                               int64_t n, const int32_t* targets, int64_t V, int64_t vocab_start,
                               float grad_scale, bool want_grad) {
  __shared__ float lse_shared;
  const int64_t r = blockIdx.x;
  T* row = logits + r * V;
  const bool ignored = targets[r] == -100;
  if (threadIdx.x == 0) {
    float l = 0.0f;
    if (!ignored) {
      float m = stats_all[3 * r];
      for (int64_t k = 1; k < R; ++k) m = fmaxf(m, stats_all[(k * n + r) * 3]);
      double sum = 0.0, target = 0.0;
      for (int64_t k = 0; k < R; ++k) {
        const float* s = stats_all + (k * n + r) * 3;
        sum += double(s[1]) * exp(double(s[0]) - double(m));
        target += s[2];
      }
      const double lse = double(m) + log(sum);
      lse_shared = float(lse);
      l = float(lse - target);
    }
    loss[r] = l;
  }
  __syncthreads();
  if (!want_grad) return;
  const int64_t local = int64_t(targets[r]) - vocab_start;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    float g = 0.0f;
    if (!ignored) g = (expf(to_f32(row[v]) - lse_shared) - (v == local ? 1.0f : 0.0f)) * grad_scale;
    row[v] = from_f32<T>(g);
  }
}

void expect_2d(const Tensor& t, const char* op, const char* what) {
  if (t.ndim() != 2) fail("CUDA backend: {}: {} must be 2-D, got {}", op, what, t.str());
}

}  // namespace

void CudaBackend::cross_entropy_partials(Tensor stats, Tensor logits, Tensor targets,
                                         int64_t vocab_start) {
  const char* op = "cross_entropy_partials";
  expect_here(stats, op, "stats");
  expect_here(logits, op, "logits");
  expect_here(targets, op, "targets");
  expect_2d(logits, op, "logits");
  const int64_t n = logits.size(0), V = logits.size(1);
  expect_tensor(stats, DType::F32, Shape{n, 3}, "cross_entropy_partials: stats");
  expect_tensor(targets, DType::I32, Shape{n}, "cross_entropy_partials: targets");
  if (n == 0) return;
  dispatch_float(logits.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    partials_kernel<S><<<unsigned(n), kRowThreads, 0, stream_>>>(
        stats.ptr<float>(), logits.ptr<S>(), targets.ptr<int32_t>(), V, vocab_start);
    cuda_check_last_launch("partials_kernel");
  });
}

void CudaBackend::cross_entropy_combine(Tensor loss, Tensor logits, Tensor stats_all,
                                        Tensor targets, int64_t vocab_start, float grad_scale,
                                        bool want_grad) {
  const char* op = "cross_entropy_combine";
  expect_here(loss, op, "loss");
  expect_here(logits, op, "logits");
  expect_here(stats_all, op, "stats_all");
  expect_here(targets, op, "targets");
  expect_2d(logits, op, "logits");
  const int64_t n = logits.size(0), V = logits.size(1);
  if (stats_all.ndim() != 3) fail("CUDA backend: {}: stats_all must be [R, n, 3], got {}", op, stats_all.str());
  const int64_t R = stats_all.size(0);
  expect_tensor(stats_all, DType::F32, Shape{R, n, 3}, "cross_entropy_combine: stats_all");
  expect_tensor(loss, DType::F32, Shape{n}, "cross_entropy_combine: loss");
  expect_tensor(targets, DType::I32, Shape{n}, "cross_entropy_combine: targets");
  if (n == 0) return;
  dispatch_float(logits.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    combine_kernel<S><<<unsigned(n), kRowThreads, 0, stream_>>>(
        loss.ptr<float>(), logits.ptr<S>(), stats_all.ptr<float>(), R, n, targets.ptr<int32_t>(),
        V, vocab_start, grad_scale, want_grad);
    cuda_check_last_launch("combine_kernel");
  });
}

}  // namespace temper
