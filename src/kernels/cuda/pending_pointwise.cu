// CUDA backend: transformer ops still to be written. Each throws a clear Error; the CUDA
// backend issue replaces them one by one (moving each into its own kernel file).
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"

namespace temper {

namespace {

[[noreturn]] void pending(const char* op) {
  fail(
      "CUDA backend: {} is not implemented yet (CUDA kernels land in the CUDA backend issue)",
      op);
}

}  // namespace

void CudaBackend::embedding_forward(Tensor, Tensor, Tensor) { pending("embedding_forward"); }
void CudaBackend::embedding_backward(Tensor, Tensor, Tensor) { pending("embedding_backward"); }

void CudaBackend::rmsnorm_forward(Tensor, Tensor, Tensor, Tensor, float) {
  pending("rmsnorm_forward");
}
void CudaBackend::rmsnorm_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) {
  pending("rmsnorm_backward");
}

void CudaBackend::rope_forward(Tensor, Tensor, Tensor, Tensor) { pending("rope_forward"); }
void CudaBackend::rope_backward(Tensor, Tensor, Tensor, Tensor) { pending("rope_backward"); }

void CudaBackend::swiglu_forward(Tensor, Tensor, Tensor) { pending("swiglu_forward"); }
void CudaBackend::swiglu_backward(Tensor, Tensor, Tensor, Tensor, Tensor) {
  pending("swiglu_backward");
}

}  // namespace temper
