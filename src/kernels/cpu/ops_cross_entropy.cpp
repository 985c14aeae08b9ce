// LM head fused with cross-entropy: logits = x · Wᵀ are formed `chunk` tokens at a time
// (a [chunk, V] buffer instead of [T, V]), turned into a stable log-softmax, the loss of
// each counted target summed, and — when gradients are wanted — overwritten in place by
//   dlogits = (softmax − onehot(target)) · grad_scale   (0 for ignored rows)
// which two GEMMs turn into dx += dlogits · W and dweight += dlogitsᵀ · x.
#include <cblas.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

// x[T,C], weight[V,C], targets[T] i32; dx[T,C] +=, dweight[V,C] += (both optional)
LossSum CpuBackend::lm_head_cross_entropy(Tensor dx, Tensor dweight, Tensor x, Tensor weight,
                                          Tensor targets, float grad_scale, int64_t chunk) {
  expect_rank(x, DType::F32, 2, "lm_head_cross_entropy: x");
  expect_rank(weight, DType::F32, 2, "lm_head_cross_entropy: weight");
  const int64_t T = x.size(0), C = x.size(1), V = weight.size(0);
  expect_f32(weight, {V, C}, "lm_head_cross_entropy: weight");
  expect(targets, DType::I32, {T}, "lm_head_cross_entropy: targets");
  expect_f32_opt(dx, {T, C}, "lm_head_cross_entropy: dx");
  expect_f32_opt(dweight, {V, C}, "lm_head_cross_entropy: dweight");
  if (chunk < 1) fail("lm_head_cross_entropy: chunk must be >= 1, got {}", chunk);

  const int32_t* tg = targets.ptr<int32_t>();  // [T]
  LossSum result;
  for (int64_t t = 0; t < T; ++t) {
    if (tg[t] == kIgnoreIndex) continue;
    if (tg[t] < 0 || tg[t] >= V)
      fail("lm_head_cross_entropy: token {} has target {}, outside the vocabulary [0, {}) "
           "and not the ignore index {}",
           t, tg[t], V, kIgnoreIndex);
    ++result.tokens;
  }
  if (T == 0 || V == 0 || C == 0) return result;

  const bool grads = dx.defined() || dweight.defined();
  const float* px = x.ptr<float>();       // [T, C]
  const float* pw = weight.ptr<float>();  // [V, C]
  chunk = std::min(chunk, T);
  std::vector<float> logits(static_cast<size_t>(chunk * V));  // [chunk, V] logits, then dlogits
  std::vector<double> row_loss(static_cast<size_t>(chunk));  // [chunk]

  for (int64_t c0 = 0; c0 < T; c0 += chunk) {
    const int64_t n = std::min(chunk, T - c0);
    const float* xc = px + c0 * C;  // [n, C] this chunk's rows
    // logits[n,V] = x[n,C] · W[V,C]ᵀ
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(n), blasint(V), blasint(C), 1.0f,
                xc, blasint(C), pw, blasint(C), 0.0f, logits.data(), blasint(V));

#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      float* l = logits.data() + r * V;  // [V]
      const int32_t target = tg[c0 + r];
      row_loss[r] = 0.0;
      if (target == kIgnoreIndex) {  // no loss, no gradient
        if (grads) std::fill(l, l + V, 0.0f);
        continue;
      }
      float mx = l[0];
      for (int64_t j = 1; j < V; ++j) mx = std::max(mx, l[j]);
      double sum = 0.0;
      for (int64_t j = 0; j < V; ++j) sum += std::exp(double(l[j] - mx));
      const double lse = double(mx) + std::log(sum);
      row_loss[r] = lse - double(l[target]);  // −log softmax(target)
      if (grads) {
        for (int64_t j = 0; j < V; ++j) l[j] = float(std::exp(double(l[j]) - lse)) * grad_scale;
        l[target] -= grad_scale;
      }
    }
    for (int64_t r = 0; r < n; ++r) result.loss += row_loss[r];  // fixed order

    if (dx.defined())  // dx[n,C] += dlogits[n,V] · W[V,C]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(n), blasint(C), blasint(V),
                  1.0f, logits.data(), blasint(V), pw, blasint(C), 1.0f, dx.ptr<float>() + c0 * C,
                  blasint(C));
    if (dweight.defined())  // dW[V,C] += dlogits[n,V]ᵀ · x[n,C]
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blasint(V), blasint(C), blasint(n),
                  1.0f, logits.data(), blasint(V), xc, blasint(C), 1.0f, dweight.ptr<float>(),
                  blasint(C));
  }
  return result;
}

}  // namespace temper
