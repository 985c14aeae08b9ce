// CUDA backend: LM head fused with cross-entropy. For each chunk of `chunk` tokens:
//   1. logits[n,V] = x_chunk[n,C] · W[V,C]ᵀ            cuBLASLt, into a [chunk, V] scratch
//                                                        of the activation dtype
//   2. one block per row: online max / sum-exp over V in fp32, lse = max + log(sum),
//      row_loss = lse − logit[target] (0 for ignored rows); with gradients, the row is
//      overwritten in place by dlogits = (softmax − onehot(target)) · grad_scale (0 for
//      ignored rows)
//   3. dx[n,C] += dlogits · W,  dweight[V,C] += dlogitsᵀ · x_chunk   cuBLASLt, beta = 1
// Finally one block sums the per-row losses in a fixed order (f64), counts the targets and
// finds the first invalid one; the totals come to the host once (the call's only sync).
// A target outside [0, V) other than -100 is never dereferenced: its row gets no loss and
// no gradient, and the call then throws naming the first such token (the gradients of the
// other rows have been accumulated by then; the CPU backend checks before computing).
#include <climits>
#include <cmath>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/gemm.h"

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::kThreads;
using cuda::to_f32;
using cuda::StreamScratch;
using cuda::Trans;

namespace {

constexpr int kRowThreads = 512;  // threads per row block (16 warps)
constexpr int kWarps = kRowThreads / 32;
static_assert(kRowThreads % 32 == 0 && kWarps <= 32);

// Merges the running (max, Σ exp(l − max)) pair (m2, s2) into (m, s).
__device__ __forceinline__ void merge_max_sum(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;  // both empty
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

// The block's (max, sum) over all threads' pairs, returned to every thread. Fixed butterfly
// and tree: the result depends only on the data, not on timing.
__device__ __forceinline__ void block_max_sum(float& m, float& s) {
  __shared__ float sm[kWarps], ss[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    merge_max_sum(m, s, __shfl_xor_sync(0xffffffffu, m, off), __shfl_xor_sync(0xffffffffu, s, off));
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < kWarps ? sm[lane] : -INFINITY;
    s = lane < kWarps ? ss[lane] : 0.0f;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
      merge_max_sum(m, s, __shfl_xor_sync(0xffffffffu, m, off),
                    __shfl_xor_sync(0xffffffffu, s, off));
    if (lane == 0) {
      sm[0] = m;
      ss[0] = s;
    }
  }
  __syncthreads();
  m = sm[0];
  s = ss[0];
}

// Row r of logits[rows, V] (block r): its loss into row_loss[r] and, when `grads`, the row
// overwritten by dlogits. targets[rows] are this chunk's targets.
template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    softmax_xent_rows_kernel(T* __restrict__ logits, int64_t V,
                             const int32_t* __restrict__ targets, float* __restrict__ row_loss,
                             bool grads, float grad_scale) {
  const int64_t r = blockIdx.x;
  T* l = logits + r * V;  // [V]
  const int32_t target = targets[r];
  if (target < 0 || int64_t(target) >= V) {  // -100 (or invalid: reported by the totals)
    if (threadIdx.x == 0) row_loss[r] = 0.0f;
    if (grads)
      for (int64_t j = threadIdx.x; j < V; j += kRowThreads) l[j] = from_f32<T>(0.0f);
    return;  // block-uniform: no thread is left waiting at a barrier
  }
  // Read before the barriers in block_max_sum; the in-place writes come after them.
  const float target_logit = threadIdx.x == 0 ? to_f32(l[target]) : 0.0f;

  float m = -INFINITY, s = 0.0f;  // online: s = Σ exp(l_j − m) over this thread's j
  for (int64_t j = threadIdx.x; j < V; j += kRowThreads) {
    const float v = to_f32(l[j]);
    if (v > m) {
      s = s * expf(m - v) + 1.0f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  block_max_sum(m, s);
  const float lse = m + logf(s);
  if (threadIdx.x == 0) row_loss[r] = lse - target_logit;  // −log softmax(target)
  if (grads)  // each thread rewrites only the elements it read
    for (int64_t j = threadIdx.x; j < V; j += kRowThreads) {
      float g = expf(to_f32(l[j]) - lse) * grad_scale;
      if (j == target) g -= grad_scale;
      l[j] = from_f32<T>(g);
    }
}

struct CeTotals {
  double loss;          // Σ row_loss over counted rows
  long long tokens;     // targets != -100 inside [0, V)
  long long bad_index;  // first token whose target is invalid, or -1
  int bad_target;       // its target
};

// One block: the totals over rows [0, T) in a fixed order (per-thread strides, then a
// fixed tree). row_loss may be null (a degenerate call with no logits: loss 0).
__global__ void __launch_bounds__(kThreads)
    xent_totals_kernel(const float* __restrict__ row_loss, const int32_t* __restrict__ targets,
                       int64_t T, int64_t V, CeTotals* __restrict__ out) {
  __shared__ double s_loss[kThreads];
  __shared__ long long s_count[kThreads], s_bad[kThreads];
  double loss = 0.0;
  long long count = 0, bad = LLONG_MAX;
  for (int64_t i = threadIdx.x; i < T; i += kThreads) {
    const int32_t t = targets[i];
    if (t == kIgnoreIndex) continue;
    if (t < 0 || int64_t(t) >= V) {
      if (bad == LLONG_MAX) bad = i;  // this thread's rows ascend: the first is its minimum
      continue;
    }
    ++count;
    if (row_loss) loss += double(row_loss[i]);
  }
  s_loss[threadIdx.x] = loss;
  s_count[threadIdx.x] = count;
  s_bad[threadIdx.x] = bad;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) {
      s_loss[threadIdx.x] += s_loss[threadIdx.x + w];
      s_count[threadIdx.x] += s_count[threadIdx.x + w];
      s_bad[threadIdx.x] = min(s_bad[threadIdx.x], s_bad[threadIdx.x + w]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out->loss = s_loss[0];
    out->tokens = s_count[0];
    out->bad_index = s_bad[0] == LLONG_MAX ? -1 : s_bad[0];
    out->bad_target = s_bad[0] == LLONG_MAX ? 0 : targets[s_bad[0]];
  }
}

constexpr size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

// x[T,C], weight[V,C] (one float dtype), targets[T] i32; dx[T,C] +=, dweight[V,C] += (both
// optional, x's dtype).
LossSum CudaBackend::lm_head_cross_entropy(Tensor dx, Tensor dweight, Tensor x, Tensor weight,
                                           Tensor targets, float grad_scale, int64_t chunk) {
  const char* op = "lm_head_cross_entropy";
  cuda::expect_matrix(x, op, "x");
  cuda::expect_matrix(weight, op, "weight");
  const DType dt = x.dtype();
  const int64_t T = x.size(0), C = x.size(1), V = weight.size(0);
  cuda::expect_shape(weight, dt, {V, C}, op, "weight");
  cuda::expect_shape(targets, DType::I32, {T}, op, "targets");
  if (dx.defined()) cuda::expect_shape(dx, dt, {T, C}, op, "dx");
  if (dweight.defined()) cuda::expect_shape(dweight, dt, {V, C}, op, "dweight");
  expect_here(x, op, "x");
  expect_here(weight, op, "weight");
  expect_here(targets, op, "targets");
  if (dx.defined()) expect_here(dx, op, "dx");
  if (dweight.defined()) expect_here(dweight, op, "dweight");
  if (chunk < 1) fail("CUDA backend: {}: chunk must be >= 1, got {}", op, chunk);
  if (T == 0) return {};
  if (V > INT32_MAX) fail("CUDA backend: {}: vocabulary size {} exceeds int32 targets", op, V);

  const auto stream = static_cast<cudaStream_t>(stream_);
  const bool grads = dx.defined() || dweight.defined();
  const bool degenerate = V == 0 || C == 0;  // as the CPU: count (and check) targets only
  chunk = std::min(chunk, T);
  const size_t elem = dtype_size(dt);
  // One scratch block: logits [chunk, V] | row_loss [T] f32 | totals.
  const size_t logits_bytes = degenerate ? 0 : round_up(size_t(chunk) * size_t(V) * elem, 256);
  const size_t loss_bytes = degenerate ? 0 : round_up(size_t(T) * sizeof(float), 256);
  StreamScratch scratch(logits_bytes + loss_bytes + sizeof(CeTotals), stream);
  char* logits = scratch.get();
  auto* row_loss = degenerate ? nullptr : reinterpret_cast<float*>(scratch.get() + logits_bytes);
  auto* totals = reinterpret_cast<CeTotals*>(scratch.get() + logits_bytes + loss_bytes);
  const auto* tg = targets.ptr<int32_t>();  // [T]

  if (!degenerate) {
    const auto* px = static_cast<const char*>(x.data());  // [T, C]
    for (int64_t c0 = 0; c0 < T; c0 += chunk) {
      const int64_t n = std::min(chunk, T - c0);
      const void* xc = px + size_t(c0) * size_t(C) * elem;  // [n, C] this chunk's rows
      // logits[n,V] = x[n,C] · W[V,C]ᵀ
      cuda::gemm(*this, dt, n, V, C, xc, Trans::N, weight.data(), Trans::T, logits,
                 /*accumulate=*/false);
      dispatch_float(dt, op, [&](auto tag) {
        using S = decltype(tag);
        softmax_xent_rows_kernel<S><<<unsigned(n), kRowThreads, 0, stream>>>(
            reinterpret_cast<S*>(logits), V, tg + c0, row_loss + c0, grads, grad_scale);
        cuda_check_last_launch("softmax_xent_rows_kernel");
      });
      if (dx.defined())  // dx[n,C] += dlogits[n,V] · W[V,C]
        cuda::gemm(*this, dt, n, C, V, logits, Trans::N, weight.data(), Trans::N,
                   static_cast<char*>(dx.data()) + size_t(c0) * size_t(C) * elem,
                   /*accumulate=*/true);
      if (dweight.defined())  // dW[V,C] += dlogits[n,V]ᵀ · x[n,C]
        cuda::gemm(*this, dt, V, C, n, logits, Trans::T, xc, Trans::N, dweight.data(),
                   /*accumulate=*/true);
    }
  }
  xent_totals_kernel<<<1, kThreads, 0, stream>>>(row_loss, tg, T, V, totals);
  cuda_check_last_launch("xent_totals_kernel");
  CeTotals host{};
  CUDA_CHECK(cudaMemcpyAsync(&host, totals, sizeof(host), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));

  if (host.bad_index >= 0)
    fail("CUDA backend: {}: token {} has target {}, outside the vocabulary [0, {}) and not the "
         "ignore index {}",
         op, host.bad_index, host.bad_target, V, kIgnoreIndex);
  LossSum result;
  result.loss = host.loss;
  result.tokens = host.tokens;
  return result;
}

}  // namespace temper
