// CUDA backend: elementwise ops (add, scale), the deterministic sum of squares, and the
// AdamW update. All arithmetic in fp32; bf16/f16 only as storage.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::grid_for;
using cuda::kThreads;
using cuda::to_f32;

namespace {

// out[n] = a[n] + b[n]; out may alias a (or b), so no __restrict__.
template <typename T>
__global__ void add_kernel(T* out, const T* a, const T* b, int64_t n) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride())
    out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}

// x[n] *= s
template <typename T>
__global__ void scale_kernel(T* __restrict__ x, int64_t n, float s) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride())
    x[i] = from_f32<T>(to_f32(x[i]) * s);
}

// Fixed-shape tree sum of s[kThreads] in shared memory; the total ends in s[0].
__device__ __forceinline__ void block_tree_sum(double* s) {
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
}

// Pass 1: block b sums x² over its grid-stride share into partials[b], in f64 like the
// CPU (free: the kernel is bandwidth-bound even at 1/64-rate FP64). The grid depends
// only on n, and the tree order is fixed: deterministic, no atomics.
template <typename T>
__global__ void sum_squares_partial_kernel(const T* __restrict__ x, int64_t n,
                                           double* __restrict__ partials) {
  __shared__ double s[kThreads];
  double acc = 0.0;
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    double v = to_f32(x[i]);
    acc += v * v;
  }
  s[threadIdx.x] = acc;
  __syncthreads();
  block_tree_sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s[0];
}

// Pass 2 (one block): partials[blocks] summed in a fixed order into partials[total_slot].
__global__ void sum_partials_kernel(double* partials, int blocks, int total_slot) {
  __shared__ double s[kThreads];
  double acc = 0.0;
  for (int i = threadIdx.x; i < blocks; i += kThreads) acc += partials[i];
  s[threadIdx.x] = acc;
  __syncthreads();
  block_tree_sum(s);
  if (threadIdx.x == 0) partials[total_slot] = s[0];
}

// Scalars of one step, formed on the host exactly as the CPU backend forms them.
struct AdamWArgs {
  float decay;       // 1 - lr·wd (decoupled weight decay first)
  float step_size;   // lr / (1 - β1^t)
  float bc2_sqrt;    // sqrt(1 - β2^t)
  float w1, b2, w2;  // 1 - β1, β2, 1 - β2
  float eps, grad_scale;
};

// One AdamW step per element, in torch.optim.AdamW's form and the CPU backend's order of
// operations. Explicit _rn intrinsics stop nvcc fusing into FMAs, so results are
// bit-identical to the CPU's (sqrt and division are IEEE-rounded on both).
// master/m/v[n] f32; grad[n] G; param[n] P or null (may alias master: no __restrict__).
template <typename G, typename P>
__global__ void adamw_kernel(float* master, P* param, const G* __restrict__ grad,
                             float* __restrict__ m, float* __restrict__ v, int64_t n,
                             AdamWArgs a) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    float g = __fmul_rn(to_f32(grad[i]), a.grad_scale);
    float p = __fmul_rn(master[i], a.decay);
    float mi = m[i];
    mi = __fadd_rn(mi, __fmul_rn(a.w1, __fsub_rn(g, mi)));  // lerp(m, g, 1-β1)
    float vi = __fadd_rn(__fmul_rn(v[i], a.b2), __fmul_rn(__fmul_rn(a.w2, g), g));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2_sqrt), a.eps);
    p = __fadd_rn(p, __fdiv_rn(__fmul_rn(-a.step_size, mi), denom));
    m[i] = mi;
    v[i] = vi;
    master[i] = p;
    if (param) param[i] = from_f32<P>(p);
  }
}

}  // namespace

void CudaBackend::add(Tensor out, Tensor a, Tensor b) {
  expect_here(out, "add", "out");
  expect_here(a, "add", "a");
  expect_here(b, "add", "b");
  cuda::expect_same_numel(out, a, "add", "out", "a");
  cuda::expect_same_numel(out, b, "add", "out", "b");
  cuda::expect_dtype(a, out.dtype(), "add", "a");
  cuda::expect_dtype(b, out.dtype(), "add", "b");
  int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.dtype(), "add", [&](auto tag) {
    using T = decltype(tag);
    add_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(out.ptr<T>(), a.ptr<T>(), b.ptr<T>(), n);
    cuda_check_last_launch("add_kernel");
  });
}

void CudaBackend::scale(Tensor x, float s) {
  expect_here(x, "scale", "x");
  int64_t n = x.numel();
  if (n == 0) return;
  dispatch_float(x.dtype(), "scale", [&](auto tag) {
    using T = decltype(tag);
    scale_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(x.ptr<T>(), n, s);
    cuda_check_last_launch("scale_kernel");
  });
}

double CudaBackend::sum_squares(Tensor x) {
  expect_here(x, "sum_squares", "x");
  int64_t n = x.numel();
  if (n == 0) return 0.0;
  // At least 8 elements per thread until the block cap; a function of n alone.
  int blocks = int(std::clamp<int64_t>((n + kThreads * 8 - 1) / (kThreads * 8), 1,
                                       kMaxReduceBlocks));
  dispatch_float(x.dtype(), "sum_squares", [&](auto tag) {
    using T = decltype(tag);
    sum_squares_partial_kernel<T><<<blocks, kThreads, 0, stream_>>>(x.ptr<T>(), n,
                                                                     reduce_partials_);
    cuda_check_last_launch("sum_squares_partial_kernel");
  });
  sum_partials_kernel<<<1, kThreads, 0, stream_>>>(reduce_partials_, blocks, kMaxReduceBlocks);
  cuda_check_last_launch("sum_partials_kernel");
  CUDA_CHECK(cudaMemcpyAsync(reduce_host_, reduce_partials_ + kMaxReduceBlocks, sizeof(double),
                             cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return *reduce_host_;
}

void CudaBackend::adamw_update(Tensor master, Tensor param, Tensor grad, Tensor m, Tensor v,
                               const AdamWStep& hp) {
  const char* op = "adamw_update";
  expect_here(master, op, "master");
  expect_here(grad, op, "grad");
  expect_here(m, op, "m");
  expect_here(v, op, "v");
  cuda::expect_dtype(master, DType::F32, op, "master");
  cuda::expect_dtype(m, DType::F32, op, "m");
  cuda::expect_dtype(v, DType::F32, op, "v");
  cuda::expect_same_numel(master, grad, op, "master", "grad");
  cuda::expect_same_numel(master, m, op, "master", "m");
  cuda::expect_same_numel(master, v, op, "master", "v");
  if (param.defined()) {
    expect_here(param, op, "param");
    cuda::expect_same_numel(master, param, op, "master", "param");
  }
  if (hp.step < 1)
    fail("CUDA backend: adamw_update: step must be >= 1 (1-based), got {}", hp.step);
  int64_t n = master.numel();
  if (n == 0) return;

  // Scalars in double as Python forms them, then used in f32 (as the CPU backend does).
  const double bc1 = 1.0 - std::pow(double(hp.beta1), double(hp.step));
  const double bc2 = 1.0 - std::pow(double(hp.beta2), double(hp.step));
  AdamWArgs a;
  a.decay = float(1.0 - double(hp.lr) * double(hp.weight_decay));
  a.step_size = float(double(hp.lr) / bc1);
  a.bc2_sqrt = float(std::sqrt(bc2));
  a.w1 = float(1.0 - double(hp.beta1));
  a.b2 = hp.beta2;
  a.w2 = float(1.0 - double(hp.beta2));
  a.eps = hp.eps;
  a.grad_scale = hp.grad_scale;

  dispatch_float(grad.dtype(), "adamw_update (grad)", [&](auto gtag) {
    using G = decltype(gtag);
    auto launch = [&](auto* param_ptr) {
      using P = std::remove_pointer_t<decltype(param_ptr)>;
      adamw_kernel<G, P><<<grid_for(n), kThreads, 0, stream_>>>(
          master.ptr<float>(), param_ptr, grad.ptr<G>(), m.ptr<float>(), v.ptr<float>(), n, a);
      cuda_check_last_launch("adamw_kernel");
    };
    if (!param.defined()) {
      launch(static_cast<float*>(nullptr));
      return;
    }
    dispatch_float(param.dtype(), "adamw_update (param)", [&](auto ptag) {
      using P = decltype(ptag);
      launch(param.ptr<P>());
    });
  });
}

}  // namespace temper
