// CUDA backend vs the CPU reference: every implemented CUDA op runs on fresh random
// inputs with its outputs poisoned (NaN) first, and must match the CPU backend on the same
// values: f32 to 1e-5 relative (norm-wise), bf16/f16 outputs to 1e-2, NaN always fails.
// bf16/f16 cases feed the CPU the same already-rounded values in f32.
// Skipped (with a message) when no CUDA device is visible.
#include "gpu_fixture.h"

namespace temper {

namespace {

using CudaBackendTest = GpuTest;

const DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16};

TEST_F(CudaBackendTest, FillNormalMatchesCpu) {
  const RngStream stream = rng_stream(42, RngPurpose::Init, name_hash("layers.0.wq"));
  // An odd length, and an offset straddling 2^32 (the counter's high word).
  for (uint64_t offset : {uint64_t(0), uint64_t(12345), (uint64_t(1) << 32) - 777}) {
    const int64_t n = 100003;
    Tensor ref = on_cpu(DType::F32, {n});
    cpu_->fill(ref, NAN);
    cpu_->fill_normal(ref, stream, offset, 0.02f);
    auto want = download(*cpu_, ref);
    for (DType t : kFloatTypes) {
      Tensor x = on_gpu(t, {n});
      gpu_->fill(x, NAN);
      gpu_->fill_normal(x, stream, offset, 0.02f);
      // f32: the same formula; only the ulps of logf/cosf may differ.
      double tol = t == DType::F32 ? 1e-6 : kTolLow;
      EXPECT_LE(test::rel_error(download(*gpu_, x), want), tol)
          << dtype_name(t) << " offset " << offset;
    }
  }
}

TEST_F(CudaBackendTest, FillNormalShardMatchesWhole) {
  const RngStream stream = rng_stream(7, RngPurpose::Init, 3);
  Tensor whole = on_gpu(DType::F32, {4096});
  gpu_->fill_normal(whole, stream, 0, 1.0f);
  Tensor shard = on_gpu(DType::F32, {1000});
  gpu_->fill_normal(shard, stream, 1500, 1.0f);
  auto w = download(*gpu_, whole), s = download(*gpu_, shard);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(s[i], w[1500 + i]) << i;
}

TEST_F(CudaBackendTest, CopyCastsMatchCpu) {
  const int64_t n = 50021;
  for (DType st : kFloatTypes) {
    for (DType dt : kFloatTypes) {
      auto v = random(n, st, 3.0f);
      Tensor src = gpu_with(st, v);
      Tensor dst = on_gpu(dt, {n});
      gpu_->fill(dst, NAN);
      gpu_->copy(dst, src);
      auto got = download(*gpu_, dst);
      // Reference: the CPU backend where it has the cast (f32 on one side), else the host.
      std::vector<float> want(n);
      if (st == dt || st == DType::F32 || dt == DType::F32) {
        Tensor cs = on_cpu(st, {n}), cd = on_cpu(dt, {n});
        upload(*cpu_, cs, v);
        cpu_->copy(cd, cs);
        want = download(*cpu_, cd);
      } else {
        for (int64_t i = 0; i < n; ++i) want[i] = round_to(dt, v[i]);
      }
      // Stricter than the tolerances: both sides round to nearest even, so values agree.
      EXPECT_EQ(test::rel_error(got, want), 0.0) << dtype_name(st) << " -> " << dtype_name(dt);
    }
  }
}

TEST_F(CudaBackendTest, ZeroAndFill) {
  for (DType t : kFloatTypes) {
    Tensor x = on_gpu(t, {777});
    gpu_->fill(x, NAN);
    gpu_->zero(x);
    for (float f : download(*gpu_, x)) ASSERT_EQ(f, 0.0f) << dtype_name(t);
    gpu_->fill(x, 1.5f);
    for (float f : download(*gpu_, x)) ASSERT_EQ(f, 1.5f) << dtype_name(t);
  }
}

TEST_F(CudaBackendTest, AddMatchesCpu) {
  const int64_t n = 123457;
  for (DType t : kFloatTypes) {
    auto a = random(n, t), b = random(n, t);
    Tensor ca = cpu_with(a), cb = cpu_with(b), cout = on_cpu(DType::F32, {n});
    cpu_->add(cout, ca, cb);
    auto want = download(*cpu_, cout);

    Tensor ga = gpu_with(t, a), gb = gpu_with(t, b), gout = on_gpu(t, {n});
    gpu_->fill(gout, NAN);
    gpu_->add(gout, ga, gb);
    EXPECT_LE(test::rel_error(download(*gpu_, gout), want), tol_for(t)) << dtype_name(t);
    gpu_->add(ga, ga, gb);  // out aliasing a
    EXPECT_LE(test::rel_error(download(*gpu_, ga), want), tol_for(t)) << dtype_name(t) << " alias";
  }
}

TEST_F(CudaBackendTest, ScaleMatchesCpu) {
  const int64_t n = 65539;
  for (DType t : kFloatTypes) {
    auto x = random(n, t);
    Tensor cx = cpu_with(x);
    cpu_->scale(cx, -0.37f);
    Tensor gx = gpu_with(t, x);
    gpu_->scale(gx, -0.37f);
    EXPECT_LE(test::rel_error(download(*gpu_, gx), download(*cpu_, cx)), tol_for(t))
        << dtype_name(t);
  }
}

TEST_F(CudaBackendTest, SumSquaresMatchesCpuAndIsDeterministic) {
  // Tiny, one partial block, many blocks, and past the block cap (grid-stride).
  for (int64_t n : {int64_t(1), int64_t(5), int64_t(2049), int64_t(1000003), int64_t(12000001)}) {
    for (DType t : kFloatTypes) {
      auto x = random(n, t);
      Tensor cx = cpu_with(x);
      double want = cpu_->sum_squares(cx);
      Tensor gx = gpu_with(t, x);
      double got = gpu_->sum_squares(gx);
      // The inputs are identical (already rounded), so f32 accuracy holds for every dtype.
      EXPECT_LE(std::abs(got - want) / want, kTolF32) << dtype_name(t) << " n=" << n;
      EXPECT_EQ(gpu_->sum_squares(gx), got) << "not deterministic: " << dtype_name(t);
    }
  }
  Tensor empty = on_gpu(DType::F32, {0});
  EXPECT_EQ(gpu_->sum_squares(empty), 0.0);
}

// Three AdamW steps from the same state; the CPU takes f32 grads holding the same values.
TEST_F(CudaBackendTest, AdamWMatchesCpuOverThreeSteps) {
  const int64_t n = 10007;
  struct Case {
    DType grad;
    bool has_param;
    DType param;
  };
  const Case cases[] = {{DType::F32, false, DType::F32}, {DType::F32, true, DType::BF16},
                        {DType::BF16, true, DType::BF16}, {DType::F32, true, DType::F16},
                        {DType::F16, true, DType::F32}};
  for (const Case& c : cases) {
    SCOPED_TRACE(fmt::format("grad {} param {}", dtype_name(c.grad),
                             c.has_param ? std::string(dtype_name(c.param)) : "none"));
    auto p0 = random(n, DType::F32, 0.5f);
    Tensor cm = cpu_with(p0), cmo = on_cpu(DType::F32, {n}), cvo = on_cpu(DType::F32, {n});
    Tensor gm = gpu_with(DType::F32, p0), gmo = on_gpu(DType::F32, {n}),
           gvo = on_gpu(DType::F32, {n});
    cpu_->zero(cmo);
    cpu_->zero(cvo);
    gpu_->zero(gmo);
    gpu_->zero(gvo);
    Tensor gparam = c.has_param ? on_gpu(c.param, {n}) : Tensor{};
    AdamWStep hp;
    hp.lr = 1e-2f;
    hp.weight_decay = 0.1f;
    hp.grad_scale = 0.5f;
    for (int step = 1; step <= 3; ++step) {
      hp.step = step;
      auto g = random(n, c.grad, 2.0f);
      cpu_->adamw_update(cm, Tensor{}, cpu_with(g), cmo, cvo, hp);
      if (gparam) gpu_->fill(gparam, NAN);
      gpu_->adamw_update(gm, gparam, gpu_with(c.grad, g), gmo, gvo, hp);
    }
    auto want = download(*cpu_, cm);
    EXPECT_LE(test::rel_error(download(*gpu_, gm), want), kTolF32) << "master";
    EXPECT_LE(test::rel_error(download(*gpu_, gmo), download(*cpu_, cmo)), kTolF32) << "m";
    EXPECT_LE(test::rel_error(download(*gpu_, gvo), download(*cpu_, cvo)), kTolF32) << "v";
    if (gparam)
      EXPECT_LE(test::rel_error(download(*gpu_, gparam), want), tol_for(c.param)) << "param";
  }
}

TEST_F(CudaBackendTest, ErrorsNameTheProblem) {
  Tensor host = on_cpu(DType::F32, {4});
  try {
    gpu_->scale(host, 2.0f);
    FAIL() << "a host tensor was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scale"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_backend(fmt::format("cuda:{}", cuda_device_count())), Error);
}

// Runs with or without a GPU: asking for a device that is not there is a clear Error.
TEST(CudaBackendDiscovery, MissingDeviceIsAnError) {
  const int n = cuda_device_count();
  EXPECT_GE(n, 0);
  try {
    make_cuda_backend(n);  // one past the last device
    FAIL() << "cuda:" << n << " did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace temper
