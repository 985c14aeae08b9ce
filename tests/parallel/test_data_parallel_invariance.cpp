// Parallel invariance through the real launcher: the same global batch split over 1, 2 or
// 4 ranks as data parallelism (with accumulation, tiny gradient buckets, ZeRO-1/2) and as
// tensor parallelism (tp = 2, alone and with dp = 2) gives the same five-step loss
// trajectory, the same gradient norm at every step and the same final parameters (gathered
// to full tensors) as one process, within fp32 reduction-order noise (bounds below). One set
// of layouts runs without clipping (optim.grad_clip=0). Runs `mpirun --oversubscribe temper`.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "e2e/checkpoint_test_util.h"
#include "support/test_util.h"

namespace temper {
namespace {

// Losses and parameters: sums in another order differ by a few ulps per reduction; over five
// AdamW steps the parameters drift by a few 1e-7 relative. 1e-5 leaves room and still fails
// on a wrong shard of data or a missing reduction (~1e-2). It does not catch a wrong uniform
// gradient scale: clipping rescales the gradient and AdamW is scale-invariant, so a planted
// `grad_scale /= dp` moved them by only 8.65e-6.
constexpr double kBound = 1e-5;
// Gradient norms, every step: what the step computed before clipping and AdamW hide any
// scale. Bound: test::kLayoutGradNormBound; the largest difference each layout shows is
// printed (measured noise: see that constant).
constexpr double kGradNormBound = test::kLayoutGradNormBound;

struct Layout {
  int ranks, accum;
  double bucket_mb;
  int zero = 0;
  int tp = 1;
};

std::string run_layout(const Layout& l, const std::string& tag, const std::string& extra = "") {
  auto dir = test::temp_dir("dp_" + tag);
  std::string cmd = fmt::format(
      "OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "timeout 300 mpirun -np {} --oversubscribe --bind-to none {}/bin/temper train "
      "{}/configs/recipes/tiny.yaml out_dir={} train.steps=5 train.grad_accum={} "
      "train.eval_every=0 train.progress=plain parallel.bucket_mb={} parallel.zero={} "
      "parallel.tp={} parallel.timeout_s=120 {}",
      l.ranks, TEMPER_BINARY_DIR, TEMPER_SOURCE_DIR, dir.string(), l.accum, l.bucket_mb, l.zero,
      l.tp, extra);
  const test::CommandResult r = test::run_command(cmd);
  EXPECT_EQ(r.status, 0) << r.output;
  return dir.string();
}

std::vector<float> losses(const std::string& dir) { return test::loss_list(dir); }

void expect_matches(const std::string& dir, const std::string& ref, const std::string& tag) {
  test::expect_same_training(dir, ref, 5, kBound, kGradNormBound, tag);
}

TEST(DataParallel, LayoutsMatchOneProcess) {
  // Global batch: 4 micro-batches of 4 rows per step in every layout.
  const std::string ref = run_layout(Layout{1, 4, 25.0}, "1x4");
  ASSERT_EQ(losses(ref).size(), 5u);
  for (const auto& [layout, tag] : {std::pair{Layout{2, 2, 25.0}, "2x2"},
                                    std::pair{Layout{4, 1, 25.0}, "4x1"},
                                    std::pair{Layout{2, 2, 0.01}, "2x2_small_buckets"},
                                    std::pair{Layout{2, 2, 25.0, 1}, "2x2_zero1"},
                                    std::pair{Layout{4, 1, 25.0, 1}, "4x1_zero1"},
                                    // (tp, dp) = (2, 1), (2, 2), and (2, 2) with ZeRO-1
                                    std::pair{Layout{2, 4, 25.0, 0, 2}, "tp2_dp1"},
                                    std::pair{Layout{4, 2, 25.0, 0, 2}, "tp2_dp2"},
                                    std::pair{Layout{4, 2, 25.0, 1, 2}, "tp2_dp2_zero1"},
                                    std::pair{Layout{2, 2, 25.0, 2}, "2x2_zero2"},
                                    std::pair{Layout{4, 1, 25.0, 2}, "4x1_zero2"},
                                    std::pair{Layout{4, 2, 25.0, 2, 2}, "tp2_dp2_zero2"}}) {
    SCOPED_TRACE(tag);
    expect_matches(run_layout(layout, tag), ref, tag);
  }
}

// Without clipping every update uses the reduced gradient as it is: the path where a wrong
// scale reaches AdamW unchanged (and where AdamW's scale invariance hides it from the
// parameters, so the gradient norms are what catches it).
TEST(DataParallel, UnclippedLayoutsMatchOneProcess) {
  const std::string noclip = "optim.grad_clip=0";
  const std::string ref = run_layout(Layout{1, 4, 25.0}, "noclip_1x4", noclip);
  ASSERT_EQ(losses(ref).size(), 5u);
  for (const auto& [layout, tag] : {std::pair{Layout{2, 2, 0.01}, "noclip_2x2_small_buckets"},
                                    std::pair{Layout{4, 1, 25.0, 1}, "noclip_4x1_zero1"},
                                    std::pair{Layout{4, 2, 25.0, 2, 2}, "noclip_tp2_dp2_zero2"}}) {
    SCOPED_TRACE(tag);
    expect_matches(run_layout(layout, tag, noclip), ref, tag);
  }
}

// Accumulation 3 (a count that does not divide evenly into powers of two): one process
// accumulating 6 micro-batches against 2 ranks × 3, with ZeRO 0, 1 and 2.
TEST(DataParallel, AccumulationThreeMatchesOneProcess) {
  const std::string ref = run_layout(Layout{1, 6, 25.0}, "1x6");
  for (int zero : {0, 1, 2}) {
    const std::string tag = fmt::format("2x3_zero{}", zero);
    expect_matches(run_layout(Layout{2, 3, 25.0, zero}, tag), ref, tag);
  }
}

TEST(TensorParallel, HeadsThatDoNotDivideAreAClearError) {
  auto dir = test::temp_dir("tp_bad_heads");
  const std::string cmd = fmt::format(
      "OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 "
      "mpirun -np 4 --oversubscribe --bind-to none {}/bin/temper train {}/configs/recipes/tiny.yaml "
      "out_dir={} parallel.tp=4",
      TEMPER_BINARY_DIR, TEMPER_SOURCE_DIR, dir.string());
  const test::CommandResult r = test::run_command(cmd);
  const std::string& out = r.output;
  EXPECT_NE(r.status, 0) << out;
  // The tiny model has 2 kv heads: 4-way tensor parallelism cannot split them.
  EXPECT_NE(out.find("num_key_value_heads 2 is not divisible by parallel.tp=4"), std::string::npos) << out;
}

// Gradient and parameter traffic per step: plain data parallelism all-reduces Ψ gradient
// bytes (volume 2Ψ); ZeRO-1 and ZeRO-2 reduce-scatter Ψ and all-gather Ψ: the same 2Ψ,
// where Ψ here is the f32 flat buffer, padded to a multiple of dp for ZeRO-1 and, for
// ZeRO-2, each gradient group padded on its own (at most dp − 1 elements per group).
TEST(DataParallel, BytesMovedPerStepAreTwoPsi) {
  for (const auto& [layout, tag] : {std::pair{Layout{2, 1, 25.0, 0}, "bytes_zero0"},
                                    std::pair{Layout{4, 1, 0.01, 0}, "bytes_zero0_small"},
                                    std::pair{Layout{2, 1, 25.0, 1}, "bytes_zero1"},
                                    std::pair{Layout{4, 1, 25.0, 1}, "bytes_zero1_dp4"},
                                    std::pair{Layout{2, 1, 25.0, 2}, "bytes_zero2"},
                                    std::pair{Layout{4, 1, 25.0, 2}, "bytes_zero2_dp4"}}) {
    const std::string dir = run_layout(layout, tag);
    int64_t numel = 0;
    for (const auto& [name, t] : read_safetensors(dir + "/final/model.safetensors").tensors)
      numel += int64_t(t.data.size() / 4);
    const int64_t dp = layout.ranks;
    const int64_t psi_elems = layout.zero ? (numel + dp - 1) / dp * dp : numel;
    const uint64_t two_psi = uint64_t(2 * psi_elems * 4);
    auto lines = test::metric_lines(dir);
    ASSERT_EQ(lines.size(), 5u) << tag;
    // ZeRO-2 pads each of its groups (final norm, 2 blocks, embedding of the tiny model).
    const uint64_t group_padding = layout.zero == 2 ? uint64_t(2 * 4 * (dp - 1) * 4) : 0;
    for (auto& j : lines) {
      const uint64_t got = j["grad_comm_bytes"].get<uint64_t>();
      EXPECT_GE(got, uint64_t(2 * numel * 4)) << tag;
      EXPECT_LE(got, two_psi + group_padding) << tag;
      if (layout.zero < 2) EXPECT_EQ(got, two_psi) << tag;
    }
  }
}

}  // namespace
}  // namespace temper
