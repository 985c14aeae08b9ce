// Vocab-parallel cross-entropy pieces on the GPU against the CPU twins: partials of a
// slice, and the combination of stacked partials into loss and dlogits (f32, bf16).
#include "gpu_fixture.h"

namespace temper {
namespace {

using CudaVocabParallel = GpuTest;

TEST_F(CudaVocabParallel, PartialsAndCombineMatchCpu) {
  const int64_t n = 37, V = 1000, R = 2;
  std::vector<int32_t> targets(n);
  for (int64_t r = 0; r < n; ++r) targets[r] = r % 5 == 0 ? -100 : int32_t((r * 97) % (R * V));
  for (DType t : {DType::F32, DType::BF16}) {
    for (int64_t k = 0; k < R; ++k) {
      auto logits = random(n * V, t, 3.0f);
      Tensor g = gpu_with(t, logits, Shape{n, V}), c = cpu_with(logits, Shape{n, V});
      Tensor gs = on_gpu(DType::F32, Shape{n, 3}), cs = on_cpu(DType::F32, Shape{n, 3});
      gpu_->fill(gs, NAN);
      gpu_->cross_entropy_partials(gs, g, gpu_ints(targets), k * V);
      cpu_->cross_entropy_partials(cs, c, cpu_ints(targets), k * V);
      expect_close(download(*gpu_, gs), download(*cpu_, cs), DType::F32, "partials");
      // Combine with this slice's partials and a made-up other slice (same on both sides).
      auto other = download(*cpu_, cs);
      for (auto& x : other) x *= 0.5f;
      std::vector<float> stacked = download(*cpu_, cs);
      stacked.insert(k == 0 ? stacked.end() : stacked.begin(), other.begin(), other.end());
      Tensor ga = gpu_with(DType::F32, stacked, Shape{R, n, 3});
      Tensor ca = cpu_with(stacked, Shape{R, n, 3});
      Tensor gl = on_gpu(DType::F32, Shape{n}), cl = on_cpu(DType::F32, Shape{n});
      gpu_->fill(gl, NAN);
      gpu_->cross_entropy_combine(gl, g, ga, gpu_ints(targets), k * V, 0.5f, true);
      cpu_->cross_entropy_combine(cl, c, ca, cpu_ints(targets), k * V, 0.5f, true);
      expect_close(download(*gpu_, gl), download(*cpu_, cl), DType::F32, "loss");
      expect_close(download(*gpu_, g), download(*cpu_, c), t, "dlogits");
    }
  }
}

}  // namespace
}  // namespace temper
