// CUDA backend: SwiGLU (Shazeer 2020), the CPU backend's formulas in fp32:
//   forward:  out = silu(g) · up,  silu(g) = g · σ(g)
//   backward: dgate += dout · up · σ(g) · (1 + g · (1 − σ(g))),  dup += dout · silu(g)
// Elementwise over [T, F], one thread per element (grid-stride).
#include <cstdint>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::grid_for;
using cuda::kThreads;
using cuda::to_f32;

namespace {

// σ(g) with the accurate expf (no fast-math), as the CPU's std::exp.
__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

// out[n] = silu(gate[n]) · up[n]
template <typename S>
__global__ void swiglu_forward_kernel(S* __restrict__ out, const S* __restrict__ gate,
                                      const S* __restrict__ up, int64_t n) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const float g = to_f32(gate[i]);
    out[i] = from_f32<S>(g * sigmoid(g) * to_f32(up[i]));
  }
}

// dgate[n] +=, dup[n] += from dout[n]
template <typename S>
__global__ void swiglu_backward_kernel(S* __restrict__ dgate, S* __restrict__ dup,
                                       const S* __restrict__ dout, const S* __restrict__ gate,
                                       const S* __restrict__ up, int64_t n) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const float g = to_f32(gate[i]), u = to_f32(up[i]), d = to_f32(dout[i]);
    const float sig = sigmoid(g);
    dgate[i] = from_f32<S>(to_f32(dgate[i]) + d * u * sig * (1.0f + g * (1.0f - sig)));
    dup[i] = from_f32<S>(to_f32(dup[i]) + d * g * sig);
  }
}

// t has the dtype and shape of `like` (gate).
void expect_like(const Tensor& t, const Tensor& like, const char* op, const char* what) {
  if (t.dtype() != like.dtype() || !(t.shape() == like.shape()))
    fail("CUDA backend: {}: {} is {}, expected {}{} like gate", op, what, t.str(),
         dtype_name(like.dtype()), like.shape().str());
}

}  // namespace

// out[T,F] = silu(gate[T,F]) · up[T,F]
void CudaBackend::swiglu_forward(Tensor out, Tensor gate, Tensor up) {
  const char* op = "swiglu_forward";
  expect_here(out, op, "out");
  expect_here(gate, op, "gate");
  expect_here(up, op, "up");
  expect_like(up, gate, op, "up");
  expect_like(out, gate, op, "out");
  const int64_t n = gate.numel();
  if (n == 0) return;
  dispatch_float(gate.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    swiglu_forward_kernel<S><<<grid_for(n), kThreads, 0, stream_>>>(out.ptr<S>(), gate.ptr<S>(),
                                                                    up.ptr<S>(), n);
    cuda_check_last_launch("swiglu_forward_kernel");
  });
}

// dgate[T,F] +=, dup[T,F] += from dout[T,F]
void CudaBackend::swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) {
  const char* op = "swiglu_backward";
  expect_here(dgate, op, "dgate");
  expect_here(dup, op, "dup");
  expect_here(dout, op, "dout");
  expect_here(gate, op, "gate");
  expect_here(up, op, "up");
  expect_like(up, gate, op, "up");
  expect_like(dout, gate, op, "dout");
  expect_like(dgate, gate, op, "dgate");
  expect_like(dup, gate, op, "dup");
  const int64_t n = gate.numel();
  if (n == 0) return;
  dispatch_float(gate.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    swiglu_backward_kernel<S><<<grid_for(n), kThreads, 0, stream_>>>(
        dgate.ptr<S>(), dup.ptr<S>(), dout.ptr<S>(), gate.ptr<S>(), up.ptr<S>(), n);
    cuda_check_last_launch("swiglu_backward_kernel");
  });
}

}  // namespace temper
