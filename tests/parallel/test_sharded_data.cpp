// A sharded dataset under data parallelism: 2 ranks with ZeRO-1 reading the index (each
// reads only the documents of its own micro-batches from the shards) train like one
// process on the same data prepared as one file: same losses, gradient norms and final
// parameters within the layout tests' fp32 bounds.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "e2e/checkpoint_test_util.h"
#include "support/test_util.h"

namespace temper {
namespace {

namespace fs = std::filesystem;

TEST(ShardedDataParallel, TwoRanksOnShardsMatchOneProcessOnOneFile) {
  const fs::path dir = test::temp_dir("sharded_dp");
  const std::string prepare = fmt::format(
      "{} prepare --synthetic --docs 400 --min-tokens 16 --max-tokens 96 --seed 1234 --out ",
      test::temper_bin());
  ASSERT_EQ(test::run_command(prepare + (dir / "one.h5").string()).status, 0);
  const test::CommandResult p = test::run_command(prepare + (dir / "index.h5").string() + " --shard-size 5K");
  ASSERT_EQ(p.status, 0) << p.output;
  ASSERT_NE(p.output.find("is their index"), std::string::npos) << p.output;

  const std::string args = "train.steps=5 train.global_batch_size=16 train.grad_accum=0 "
                           "parallel.timeout_s=120 data.source=hdf5 data.path=";
  const fs::path ref = dir / "one_process";
  const test::CommandResult one = test::run_command(
      test::train_cmd(ref, args + (dir / "one.h5").string(), "timeout 300"));
  ASSERT_EQ(one.status, 0) << one.output;
  const fs::path two = dir / "two_ranks";
  const test::CommandResult r = test::run_command(fmt::format(
      "timeout 300 env {} mpirun -np 2 --oversubscribe --bind-to none {} {} parallel.zero=1",
      test::mpi_env(), test::temper_bin(), test::train_args(two, args + (dir / "index.h5").string())));
  ASSERT_EQ(r.status, 0) << r.output;
  test::expect_same_training(two, ref, 5, 1e-5, test::kLayoutGradNormBound, "sharded dp2");
}

}  // namespace
}  // namespace temper
