// CUDA backend: device discovery, memory, stream and cuBLASLt handle lifetime, and the
// data-movement ops (copies, casts, zero, fill, fill_normal).
#include "kernels/cuda/cuda_backend.h"

#include <type_traits>

#include "core/log.h"
#include "kernels/cuda/cuda_common.cuh"

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::grid_for;
using cuda::kThreads;
using cuda::to_f32;

// ---- discovery ---------------------------------------------------------------------

int cuda_device_count() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: clear it, it is not a failure here
    return 0;
  }
  return n;
}

std::unique_ptr<Backend> make_cuda_backend(int index) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    fail("backend 'cuda:{}' requested but no CUDA device is usable (no GPU, no NVIDIA "
         "driver, or a driver older than this CUDA runtime): {} ({})",
         index, cudaGetErrorName(err), cudaGetErrorString(err));
  }
  if (index < 0 || index >= n)
    fail("backend 'cuda:{}' requested but {} CUDA device(s) are visible "
         "(valid: cuda:0..cuda:{}; check CUDA_VISIBLE_DEVICES)",
         index, n, n - 1);
  return std::make_unique<CudaBackend>(index);
}

// ---- memory ------------------------------------------------------------------------

void* CudaMemory::raw_allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  CUDA_CHECK(cudaSetDevice(index_));
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    fail("cuda:{} out of memory allocating {:.2f} MiB ({} MiB free of {} MiB, {} MiB "
         "held by temper): {}",
         index_, bytes / 1048576.0, free_b >> 20, total_b >> 20, bytes_in_use() >> 20,
         cudaGetErrorString(err));
  }
  return p;
}

void CudaMemory::raw_deallocate(void* p) {
  cudaError_t err = cudaFree(p);
  if (err != cudaSuccess)
    log::error("cuda:{}: cudaFree failed: {}", index_, cudaGetErrorString(err));
}

// ---- lifetime ----------------------------------------------------------------------

CudaBackend::CudaBackend(int index) : index_(index), memory_(index) {
  try {
    CUDA_CHECK(cudaSetDevice(index));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasLtCreate(&cublaslt_));
    CUDA_CHECK(cudaMalloc(&gemm_workspace_, kGemmWorkspaceBytes));
    CUDA_CHECK(cudaMalloc(&reduce_partials_, (kMaxReduceBlocks + 1) * sizeof(double)));
    CUDA_CHECK(cudaMallocHost(&reduce_host_, sizeof(double)));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
    log::info("CUDA backend on cuda:{}: {} (sm_{}{}, {:.1f} GiB)", index,
              static_cast<const char*>(prop.name), prop.major, prop.minor,
              prop.totalGlobalMem / 1073741824.0);
  } catch (...) {
    release();
    throw;
  }
}

CudaBackend::~CudaBackend() { release(); }

void CudaBackend::release() noexcept {
  if (stream_) (void)cudaStreamSynchronize(stream_);
  if (reduce_host_) (void)cudaFreeHost(reduce_host_);
  if (reduce_partials_) (void)cudaFree(reduce_partials_);
  if (gemm_workspace_) (void)cudaFree(gemm_workspace_);
  if (cublaslt_) (void)cublasLtDestroy(cublaslt_);
  if (stream_) (void)cudaStreamDestroy(stream_);
  reduce_host_ = nullptr;
  reduce_partials_ = nullptr;
  gemm_workspace_ = nullptr;
  cublaslt_ = nullptr;
  stream_ = nullptr;
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void CudaBackend::expect_here(const Tensor& t, const char* op, const char* what) const {
  if (!t.defined()) fail("CUDA backend: {}: {} is undefined", op, what);
  if (t.device() != device())
    fail("CUDA backend: {}: {} is {}, expected a tensor on {}", op, what, t.str(), device().str());
}

// ---- data movement -----------------------------------------------------------------

void CudaBackend::copy_from_host(Tensor dst, const void* src) {
  expect_here(dst, "copy_from_host", "dst");
  if (dst.nbytes() == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst.data(), src, dst.nbytes(), cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::copy_to_host(void* dst, Tensor src) {
  expect_here(src, "copy_to_host", "src");
  if (src.nbytes() == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), src.nbytes(), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

namespace {

// dst[n] = src[n] converted through fp32 (one rounding: every input is exact in fp32).
template <typename D, typename S>
__global__ void cast_kernel(D* __restrict__ dst, const S* __restrict__ src, int64_t n) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride())
    dst[i] = from_f32<D>(to_f32(src[i]));
}

template <typename T>
__global__ void fill_kernel(T* __restrict__ t, int64_t n, T value) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride()) t[i] = value;
}

// t[n] = std · N(0,1) from stream element offset + i: the CPU's formula, bit for bit up
// to the ulps of the device's logf/cosf.
template <typename T>
__global__ void fill_normal_kernel(T* __restrict__ t, int64_t n, RngStream stream,
                                   uint64_t offset, float std) {
  for (int64_t i = cuda::global_index(); i < n; i += cuda::grid_stride())
    t[i] = from_f32<T>(stream.normal(offset + uint64_t(i)) * std);
}

}  // namespace

void CudaBackend::copy(Tensor dst, Tensor src) {
  expect_here(dst, "copy", "dst");
  expect_here(src, "copy", "src");
  cuda::expect_same_numel(dst, src, "copy", "dst", "src");
  int64_t n = dst.numel();
  if (n == 0) return;
  if (dst.dtype() == src.dtype()) {
    CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), dst.nbytes(), cudaMemcpyDeviceToDevice,
                               stream_));
    return;
  }
  dispatch_float(dst.dtype(), "copy (cast dst)", [&](auto d) {
    using D = decltype(d);
    dispatch_float(src.dtype(), "copy (cast src)", [&](auto s) {
      using S = decltype(s);
      cast_kernel<D, S><<<grid_for(n), kThreads, 0, stream_>>>(dst.ptr<D>(), src.ptr<S>(), n);
      cuda_check_last_launch("cast_kernel");
    });
  });
}

void CudaBackend::zero(Tensor t) {
  expect_here(t, "zero", "t");
  if (t.nbytes() == 0) return;
  CUDA_CHECK(cudaMemsetAsync(t.data(), 0, t.nbytes(), stream_));
}

void CudaBackend::fill(Tensor t, float value) {
  expect_here(t, "fill", "t");
  int64_t n = t.numel();
  if (n == 0) return;
  if (t.dtype() == DType::I32) {
    fill_kernel<int32_t><<<grid_for(n), kThreads, 0, stream_>>>(t.ptr<int32_t>(), n,
                                                                 int32_t(value));
    cuda_check_last_launch("fill_kernel<i32>");
    return;
  }
  dispatch_float(t.dtype(), "fill", [&](auto tag) {
    using T = decltype(tag);
    T v;
    if constexpr (std::is_same_v<T, float>) v = value;
    else if constexpr (std::is_same_v<T, __half>) v = __float2half_rn(value);
    else v = __float2bfloat16_rn(value);
    fill_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(t.ptr<T>(), n, v);
    cuda_check_last_launch("fill_kernel");
  });
}

void CudaBackend::fill_normal(Tensor t, const RngStream& stream, uint64_t offset, float std) {
  expect_here(t, "fill_normal", "t");
  int64_t n = t.numel();
  if (n == 0) return;
  dispatch_float(t.dtype(), "fill_normal", [&](auto tag) {
    using T = decltype(tag);
    fill_normal_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(t.ptr<T>(), n, stream, offset,
                                                                  std);
    cuda_check_last_launch("fill_normal_kernel");
  });
}

}  // namespace temper
