// Error checking for CUDA runtime and cuBLAS(Lt) calls: a failure throws temper::Error
// naming the call text, file:line and CUDA's own error name and string.
// Only for .cu/.cpp files of the CUDA backend (pulls in the CUDA headers).
#pragma once

#include "kernels/cuda/fmt_nvcc.h"  // first: before any fmt header

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "core/error.h"

namespace temper::cuda_detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file,
                                          int line) {
  fail("{}:{}: CUDA call failed: {}: {} ({})", file, line, call, cudaGetErrorName(err),
       cudaGetErrorString(err));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t st, const char* call, const char* file,
                                            int line) {
  fail("{}:{}: cuBLAS call failed: {}: {} ({})", file, line, call, cublasLtGetStatusName(st),
       cublasLtGetStatusString(st));
}

}  // namespace temper::cuda_detail

#define CUDA_CHECK(call)                                                                \
  do {                                                                                  \
    cudaError_t temper_err_ = (call);                                                   \
    if (temper_err_ != cudaSuccess)                                                     \
      ::temper::cuda_detail::throw_cuda_error(temper_err_, #call, __FILE__, __LINE__);  \
  } while (0)

#define CUBLAS_CHECK(call)                                                              \
  do {                                                                                  \
    cublasStatus_t temper_st_ = (call);                                                 \
    if (temper_st_ != CUBLAS_STATUS_SUCCESS)                                            \
      ::temper::cuda_detail::throw_cublas_error(temper_st_, #call, __FILE__, __LINE__); \
  } while (0)

namespace temper {

// After a kernel launch: turns a bad launch configuration (or an earlier sticky error)
// into an Error naming the kernel. Asynchronous faults surface at the next sync.
inline void cuda_check_last_launch(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    fail("CUDA kernel launch failed: {}: {} ({})", kernel, cudaGetErrorName(err),
         cudaGetErrorString(err));
}

}  // namespace temper
