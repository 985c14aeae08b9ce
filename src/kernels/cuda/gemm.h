// A small cuBLASLt wrapper for the CUDA backend's GEMMs (linear.cu, cross_entropy.cu), and
// the argument checks those two files share. Only for .cu files of the CUDA backend.
//
//   C[m,n] = op(A)[m,k] · op(B)[k,n]  (+ bias[n] on every row)  (+ C when accumulate)
//
// All matrices are contiguous and row-major: A is stored [m,k] (Trans::N) or [k,m]
// (Trans::T), B is stored [k,n] (N) or [n,k] (T), C is [m,n]. A, B, C and the bias share
// one dtype: f32 (CUBLAS_COMPUTE_32F: true fp32, never TF32), or bf16 / f16 with fp32
// accumulation (CUBLAS_COMPUTE_32F, f32 scale). The output is rounded to the input dtype.
// Enqueued on the backend's stream with its 32 MiB workspace; returns without waiting.
#pragma once
#include "kernels/cuda/cuda_backend.h"  // first: fixes fmt for nvcc

#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"

namespace temper::cuda {

enum class Trans : uint8_t { N, T };

// m, n, k >= 0. k == 0 gives C = bias (or 0), or leaves C as it is when accumulating.
// Descriptors and the heuristic's algorithm are cached per (device, dtype, transposes,
// m, n, k, bias, pointer alignments), so a repeated shape costs one cublasLtMatmul call.
// With a fixed algorithm cuBLASLt is run-to-run deterministic on one GPU model (and the
// heuristic's choice is a function of the key). Split-K plans are preferred with fp32
// partial sums (no bf16 partials); other reduction schemes only when nothing else exists.
void gemm(const CudaBackend& be, DType dtype, int64_t m, int64_t n, int64_t k, const void* a,
          Trans ta, const void* b, Trans tb, void* c, bool accumulate,
          const void* bias = nullptr);

// ---- argument checks shared by the GEMM ops -------------------------------------------
// Messages name the backend, the op and the argument: "CUDA backend: linear_forward: ...".

// A defined f32/bf16/f16 matrix (2-D); the op reads its sizes next.
inline void expect_matrix(const Tensor& t, const char* op, const char* what) {
  if (!t.defined()) fail("CUDA backend: {}: {} is missing (expected a 2-D tensor)", op, what);
  if (t.ndim() != 2) fail("CUDA backend: {}: {} is {}, expected a 2-D tensor", op, what, t.str());
  if (t.dtype() != DType::F32 && t.dtype() != DType::BF16 && t.dtype() != DType::F16)
    fail("CUDA backend: {}: {} is {}, expected dtype f32, bf16 or f16", op, what, t.str());
}

// Exactly dtype[shape] (t defined).
inline void expect_shape(const Tensor& t, DType dtype, const Shape& shape, const char* op,
                         const char* what) {
  if (!t.defined())
    fail("CUDA backend: {}: {} is missing (expected {}{})", op, what, dtype_name(dtype),
         shape.str());
  if (t.dtype() != dtype || !(t.shape() == shape))
    fail("CUDA backend: {}: {} is {}, expected {}{}", op, what, t.str(), dtype_name(dtype),
         shape.str());
}

}  // namespace temper::cuda
