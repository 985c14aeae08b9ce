// CUDA attention (forward and backward) vs the CPU reference on packed documents of uneven
// lengths, GQA/MHA/MQA, sliding windows, exact and generic head dims, f32/bf16/f16, and a
// learned prefix of P keys/values (trainable: dprefix_k/v compared too, or frozen).
// Forward outputs are poisoned (NaN) first; backward gradients are accumulated onto the
// same random starting values on both sides. The backward of both backends is fed the same
// out / lse (the CPU forward's, out rounded to the dtype), so it is compared on its own.
// Skipped (with a message) when no CUDA device is visible.
#include <cstring>
#include <numeric>

#include "gpu_fixture.h"

namespace temper {

namespace {

struct AttnCase {
  std::vector<int32_t> lens;  // document lengths, packed in order
  int64_t Hq, Hkv, D;
  int window;
  DType dt;
  int64_t P = 0;            // prefix keys (0 = none)
  bool train_prefix = true;  // pass dprefix_k/v (false: a frozen prefix, undefined)
};

std::string describe(const AttnCase& c) {
  std::string lens;
  for (int32_t n : c.lens) lens += (lens.empty() ? "" : ",") + std::to_string(n);
  return fmt::format("lens [{}] Hq {} Hkv {} D {} window {} {} prefix {}{}", lens, c.Hq, c.Hkv,
                     c.D, c.window, dtype_name(c.dt), c.P,
                     c.P && !c.train_prefix ? " (frozen)" : "");
}

std::vector<int32_t> cu_of(const std::vector<int32_t>& lens) {
  std::vector<int32_t> cu(lens.size() + 1, 0);
  std::partial_sum(lens.begin(), lens.end(), cu.begin() + 1);
  return cu;
}

class CudaAttentionTest : public GpuTest {
 protected:
  void check_case(const AttnCase& c) {
    SCOPED_TRACE(describe(c));
    const std::vector<int32_t> cu = cu_of(c.lens);
    const int64_t T = cu.back(), Hq = c.Hq, Hkv = c.Hkv, D = c.D;
    const Shape qs{T, Hq, D}, ks{T, Hkv, D}, ls{Hq, T};
    const DType dt = c.dt;
    auto q = random(T * Hq * D, dt), k = random(T * Hkv * D, dt), v = random(T * Hkv * D, dt);
    const int64_t P = c.P;
    const Shape ps{P, Hkv, D};
    auto pk = random(P * Hkv * D, dt), pv = random(P * Hkv * D, dt);

    // Forward.
    Tensor cq = cpu_with(q, qs), ck = cpu_with(k, ks), cv = cpu_with(v, ks);
    Tensor cpk = P ? cpu_with(pk, ps) : Tensor{}, cpv = P ? cpu_with(pv, ps) : Tensor{};
    Tensor ccu = cpu_ints(cu);
    Tensor cout = on_cpu(DType::F32, qs), clse = on_cpu(DType::F32, ls);
    cpu_->attention_forward(cout, clse, cq, ck, cv, ccu, c.window, cpk, cpv);
    const auto want_out = download(*cpu_, cout), want_lse = download(*cpu_, clse);

    Tensor gq = gpu_with(dt, q, qs), gk = gpu_with(dt, k, ks), gv = gpu_with(dt, v, ks);
    Tensor gpk = P ? gpu_with(dt, pk, ps) : Tensor{}, gpv = P ? gpu_with(dt, pv, ps) : Tensor{};
    Tensor gcu = gpu_ints(cu);
    Tensor gout = on_gpu(dt, qs), glse = on_gpu(DType::F32, ls);
    gpu_->fill(gout, NAN);
    gpu_->fill(glse, NAN);
    gpu_->attention_forward(gout, glse, gq, gk, gv, gcu, c.window, gpk, gpv);
    expect_close(download(*gpu_, gout), want_out, dt, "out");
    // lse is f32 and both sides read identical (already rounded) q, k: f32 accuracy.
    expect_close(download(*gpu_, glse), want_lse, DType::F32, "lse");

    // Backward, from the same out / lse / dout and starting gradients on both sides.
    std::vector<float> out_b(want_out.size());
    for (size_t i = 0; i < out_b.size(); ++i) out_b[i] = round_to(dt, want_out[i]);
    auto dout = random(T * Hq * D, dt);
    auto dq0 = random(T * Hq * D, dt, 0.5f), dk0 = random(T * Hkv * D, dt, 0.5f),
         dv0 = random(T * Hkv * D, dt, 0.5f);
    auto dpk0 = random(P * Hkv * D, dt, 0.5f), dpv0 = random(P * Hkv * D, dt, 0.5f);
    const bool dpre = P && c.train_prefix;

    Tensor cdq = cpu_with(dq0, qs), cdk = cpu_with(dk0, ks), cdv = cpu_with(dv0, ks);
    Tensor cdpk = dpre ? cpu_with(dpk0, ps) : Tensor{}, cdpv = dpre ? cpu_with(dpv0, ps) : Tensor{};
    cpu_->attention_backward(cdq, cdk, cdv, cpu_with(dout, qs), cq, ck, cv, cpu_with(out_b, qs),
                             cpu_with(want_lse, ls), ccu, c.window, cpk, cpv, cdpk, cdpv);
    Tensor gdq = gpu_with(dt, dq0, qs), gdk = gpu_with(dt, dk0, ks), gdv = gpu_with(dt, dv0, ks);
    Tensor gdpk = dpre ? gpu_with(dt, dpk0, ps) : Tensor{};
    Tensor gdpv = dpre ? gpu_with(dt, dpv0, ps) : Tensor{};
    gpu_->attention_backward(gdq, gdk, gdv, gpu_with(dt, dout, qs), gq, gk, gv,
                             gpu_with(dt, out_b, qs), gpu_with(DType::F32, want_lse, ls), gcu,
                             c.window, gpk, gpv, gdpk, gdpv);
    expect_close(download(*gpu_, gdq), download(*cpu_, cdq), dt, "dq");
    expect_close(download(*gpu_, gdk), download(*cpu_, cdk), dt, "dk");
    expect_close(download(*gpu_, gdv), download(*cpu_, cdv), dt, "dv");
    if (dpre) {
      expect_close(download(*gpu_, gdpk), download(*cpu_, cdpk), dt, "dprefix_k");
      expect_close(download(*gpu_, gdpv), download(*cpu_, cdpv), dt, "dprefix_v");
    }
  }
};

// Lengths 1 (a lone token), 70 and 130 (longer than a 64-row tile: query and key tiles
// straddle document boundaries), 5.
const std::vector<int32_t> kDocs = {1, 70, 5, 130};

TEST_F(CudaAttentionTest, GqaMatchesCpu) {
  check_case({kDocs, 8, 2, 64, 0, DType::F32});
  check_case({kDocs, 8, 2, 128, 0, DType::BF16});
  check_case({kDocs, 8, 2, 128, 0, DType::F32});
  check_case({kDocs, 8, 2, 64, 0, DType::BF16});
}

TEST_F(CudaAttentionTest, MhaAndMqaMatchCpu) {
  check_case({kDocs, 4, 4, 64, 0, DType::BF16});
  check_case({kDocs, 4, 4, 128, 0, DType::F32});
  check_case({kDocs, 4, 1, 128, 0, DType::F32});
  check_case({kDocs, 4, 1, 64, 0, DType::BF16});
}

TEST_F(CudaAttentionTest, SlidingWindowMatchesCpu) {
  check_case({kDocs, 8, 2, 64, 16, DType::F32});
  check_case({kDocs, 8, 2, 128, 16, DType::BF16});
  // A window wider than a tile but shorter than the document, in f16.
  check_case({{200, 3}, 2, 1, 64, 100, DType::F16});
  // A window wider than every document: the same as none.
  check_case({kDocs, 2, 2, 64, 1000, DType::F32});
}

TEST_F(CudaAttentionTest, GenericHeadDimsMatchCpu) {
  check_case({kDocs, 8, 2, 80, 0, DType::F32});  // generic path up to 128
  check_case({kDocs, 8, 2, 80, 16, DType::BF16});
  check_case({kDocs, 4, 2, 32, 0, DType::F32});   // generic path up to 64
  check_case({kDocs, 2, 1, 256, 0, DType::F32});  // generic path up to 256 (32-row tiles)
  check_case({kDocs, 2, 1, 200, 16, DType::BF16});
  check_case({{1}, 1, 1, 64, 0, DType::F32});  // T = 1
}

// A learned prefix seen by every token of every document: P = 1 and P = 20 (one partial
// prefix tile), and P = 100 (two tiles); windows must not hide it; a frozen prefix.
TEST_F(CudaAttentionTest, PrefixMatchesCpu) {
  for (DType dt : {DType::F32, DType::BF16})
    for (int64_t D : {64, 128})
      for (int64_t P : {1, 20}) {
        check_case({kDocs, 8, 2, D, 0, dt, P});
        check_case({kDocs, 8, 2, D, 16, dt, P});
      }
  check_case({kDocs, 4, 1, 64, 0, DType::F32, 100});              // MQA, two prefix tiles
  check_case({kDocs, 4, 4, 128, 16, DType::BF16, 20, false});     // frozen prefix
  check_case({kDocs, 8, 2, 80, 16, DType::F32, 20});              // generic head dim
  check_case({kDocs, 2, 1, 256, 0, DType::BF16, 20});             // 32-row query tiles
  check_case({{1}, 1, 1, 64, 0, DType::F32, 3});                  // T = 1
}

// T = 4096 in one document: a T×T score buffer would be 64 MiB per head; the kernels keep
// one 64×64 tile. The CPU reference is O(T²) but fine at this size.
TEST_F(CudaAttentionTest, LongDocumentMatchesCpu) {
  check_case({{4096}, 2, 2, 128, 0, DType::BF16});
}

TEST_F(CudaAttentionTest, BackwardIsBitReproducible) {
  gpu_->set_deterministic(true);
  for (int64_t P : {0, 20})
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(fmt::format("{} prefix {}", dtype_name(dt), P));
    const std::vector<int32_t> cu = cu_of({1, 70, 5, 130, 300});
    const int64_t T = cu.back(), Hq = 8, Hkv = 2, D = 128;
    const Shape qs{T, Hq, D}, ks{T, Hkv, D}, ps{P, Hkv, D};
    Tensor pk = P ? gpu_with(dt, random(P * Hkv * D, dt), ps) : Tensor{};
    Tensor pv = P ? gpu_with(dt, random(P * Hkv * D, dt), ps) : Tensor{};
    Tensor q = gpu_with(dt, random(T * Hq * D, dt), qs),
           k = gpu_with(dt, random(T * Hkv * D, dt), ks),
           v = gpu_with(dt, random(T * Hkv * D, dt), ks),
           dout = gpu_with(dt, random(T * Hq * D, dt), qs);
    Tensor cu_t = gpu_ints(cu);
    Tensor out = on_gpu(dt, qs), lse = on_gpu(DType::F32, {Hq, T});
    gpu_->attention_forward(out, lse, q, k, v, cu_t, 0, pk, pv);
    auto dq0 = random(T * Hq * D, dt), dk0 = random(T * Hkv * D, dt), dv0 = random(T * Hkv * D, dt);
    auto dpk0 = random(P * Hkv * D, dt), dpv0 = random(P * Hkv * D, dt);
    const int n = P ? 5 : 3;
    std::vector<float> first[5];
    for (int run = 0; run < 2; ++run) {
      Tensor dq = gpu_with(dt, dq0, qs), dk = gpu_with(dt, dk0, ks), dv = gpu_with(dt, dv0, ks);
      Tensor dpk = P ? gpu_with(dt, dpk0, ps) : Tensor{};
      Tensor dpv = P ? gpu_with(dt, dpv0, ps) : Tensor{};
      gpu_->attention_backward(dq, dk, dv, dout, q, k, v, out, lse, cu_t, 0, pk, pv, dpk, dpv);
      std::vector<float> got[5] = {download(*gpu_, dq), download(*gpu_, dk), download(*gpu_, dv),
                                   P ? download(*gpu_, dpk) : std::vector<float>{},
                                   P ? download(*gpu_, dpv) : std::vector<float>{}};
      for (int i = 0; i < n; ++i) {
        if (run == 0) {
          first[i] = got[i];
          continue;
        }
        ASSERT_EQ(got[i].size(), first[i].size());
        EXPECT_EQ(std::memcmp(got[i].data(), first[i].data(), got[i].size() * sizeof(float)), 0)
            << "gradient " << i << " (dq, dk, dv, dprefix_k, dprefix_v) differs between two runs";
      }
    }
  }
}

TEST_F(CudaAttentionTest, ErrorsNameTheProblem) {
  const int64_t T = 8, D = 64;
  Tensor q = on_gpu(DType::BF16, {T, 4, D}), k = on_gpu(DType::BF16, {T, 2, D});
  Tensor v = on_gpu(DType::BF16, {T, 2, D}), out = on_gpu(DType::BF16, {T, 4, D});
  Tensor lse = on_gpu(DType::F32, {4, T}), cu = gpu_ints({0, 3, 8});
  auto expect_error = [](auto&& call, const std::string& needle) {
    try {
      call();
      ADD_FAILURE() << "no error; expected one mentioning \"" << needle << "\"";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const Tensor none{};  // no prefix
  // Mismatched dtypes, an lse that is not f32, heads that do not group, a host tensor,
  // an unsupported head dim, a negative window, a cu_seqlens that is not i32.
  expect_error(
      [&] {
        gpu_->attention_forward(out, lse, q, on_gpu(DType::F32, {T, 2, D}), v, cu, 0, none, none);
      },
      "k is");
  expect_error(
      [&] {
        gpu_->attention_forward(out, on_gpu(DType::BF16, {4, T}), q, k, v, cu, 0, none, none);
      },
      "lse");
  expect_error(
      [&] {
        Tensor k3 = on_gpu(DType::BF16, {T, 3, D}), v3 = on_gpu(DType::BF16, {T, 3, D});
        gpu_->attention_forward(out, lse, q, k3, v3, cu, 0, none, none);
      },
      "not a multiple");
  expect_error(
      [&] {
        gpu_->attention_forward(out, lse, on_cpu(DType::BF16, {T, 4, D}), k, v, cu, 0, none, none);
      },
      "attention_forward");
  expect_error(
      [&] {
        Tensor qb = on_gpu(DType::BF16, {T, 1, 300}), kb = on_gpu(DType::BF16, {T, 1, 300});
        gpu_->attention_forward(on_gpu(DType::BF16, {T, 1, 300}), on_gpu(DType::F32, {1, T}), qb,
                                kb, kb, cu, 0, none, none);
      },
      "head dim");
  expect_error([&] { gpu_->attention_forward(out, lse, q, k, v, cu, -1, none, none); }, "window");
  expect_error([&] { gpu_->attention_forward(out, lse, q, k, v, on_gpu(DType::F32, {3}), 0,
                                                        none, none); },
               "cu_seqlens");
  // Backward: a gradient of the wrong dtype.
  expect_error(
      [&] {
        gpu_->attention_backward(on_gpu(DType::F32, {T, 4, D}), k, v, out, q, k, v, out, lse, cu,
                                 0, none, none, none, none);
      },
      "dq");
  // Prefix: only one half, a wrong shape or dtype, dprefix without a prefix or mistyped.
  Tensor pk = on_gpu(DType::BF16, {3, 2, D}), pv = on_gpu(DType::BF16, {3, 2, D});
  expect_error([&] { gpu_->attention_forward(out, lse, q, k, v, cu, 0, pk, none); }, "both");
  expect_error(
      [&] {
        gpu_->attention_forward(out, lse, q, k, v, cu, 0, on_gpu(DType::BF16, {3, 4, D}), pv);
      },
      "prefix_k");
  expect_error(
      [&] {
        gpu_->attention_forward(out, lse, q, k, v, cu, 0, pk, on_gpu(DType::F32, {3, 2, D}));
      },
      "prefix_v");
  expect_error(
      [&] {
        gpu_->attention_backward(on_gpu(DType::BF16, {T, 4, D}), k, v, out, q, k, v, out, lse, cu,
                                 0, none, none, pk, none);
      },
      "without prefix");
  expect_error(
      [&] {
        gpu_->attention_backward(on_gpu(DType::BF16, {T, 4, D}), k, v, out, q, k, v, out, lse, cu,
                                 0, pk, pv, none, on_gpu(DType::F32, {3, 2, D}));
      },
      "dprefix_v");
}

}  // namespace
}  // namespace temper
