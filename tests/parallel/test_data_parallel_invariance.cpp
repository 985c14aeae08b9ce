// Data-parallel invariance through the real launcher: the same global batch split over
// 1, 2 or 4 ranks (and over accumulation steps, and tiny gradient buckets) gives the same
// five-step loss trajectory and the same final parameters as one process, within fp32
// reduction-order noise (bound below). Runs `mpirun --oversubscribe build/bin/temper`.
#include <gtest/gtest.h>

#include <array>
#include <fmt/format.h>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

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
};

std::string run_layout(const Layout& l, const std::string& tag) {
  auto dir = test::temp_dir("dp_" + tag);
  std::string cmd = fmt::format(
      "OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "timeout 300 mpirun -np {} --oversubscribe --bind-to none {}/bin/temper train "
      "{}/configs/recipes/tiny.yaml out_dir={} train.steps=5 train.grad_accum={} "
      "train.eval_every=0 train.progress=plain parallel.bucket_mb={} parallel.timeout_s=120 2>&1",
      l.ranks, TEMPER_BINARY_DIR, TEMPER_SOURCE_DIR, dir.string(), l.accum, l.bucket_mb);
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = pclose(p);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << cmd << "\n" << out;
  return dir.string();
}

std::vector<float> losses(const std::string& dir) {
  std::vector<float> v;
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) v.push_back(float(nlohmann::json::parse(line)["loss"].get<double>()));
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
                                    std::pair{Layout{2, 2, 0.01}, "2x2_small_buckets"}}) {
    const std::string dir = run_layout(layout, tag);
    EXPECT_LE(test::rel_error(losses(dir), ref_losses), kBound) << tag << " losses";
    SafetensorsFile model = read_safetensors(dir + "/final/model.safetensors");
    ASSERT_EQ(model.tensors.size(), ref_model.tensors.size()) << tag;
    for (const auto& [name, t] : ref_model.tensors)
      EXPECT_LE(test::rel_error(model.at(name).to_f32(), t.to_f32()), kBound) << tag << " " << name;
  }
}

}  // namespace
}  // namespace temper
