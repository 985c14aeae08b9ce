// train.global_batch_size through the real launcher: the same recipe on 1, 2 and 4
// data-parallel ranks takes grad_accum 8, 4 and 2 and gives the one-process losses and
// gradient norms (the global batch is the same sequences whatever the rank count), and the
// run's first lines say the effective global batch.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "e2e/checkpoint_test_util.h"
#include "support/test_util.h"

namespace temper {
namespace {

constexpr double kBound = 1e-5;  // losses: fp32 reduction-order noise, as the layout tests

std::string run(int ranks, test::CommandResult* out = nullptr) {
  const auto dir = test::temp_dir(fmt::format("global_batch_{}", ranks));
  const std::string cmd = fmt::format(
      "OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "timeout 300 mpirun -np {} --oversubscribe --bind-to none {}/bin/temper train "
      "{}/configs/recipes/tiny.yaml out_dir={} train.steps=4 train.eval_every=0 train.progress=plain "
      "train.micro_batch_size=2 train.global_batch_size=16 train.grad_accum=0 parallel.timeout_s=120",
      ranks, TEMPER_BINARY_DIR, TEMPER_SOURCE_DIR, dir.string());
  const test::CommandResult r = test::run_command(cmd);
  EXPECT_EQ(r.status, 0) << r.output;
  if (out) *out = r;
  return dir.string();
}

std::vector<float> losses(const std::string& dir) {
  std::vector<float> v;
  for (const auto& [step, loss] : test::step_losses(dir)) v.push_back(float(loss));
  return v;
}

TEST(GlobalBatch, SameLossesOnOneTwoAndFourRanks) {
  test::CommandResult one;
  const std::string ref = run(1, &one);
  EXPECT_NE(one.output.find("global batch: 16 sequences (1 dp × 8 accum × 2 rows)"), std::string::npos)
      << one.output;
  const std::vector<float> ref_losses = losses(ref);
  ASSERT_EQ(ref_losses.size(), 4u);
  for (int ranks : {2, 4}) {
    SCOPED_TRACE(fmt::format("{} ranks", ranks));
    test::CommandResult r;
    const std::string dir = run(ranks, &r);
    EXPECT_NE(r.output.find(fmt::format("global batch: 16 sequences ({} dp × {} accum × 2 rows)", ranks, 8 / ranks)),
              std::string::npos) << r.output;
    EXPECT_LE(test::rel_error(losses(dir), ref_losses), kBound);
    test::expect_grad_norms_close(dir, ref, 1, 4, test::kLayoutGradNormBound, fmt::format("dp{}", ranks));
  }
}

}  // namespace
}  // namespace temper
