// launch/temper-mpirun: the checks that save a cluster job from a confusing failure, and a
// real two-rank run through it.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fstream>

#include "support/test_util.h"

namespace temper {
namespace {

using Result = test::CommandResult;

Result launch(const std::string& args) {
  return test::run_command(fmt::format("TEMPER_BIN={}/bin/temper bash {}/launch/temper-mpirun {}",
                                       TEMPER_BINARY_DIR, TEMPER_SOURCE_DIR, args));
}

TEST(Launch, RankCountMustFitTensorParallel) {
  Result r = launch("-n 3 --tp 2 -- train x.yaml");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("3 ranks do not fit parallel.tp=2"), std::string::npos) << r.output;
}

TEST(Launch, BadHostfilesAreNamed) {
  auto dir = test::temp_dir("launch_hostfile");
  const std::string bad = (dir / "bad").string(), small = (dir / "small").string();
  std::ofstream(bad) << "node-a slots=2\nnode-b slots=two\n";
  std::ofstream(small) << "node-a slots=1\n";
  Result r = launch("-n 2 --hostfile " + bad + " -- train x.yaml");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find(bad + ":2: cannot parse"), std::string::npos) << r.output;
  r = launch("-n 2 --hostfile " + small + " -- train x.yaml");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("offers 1 slots but 2 ranks"), std::string::npos) << r.output;
  r = launch("-n 2 --hostfile " + (dir / "missing").string() + " -- train x.yaml");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("does not exist"), std::string::npos) << r.output;
}

TEST(Launch, TwoRanksTrainThroughTheWrapper) {
  auto dir = test::temp_dir("launch_run");
  Result r = launch(fmt::format("-n 2 -- train {}/configs/recipes/tiny.yaml out_dir={} "
                                "train.steps=2 train.eval_every=0 train.progress=plain",
                                TEMPER_SOURCE_DIR, dir.string()));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("dp=2"), std::string::npos) << r.output;
  std::ifstream metrics(dir / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) ++lines;
  EXPECT_EQ(lines, 2);  // rank 0 alone writes metrics
}

}  // namespace
}  // namespace temper
