// Helpers shared by the CUDA kernel files: storage <-> fp32 conversions, dtype dispatch,
// grid sizing and argument checks. Device code computes in fp32 whatever the storage type.
#pragma once
#include "kernels/cuda/cuda_check.h"  // first: fixes fmt for nvcc

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"

namespace temper::cuda {

// ---- conversions (round to nearest even on the way down) ----------------------------
template <typename T>
__device__ __forceinline__ float to_f32(T x);
template <>
__device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

// ---- dtype dispatch ----------------------------------------------------------------
// Calls fn(T{}) with T the storage type of float dtype t (float, __nv_bfloat16, __half).
template <typename Fn>
void dispatch_float(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32: fn(float{}); return;
    case DType::BF16: fn(__nv_bfloat16{}); return;
    case DType::F16: fn(__half{}); return;
    default:
      fail("CUDA backend: {} does not support dtype {} (expected f32, bf16 or f16)", op,
           dtype_name(t));
  }
}

// ---- launch geometry ---------------------------------------------------------------
constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 65536;  // grid-stride loops cover the rest

inline unsigned grid_for(int64_t n) {
  return unsigned(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxGrid));
}

// Grid-stride loop index helpers (64-bit: tensors can exceed 2^31 elements).
__device__ __forceinline__ int64_t global_index() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

// ---- argument checks ---------------------------------------------------------------
inline void expect_same_numel(const Tensor& a, const Tensor& b, const char* op, const char* an,
                              const char* bn) {
  if (a.numel() != b.numel())
    fail("CUDA backend: {}: {} {} and {} {} differ in element count", op, an, a.str(), bn, b.str());
}

inline void expect_dtype(const Tensor& t, DType d, const char* op, const char* what) {
  if (t.dtype() != d)
    fail("CUDA backend: {}: {} is {}, expected dtype {}", op, what, t.str(), dtype_name(d));
}

// ---- stream-ordered scratch ---------------------------------------------------------
// cudaMallocAsync now, cudaFreeAsync on the same stream (after the queued work that uses
// it) when it goes out of scope, also when a later launch throws.
class StreamScratch {
 public:
  StreamScratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream_));
  }
  ~StreamScratch() {
    if (ptr_) (void)cudaFreeAsync(ptr_, stream_);  // a destructor must not throw
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  template <typename T = char>
  T* get() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace temper::cuda
