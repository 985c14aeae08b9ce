// Vocab-parallel cross-entropy on the CPU: the vocabulary cut into R slices, each slice's
// partials computed on its own, all-gathered (here: stacked) and combined, must give the
// loss and the logit gradients of the whole-vocabulary fused op, computed by a double
// loop in this test.
#include <gtest/gtest.h>

#include <cmath>

#include "core/allocator.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "support/test_util.h"

namespace temper {
namespace {

TEST(VocabParallelCrossEntropy, SlicesCombineToTheWholeSoftmax) {
  auto cpu = make_backend("cpu");
  HostMemory mem;
  Arena arena(mem, "test");
  const int64_t n = 7, V = 60;
  Rng rng(rng_stream(3, RngPurpose::Test, 1));
  std::vector<float> logits(n * V);
  for (auto& x : logits) x = 3.0f * rng.normal();
  std::vector<int32_t> targets = {0, 59, -100, 17, 30, 29, 45};
  const float grad_scale = 0.25f;

  // Reference in double: loss_r = logsumexp − logit[target]; d = (softmax − onehot)·scale.
  std::vector<double> ref_loss(n, 0.0), ref_grad(n * V, 0.0);
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] == -100) continue;
    double m = -INFINITY, s = 0;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, double(logits[r * V + v]));
    for (int64_t v = 0; v < V; ++v) s += std::exp(logits[r * V + v] - m);
    const double lse = m + std::log(s);
    ref_loss[r] = lse - logits[r * V + targets[r]];
    for (int64_t v = 0; v < V; ++v)
      ref_grad[r * V + v] = (std::exp(logits[r * V + v] - lse) - (v == targets[r])) * grad_scale;
  }

  for (int64_t R : {1, 2, 3, 4}) {
    const int64_t Vl = V / R;
    Tensor t_targets = arena.allocate(DType::I32, Shape{n});
    cpu->copy_from_host(t_targets, targets.data());
    Tensor stats_all = arena.allocate(DType::F32, Shape{R, n, 3});
    std::vector<Tensor> slices;
    for (int64_t k = 0; k < R; ++k) {  // each "rank" holds columns [k·Vl, (k+1)·Vl)
      std::vector<float> slice(n * Vl);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t v = 0; v < Vl; ++v) slice[r * Vl + v] = logits[r * V + k * Vl + v];
      Tensor t = arena.allocate(DType::F32, Shape{n, Vl});
      cpu->copy_from_host(t, slice.data());
      slices.push_back(t);
      Tensor mine = stats_all.flat(k * n * 3, n * 3).view(Shape{n, 3});
      cpu->cross_entropy_partials(mine, t, t_targets, k * Vl);
    }
    for (int64_t k = 0; k < R; ++k) {
      Tensor loss = arena.allocate(DType::F32, Shape{n});
      cpu->cross_entropy_combine(loss, slices[k], stats_all, t_targets, k * Vl, grad_scale, true);
      std::vector<float> l = test::to_host(*cpu, loss), g = test::to_host(*cpu, slices[k]);
      for (int64_t r = 0; r < n; ++r) {
        EXPECT_NEAR(l[r], ref_loss[r], 1e-5 * (1 + ref_loss[r])) << "R " << R << " row " << r;
        for (int64_t v = 0; v < Vl; ++v)
          ASSERT_NEAR(g[r * Vl + v], ref_grad[r * V + k * Vl + v], 1e-6) << "R " << R << " r " << r;
      }
    }
  }
}

}  // namespace
}  // namespace temper
