// Rotary position embedding (Su et al. 2021), rotate-half convention of Hugging Face's
// Llama: pair (x1[j], x2[j]) = (x[j], x[j + D/2]) is rotated by angle θ(pos, j):
//   forward:  (x1·cos − x2·sin,  x2·cos + x1·sin)
//   backward: (x1·cos + x2·sin,  x2·cos − x1·sin)   the inverse = the transpose
#include <string>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

namespace {

// Rotates x[T,H,D] in place by +θ (sign = 1) or −θ (sign = −1).
void rope_rotate(Tensor x, Tensor positions, Tensor cos, Tensor sin, float sign, const char* op) {
  const std::string o(op);
  expect_rank(x, DType::F32, 3, (o + ": x").c_str());
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2);
  if (D % 2 != 0) fail("{}: head dim {} of x {} must be even", op, D, x.str());
  const int64_t half = D / 2;
  expect(positions, DType::I32, {T}, (o + ": positions").c_str());
  expect_rank(cos, DType::F32, 2, (o + ": cos").c_str());
  const int64_t P = cos.size(0);
  expect_f32(cos, {P, half}, (o + ": cos").c_str());
  expect_f32(sin, {P, half}, (o + ": sin").c_str());
  const int32_t* pos = positions.ptr<int32_t>();  // [T]
  for (int64_t t = 0; t < T; ++t)
    if (pos[t] < 0 || pos[t] >= P)
      fail("{}: token {} has position {}, outside the angle table [0, {})", op, t, pos[t], P);

  float* px = x.ptr<float>();          // [T, H, D]
  const float* pc = cos.ptr<float>();  // [P, D/2]
  const float* ps = sin.ptr<float>();  // [P, D/2]
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float* xr = px + (t * H + h) * D;
      const float* c = pc + int64_t(pos[t]) * half;
      const float* s = ps + int64_t(pos[t]) * half;
      for (int64_t j = 0; j < half; ++j) {
        const float x1 = xr[j], x2 = xr[j + half], sn = sign * s[j];
        xr[j] = x1 * c[j] - x2 * sn;
        xr[j + half] = x2 * c[j] + x1 * sn;
      }
    }
}

}  // namespace

void CpuBackend::rope_forward(Tensor x, Tensor positions, Tensor cos, Tensor sin) {
  rope_rotate(x, positions, cos, sin, 1.0f, "rope_forward");
}

// The rotation is orthogonal, so its gradient is the inverse rotation of dx.
void CpuBackend::rope_backward(Tensor dx, Tensor positions, Tensor cos, Tensor sin) {
  rope_rotate(dx, positions, cos, sin, -1.0f, "rope_backward");
}

}  // namespace temper
