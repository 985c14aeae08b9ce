// Vocab-parallel cross-entropy on the CPU: each rank holds a slice of the vocabulary's
// logits; per-row partials (max, Σexp, target logit) are exchanged by the caller and
// combined here into the loss and, in place, the gradient of the logits.
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

// stats[n,3] f32, logits[n,Vl] f32, targets[n] i32
void CpuBackend::cross_entropy_partials(Tensor stats, Tensor logits, Tensor targets,
                                        int64_t vocab_start) {
  expect_rank(logits, DType::F32, 2, "cross_entropy_partials: logits");
  const int64_t n = logits.size(0), V = logits.size(1);
  expect(targets, DType::I32, Shape{n}, "cross_entropy_partials: targets");
  expect_f32(stats, {n, 3}, "cross_entropy_partials: stats");
  const float* pl = logits.ptr<float>();
  const int32_t* pt = targets.ptr<int32_t>();
  float* ps = stats.ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    float* s = ps + 3 * r;
    s[0] = s[1] = s[2] = 0.0f;
    if (pt[r] == kIgnoreIndex) continue;
    const float* row = pl + r * V;
    float m = row[0];
    for (int64_t v = 1; v < V; ++v) m = std::max(m, row[v]);
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - m);
    s[0] = m;
    s[1] = float(sum);
    const int64_t local = int64_t(pt[r]) - vocab_start;
    if (local >= 0 && local < V) s[2] = row[local];
  }
}

// loss[n] f32; logits[n,Vl] (-> dlogits); stats_all[R,n,3]; targets[n]
void CpuBackend::cross_entropy_combine(Tensor loss, Tensor logits, Tensor stats_all, Tensor targets,
                                       int64_t vocab_start, float grad_scale, bool want_grad) {
  expect_rank(logits, DType::F32, 2, "cross_entropy_combine: logits");
  const int64_t n = logits.size(0), V = logits.size(1);
  expect_rank(stats_all, DType::F32, 3, "cross_entropy_combine: stats_all");
  const int64_t R = stats_all.size(0);
  expect_f32(stats_all, {R, n, 3}, "cross_entropy_combine: stats_all");
  expect(targets, DType::I32, Shape{n}, "cross_entropy_combine: targets");
  expect_f32(loss, {n}, "cross_entropy_combine: loss");
  const float* ps = stats_all.ptr<float>();
  const int32_t* pt = targets.ptr<int32_t>();
  float* pl = logits.ptr<float>();
  float* out = loss.ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    float* row = pl + r * V;
    if (pt[r] == kIgnoreIndex) {
      out[r] = 0.0f;
      if (want_grad)
        for (int64_t v = 0; v < V; ++v) row[v] = 0.0f;
      continue;
    }
    // Global max and Σexp from the slices' partials, in rank order.
    double m = ps[3 * r];
    for (int64_t k = 1; k < R; ++k) m = std::max(m, double(ps[(k * n + r) * 3]));
    double sum = 0.0, target = 0.0;
    for (int64_t k = 0; k < R; ++k) {
      const float* s = ps + (k * n + r) * 3;
      sum += double(s[1]) * std::exp(double(s[0]) - m);
      target += s[2];  // only the owning slice contributes
    }
    const double lse = m + std::log(sum);
    out[r] = float(lse - target);
    if (!want_grad) continue;
    const int64_t local = int64_t(pt[r]) - vocab_start;
    for (int64_t v = 0; v < V; ++v) {
      const double p = std::exp(double(row[v]) - lse);
      row[v] = float((p - (v == local ? 1.0 : 0.0)) * grad_scale);
    }
  }
}

}  // namespace temper
