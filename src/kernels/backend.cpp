#include "kernels/backend.h"

#include "core/error.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef TEMPER_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace temper {

int visible_cuda_devices() {
#ifdef TEMPER_HAVE_CUDA
  return cuda_device_count();
#else
  return 0;
#endif
}

bool cuda_backend_available() { return visible_cuda_devices() > 0; }

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend>();
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
#ifdef TEMPER_HAVE_CUDA
    int index = name == "cuda" ? 0 : std::stoi(name.substr(5));
    return make_cuda_backend(index);
#else
    fail("backend '{}' requested but this build has no CUDA backend (rebuild with nvcc on PATH)",
         name);
#endif
  }
  fail("unknown backend '{}' (expected cpu, cuda or cuda:N)", name);
}

}  // namespace temper
