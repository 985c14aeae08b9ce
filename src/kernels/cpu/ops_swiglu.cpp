// SwiGLU (Shazeer 2020): out = silu(gate) · up, silu(g) = g · σ(g).
//   dgate = dout · up · σ(g) · (1 + g · (1 − σ(g)))     dup = dout · silu(g)
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

// out[T,F] = silu(gate[T,F]) * up[T,F]
void CpuBackend::swiglu_forward(Tensor out, Tensor gate, Tensor up) {
  expect_rank(gate, DType::F32, 2, "swiglu_forward: gate");
  expect_same_f32(up, gate, "swiglu_forward: up");
  expect_same_f32(out, gate, "swiglu_forward: out");
  const float* g = gate.ptr<float>();  // [T, F]
  const float* u = up.ptr<float>();    // [T, F]
  float* o = out.ptr<float>();         // [T, F]
  const int64_t n = gate.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float sig = 1.0f / (1.0f + std::exp(-g[i]));
    o[i] = g[i] * sig * u[i];
  }
}

// dgate[T,F] +=, dup[T,F] += from dout[T,F]
void CpuBackend::swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) {
  expect_rank(gate, DType::F32, 2, "swiglu_backward: gate");
  expect_same_f32(up, gate, "swiglu_backward: up");
  expect_same_f32(dout, gate, "swiglu_backward: dout");
  expect_same_f32(dgate, gate, "swiglu_backward: dgate");
  expect_same_f32(dup, gate, "swiglu_backward: dup");
  const float* g = gate.ptr<float>();  // [T, F]
  const float* u = up.ptr<float>();    // [T, F]
  const float* d = dout.ptr<float>();  // [T, F]
  float* dg = dgate.ptr<float>();      // [T, F]
  float* du = dup.ptr<float>();        // [T, F]
  const int64_t n = gate.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float sig = 1.0f / (1.0f + std::exp(-g[i]));
    dg[i] += d[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
    du[i] += d[i] * g[i] * sig;
  }
}

}  // namespace temper
