// The GPU test fixture: a CPU and a CUDA backend with arenas, random inputs already
// rounded to the storage dtype, upload/download in any float dtype, and the comparison
// rule of docs/testing.md (norm-wise relative error: f32 <= 1e-5, bf16/f16 <= 1e-2; NaN fails).
// Tests skip (with a message) when no CUDA device is visible.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/error.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "support/test_util.h"

namespace temper {

constexpr double kTolF32 = 1e-5;
constexpr double kTolLow = 1e-2;  // bf16 / f16 outputs

// What a value becomes when stored as `t` and read back as f32.
inline float round_to(DType t, float f) {
  if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(f));
  if (t == DType::F16) return f16_to_f32(f32_to_f16(f));
  return f;
}
inline double tol_for(DType t) { return t == DType::F32 ? kTolF32 : kTolLow; }

// Fails on any NaN in `got` and on a norm-wise relative error above the dtype's bound.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, DType t,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_FALSE(std::isnan(got[i])) << what << ": NaN at " << i << " (output not written?)";
  EXPECT_LE(test::rel_error(got, want), tol_for(t)) << what << " (" << dtype_name(t) << ")";
}

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0)
      GTEST_SKIP() << "no CUDA device visible (no GPU or no driver): CUDA backend tests skipped";
    cpu_ = make_backend("cpu");
    gpu_ = make_backend("cuda");
    cpu_arena_ = std::make_unique<Arena>(cpu_->memory(), "test-cpu");
    gpu_arena_ = std::make_unique<Arena>(gpu_->memory(), "test-gpu");
  }

  Tensor on_cpu(DType t, Shape s) { return cpu_arena_->allocate(t, s); }
  Tensor on_gpu(DType t, Shape s) { return gpu_arena_->allocate(t, s); }

  // N(0, std²) host values from a fresh test stream, already rounded to `t`.
  std::vector<float> random(int64_t n, DType t = DType::F32, float std = 1.0f) {
    Rng rng(rng_stream(1234, RngPurpose::Test, next_stream_++));
    std::vector<float> v(n);
    for (auto& x : v) x = round_to(t, rng.normal() * std);
    return v;
  }

  // Writes f32 host values into t (any float dtype, or i32 from integral values) on b.
  void upload(Backend& b, Tensor t, const std::vector<float>& v) {
    ASSERT_EQ(int64_t(v.size()), t.numel());
    if (t.dtype() == DType::F32) return b.copy_from_host(t, v.data());
    if (t.dtype() == DType::I32) {
      std::vector<int32_t> raw(v.begin(), v.end());
      return b.copy_from_host(t, raw.data());
    }
    std::vector<uint16_t> raw(v.size());
    for (size_t i = 0; i < v.size(); ++i)
      raw[i] = t.dtype() == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
    b.copy_from_host(t, raw.data());
  }
  // Reads t (any float dtype) from backend b as f32.
  std::vector<float> download(Backend& b, Tensor t) {
    b.synchronize();
    if (t.dtype() != DType::F16) return test::to_host(b, t);
    std::vector<uint16_t> raw(t.numel());
    b.copy_to_host(raw.data(), t);
    std::vector<float> out(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) out[i] = f16_to_f32(raw[i]);
    return out;
  }
  // A tensor of shape s (default: 1-D) holding v, on the GPU as dtype t / on the CPU as f32.
  Tensor gpu_with(DType t, const std::vector<float>& v, Shape s = {}) {
    Tensor x = on_gpu(t, s.ndim ? s : Shape{int64_t(v.size())});
    upload(*gpu_, x, v);
    return x;
  }
  Tensor cpu_with(const std::vector<float>& v, Shape s = {}) {
    Tensor x = on_cpu(DType::F32, s.ndim ? s : Shape{int64_t(v.size())});
    upload(*cpu_, x, v);
    return x;
  }
  // An i32 tensor (ids, positions, cu_seqlens) on each backend.
  Tensor gpu_ints(const std::vector<int32_t>& v) {
    Tensor x = on_gpu(DType::I32, {int64_t(v.size())});
    gpu_->copy_from_host(x, v.data());
    return x;
  }
  Tensor cpu_ints(const std::vector<int32_t>& v) {
    Tensor x = on_cpu(DType::I32, {int64_t(v.size())});
    cpu_->copy_from_host(x, v.data());
    return x;
  }

  std::unique_ptr<Backend> cpu_, gpu_;
  std::unique_ptr<Arena> cpu_arena_, gpu_arena_;  // destroyed before the backends
  uint32_t next_stream_ = 1;
};

}  // namespace temper
