// CUDA backend: rotary position embedding, rotate-half convention (Hugging Face Llama),
// exactly the CPU backend's arithmetic: pair (x1, x2) = (x[j], x[j + D/2]) of each head
// is rotated by angle θ(pos[t], j), in place:
//   forward:  (x1·cos − x2·sin,  x2·cos + x1·sin)
//   backward: (x1·cos + x2·sin,  x2·cos − x1·sin)   the inverse rotation (= its transpose)
// Positions are not validated here (the model builds them); a token whose position is
// outside the table [0, P) is left unrotated rather than read out of bounds.
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

// x[T,H,D] in place, rotated by sign·θ; one thread per pair (t, h, j), j < D/2, so
// consecutive threads touch consecutive j (coalesced).
// positions[T] i32, cos/sin [P, D/2] f32.
template <typename S>
__global__ void rope_kernel(S* __restrict__ x, const int32_t* __restrict__ positions,
                            const float* __restrict__ cos, const float* __restrict__ sin,
                            int64_t T, int64_t H, int64_t half, int64_t P, float sign) {
  const int64_t n = T * H * half;
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) {
    const int64_t j = i % half, th = i / half;  // th = t·H + h
    const int64_t p = positions[th / H];
    if (p < 0 || p >= P) continue;
    S* xr = x + th * 2 * half;  // [D]
    const float c = cos[p * half + j], sn = sign * sin[p * half + j];
    const float x1 = to_f32(xr[j]), x2 = to_f32(xr[j + half]);
    xr[j] = from_f32<S>(x1 * c - x2 * sn);
    xr[j + half] = from_f32<S>(x2 * c + x1 * sn);
  }
}

void rope_launch(Tensor x, Tensor positions, Tensor cos, Tensor sin, float sign, const char* op,
                 cudaStream_t stream) {
  if (x.ndim() != 3) fail("CUDA backend: {}: x is {}, expected [T, H, D]", op, x.str());
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2);
  if (D % 2 != 0) fail("CUDA backend: {}: head dim {} of x {} must be even", op, D, x.str());
  const int64_t half = D / 2;
  cuda::expect_dtype(positions, DType::I32, op, "positions");
  cuda::expect_dtype(cos, DType::F32, op, "cos");
  cuda::expect_dtype(sin, DType::F32, op, "sin");
  if (!(positions.shape() == Shape{T}))
    fail("CUDA backend: {}: positions is {}, expected shape [{}]", op, positions.str(), T);
  if (cos.ndim() != 2 || cos.size(1) != half)
    fail("CUDA backend: {}: cos is {}, expected [P, {}] (D/2 of x {})", op, cos.str(), half,
         x.str());
  const int64_t P = cos.size(0);
  if (!(sin.shape() == cos.shape()))
    fail("CUDA backend: {}: sin {} and cos {} differ in shape", op, sin.str(), cos.str());
  const int64_t n = T * H * half;
  if (n == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    rope_kernel<S><<<grid_for(n), kThreads, 0, stream>>>(x.ptr<S>(), positions.ptr<int32_t>(),
                                                         cos.ptr<float>(), sin.ptr<float>(), T,
                                                         H, half, P, sign);
    cuda_check_last_launch("rope_kernel");
  });
}

}  // namespace

// x[T,H,D] in place; positions[T]; cos, sin [P, D/2]
void CudaBackend::rope_forward(Tensor x, Tensor positions, Tensor cos, Tensor sin) {
  const char* op = "rope_forward";
  expect_here(x, op, "x");
  expect_here(positions, op, "positions");
  expect_here(cos, op, "cos");
  expect_here(sin, op, "sin");
  rope_launch(x, positions, cos, sin, 1.0f, op, stream_);
}

// dx[T,H,D] in place: the rotation is orthogonal, so its gradient is the inverse rotation.
void CudaBackend::rope_backward(Tensor dx, Tensor positions, Tensor cos, Tensor sin) {
  const char* op = "rope_backward";
  expect_here(dx, op, "dx");
  expect_here(positions, op, "positions");
  expect_here(cos, op, "cos");
  expect_here(sin, op, "sin");
  rope_launch(dx, positions, cos, sin, -1.0f, op, stream_);
}

}  // namespace temper
