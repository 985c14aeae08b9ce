// CpuBackend: data movement, fills, elementwise ops and the AdamW step. The model ops
// live in ops_*.cpp next to this file, one op (forward + backward) per file.
#include "kernels/cpu/cpu_backend.h"

#include <fmt/format.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

namespace {

// Reads element i of an f32/bf16/f16 buffer as f32, and writes one.
float load_float(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  }
}
void store_float(void* p, DType t, int64_t i, float f) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = f; break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(f); break;
    default: static_cast<uint16_t*>(p)[i] = f32_to_f16(f); break;
  }
}
bool is_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

}  // namespace

// ---- data movement ----------------------------------------------------------------

std::string CpuBackend::device_name() const {
  return fmt::format("cpu ({} OpenMP threads)", omp_get_max_threads());
}

void CpuBackend::copy_from_host(Tensor dst, const void* src) {
  if (!dst.defined()) fail("copy_from_host: dst is missing");
  expect_host(dst, "copy_from_host: dst");
  if (dst.nbytes()) std::memcpy(dst.data(), src, dst.nbytes());
}

void CpuBackend::copy_to_host(void* dst, Tensor src) {
  if (!src.defined()) fail("copy_to_host: src is missing");
  expect_host(src, "copy_to_host: src");
  if (src.nbytes()) std::memcpy(dst, src.data(), src.nbytes());
}

// Same dtype: a plain memcpy (any dtype). Otherwise a cast between f32 and bf16/f16.
// Shapes may differ (a flat view of a matrix, say); element counts must not.
void CpuBackend::copy(Tensor dst, Tensor src) {
  if (!dst.defined() || !src.defined()) fail("copy: dst or src is missing");
  expect_host(dst, "copy: dst");
  expect_host(src, "copy: src");
  if (dst.numel() != src.numel())
    fail("copy: dst {} and src {} hold different element counts", dst.str(), src.str());
  if (dst.dtype() == src.dtype()) {
    if (dst.data() != src.data() && dst.nbytes()) std::memcpy(dst.data(), src.data(), dst.nbytes());
    return;
  }
  const bool cast_ok = is_float(dst.dtype()) && is_float(src.dtype()) &&
                       (dst.dtype() == DType::F32 || src.dtype() == DType::F32);
  if (!cast_ok)
    fail("copy: no cast from {} to {} (the cpu backend casts f32 <-> bf16/f16)", src.str(),
         dst.str());
  const int64_t n = dst.numel();
  const DType dt = dst.dtype(), st = src.dtype();
  void* d = dst.data();
  const void* s = src.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) store_float(d, dt, i, load_float(s, st, i));
}

void CpuBackend::zero(Tensor t) {
  if (!t.defined()) fail("zero: tensor is missing");
  expect_host(t, "zero: t");
  if (t.nbytes()) std::memset(t.data(), 0, t.nbytes());
}

void CpuBackend::fill(Tensor t, float value) {
  expect_f32_any(t, "fill: t");
  float* p = t.ptr<float>();
  const int64_t n = t.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = value;
}

// Element i draws stream element (offset + i): a shard reproduces its slice of the whole.
void CpuBackend::fill_normal(Tensor t, const RngStream& stream, uint64_t offset, float std) {
  expect_f32_any(t, "fill_normal: t");
  float* p = t.ptr<float>();
  const int64_t n = t.numel();
  const RngStream s = stream;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = s.normal(offset + uint64_t(i)) * std;
}

// ---- elementwise --------------------------------------------------------------------

void CpuBackend::add(Tensor out, Tensor a, Tensor b) {
  expect_f32_any(a, "add: a");
  expect_same_f32(b, a, "add: b");
  expect_same_f32(out, a, "add: out");
  float* o = out.ptr<float>();
  const float *pa = a.ptr<float>(), *pb = b.ptr<float>();
  const int64_t n = a.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) o[i] = pa[i] + pb[i];  // elementwise, so out may alias a or b
}

void CpuBackend::scale(Tensor x, float s) {
  expect_f32_any(x, "scale: x");
  float* p = x.ptr<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] *= s;
}

// Σ x² in f64. Fixed-size blocks summed in block order, so the result does not depend
// on the thread count (gradient-norm clipping must be reproducible).
double CpuBackend::sum_squares(Tensor x) {
  expect_f32_any(x, "sum_squares: x");
  const float* p = x.ptr<float>();
  const int64_t n = x.numel();
  constexpr int64_t kBlock = 4096;
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(nblocks);  // [nblocks]
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    double acc = 0.0;
    for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) acc += double(p[i]) * p[i];
    partial[b] = acc;
  }
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

// ---- optimizer ----------------------------------------------------------------------

// One AdamW step in exactly torch.optim.AdamW's (single-tensor, foreach=False) form:
//   p *= 1 - lr·wd;  m.lerp_(g, 1-β1);  v = β2·v + (1-β2)·g²
//   p -= (lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps)
// which equals p -= lr·(m̂/(sqrt(v̂)+eps) + wd·p) up to rounding. Scalars are formed in
// double as Python does, then used in f32 as torch's f32 kernels do.
void CpuBackend::adamw_update(Tensor master, Tensor param, Tensor grad, Tensor m, Tensor v,
                              const AdamWStep& hp) {
  expect_f32_any(master, "adamw_update: master");  // any shape; the others match it flat
  const int64_t n = master.numel();
  if (grad.defined() && grad.numel() == n) grad = grad.view({n});
  if (m.defined() && m.numel() == n) m = m.view({n});
  if (v.defined() && v.numel() == n) v = v.view({n});
  expect_f32(grad, {n}, "adamw_update: grad");
  expect_f32(m, {n}, "adamw_update: m");
  expect_f32(v, {n}, "adamw_update: v");
  if (hp.step < 1) fail("adamw_update: step must be >= 1 (1-based), got {}", hp.step);
  if (param.defined() && param.numel() != n)
    fail("adamw_update: param {} does not match master {}", param.str(), master.str());

  const double bc1 = 1.0 - std::pow(double(hp.beta1), double(hp.step));
  const double bc2 = 1.0 - std::pow(double(hp.beta2), double(hp.step));
  const float decay = float(1.0 - double(hp.lr) * double(hp.weight_decay));
  const float step_size = float(double(hp.lr) / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  const float w1 = float(1.0 - double(hp.beta1)), b2 = hp.beta2;
  const float w2 = float(1.0 - double(hp.beta2));
  const float eps = hp.eps, gs = hp.grad_scale;

  float* p = master.ptr<float>();  // [n]
  const float* g = grad.ptr<float>();
  float* pm = m.ptr<float>();
  float* pv = v.ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * gs;
    p[i] *= decay;                      // decoupled weight decay first
    pm[i] += w1 * (gi - pm[i]);         // torch's lerp for weight < 0.5
    pv[i] = pv[i] * b2 + w2 * gi * gi;  // addcmul
    const float denom = std::sqrt(pv[i]) / bc2_sqrt + eps;
    p[i] += -step_size * pm[i] / denom;  // addcdiv
  }
  // The lower-precision (or separate f32) copy the model computes with.
  if (param.defined() && param.data() != master.data()) copy(param, master);
}

}  // namespace temper
