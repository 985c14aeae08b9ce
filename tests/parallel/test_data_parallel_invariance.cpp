// Parallel invariance through the real launcher: the same global batch split over 1, 2 or
// 4 ranks as data parallelism (with accumulation, tiny gradient buckets, ZeRO-1) and as
// tensor parallelism (tp = 2, alone and with dp = 2) gives the same five-step loss
// trajectory and the same final parameters (gathered to full tensors) as one process,
// within fp32 reduction-order noise (bound below). Runs `mpirun --oversubscribe temper`.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "support/test_util.h"

namespace temper {
namespace {

// Sums in another order differ by a few ulps per reduction; over five AdamW steps the
// parameters drift by a few 1e-7 relative. 1e-5 leaves room and still fails on any
// real difference (a wrong shard of data or a missing reduction moves them by ~1e-2).
constexpr double kBound = 1e-5;

struct Layout {
  int ranks, accum;
  double bucket_mb;
  int zero = 0;
  int tp = 1;
};

std::string run_layout(const Layout& l, const std::string& tag) {
  auto dir = test::temp_dir("dp_" + tag);
  std::string cmd = fmt::format(
      "OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "timeout 300 mpirun -np {} --oversubscribe --bind-to none {}/bin/temper train "
      "{}/configs/recipes/tiny.yaml out_dir={} train.steps=5 train.grad_accum={} "
      "train.eval_every=0 train.progress=plain parallel.bucket_mb={} parallel.zero={} "
      "parallel.tp={} parallel.timeout_s=120",
      l.ranks, TEMPER_BINARY_DIR, TEMPER_SOURCE_DIR, dir.string(), l.accum, l.bucket_mb, l.zero,
      l.tp);
  const test::CommandResult r = test::run_command(cmd);
  EXPECT_EQ(r.status, 0) << r.output;
  return dir.string();
}

std::vector<nlohmann::json> metric_lines(const std::string& dir) {
  std::vector<nlohmann::json> v;
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line));
  return v;
}

std::vector<float> losses(const std::string& dir) {
  std::vector<float> v;
  for (auto& j : metric_lines(dir)) v.push_back(float(j["loss"].get<double>()));
  return v;
}

TEST(DataParallel, LayoutsMatchOneProcess) {
  // Global batch: 4 micro-batches of 4 rows per step in every layout.
  const Layout one{1, 4, 25.0};
  const std::string ref = run_layout(one, "1x4");
  const std::vector<float> ref_losses = losses(ref);
  ASSERT_EQ(ref_losses.size(), 5u);
  SafetensorsFile ref_model = read_safetensors(ref + "/final/model.safetensors");
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
    const std::string dir = run_layout(layout, tag);
    EXPECT_LE(test::rel_error(losses(dir), ref_losses), kBound) << tag << " losses";
    SafetensorsFile model = read_safetensors(dir + "/final/model.safetensors");
    ASSERT_EQ(model.tensors.size(), ref_model.tensors.size()) << tag;
    for (const auto& [name, t] : ref_model.tensors)
      EXPECT_LE(test::rel_error(model.at(name).to_f32(), t.to_f32()), kBound) << tag << " " << name;
  }
}

// Accumulation 3 (a count that does not divide evenly into powers of two): one process
// accumulating 6 micro-batches against 2 ranks × 3, with ZeRO 0, 1 and 2.
TEST(DataParallel, AccumulationThreeMatchesOneProcess) {
  const std::string ref = run_layout(Layout{1, 6, 25.0}, "1x6");
  SafetensorsFile ref_model = read_safetensors(ref + "/final/model.safetensors");
  for (int zero : {0, 1, 2}) {
    const std::string dir = run_layout(Layout{2, 3, 25.0, zero}, fmt::format("2x3_zero{}", zero));
    EXPECT_LE(test::rel_error(losses(dir), losses(ref)), kBound) << "zero " << zero;
    SafetensorsFile model = read_safetensors(dir + "/final/model.safetensors");
    for (const auto& [name, t] : ref_model.tensors)
      EXPECT_LE(test::rel_error(model.at(name).to_f32(), t.to_f32()), kBound) << zero << " " << name;
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
    auto lines = metric_lines(dir);
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
