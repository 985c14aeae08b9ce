// `temper train` with checkpoints, one process: periodic saves and keep-K, exact resume
// (own directory and checkpoint.load), where a run starts from, and non-finite steps
// (skipped, counted, then a stop that saves the last good state), through the binary.
// Crash safety and damaged inputs: test_checkpoint_train_faults.cpp.
#include <gtest/gtest.h>

#include <cstring>

#include "checkpoint/checkpoint.h"
#include "e2e/checkpoint_test_util.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "train/checkpointing.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

using test::CommandResult;

CommandResult train(const fs::path& dir, const std::string& args, const std::string& env = "") {
  return test::run_command(test::train_cmd(dir, args, env));
}

fs::path ckpt(const fs::path& dir, int64_t step) {
  return dir / "checkpoints" / fmt::format("step-{:08d}.h5", step);
}

// A checkpoint loaded into a fresh tiny model and optimizer, read back to host vectors:
// the parameters, then every optimizer piece's master, m and v.
struct LoadedState {
  CheckpointMeta meta;
  std::vector<float> params, optim;
};

LoadedState load_tiny(const fs::path& path) {
  ModelConfig mc = load_hf_config(std::string(TEMPER_SOURCE_DIR) + "/configs/models/tiny.json");
  mc.finalize();
  auto backend = make_backend("cpu");
  Transformer model(mc, *backend, DType::F32);
  AdamW optimizer(model.params(), *backend, AdamWConfig{});
  LoadedState s;
  s.meta = load_checkpoint(path.string(), model, &optimizer);
  for (const Parameter& p : model.params().all()) {
    auto v = test::to_host(*backend, p.value);
    s.params.insert(s.params.end(), v.begin(), v.end());
  }
  for (const auto& piece : optimizer.state_pieces())
    for (const Tensor& t : {piece.master, piece.m, piece.v}) {
      auto v = test::to_host(*backend, t);
      s.optim.insert(s.optim.end(), v.begin(), v.end());
    }
  return s;
}

// Bit-identical float vectors (NaN == NaN); reports the first difference only.
::testing::AssertionResult same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0)
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << b[i];
  return ::testing::AssertionSuccess();
}

TEST(CheckpointTrain, PeriodicSavesKeepTheNewestAndRecordTheRun) {
  const fs::path dir = test::temp_dir("ckpt_periodic");
  CommandResult r = train(dir, "train.steps=7 checkpoint.every=2 checkpoint.keep=2");
  ASSERT_EQ(r.status, 0) << r.output;
  // Saves at 2, 4, 6 and the last step 7; the newest two are kept.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-00000006.h5", "step-00000007.h5"}));
  EXPECT_EQ(test::file_bytes(dir / "checkpoints" / "latest"), "step-00000007.h5\n");
  const CheckpointMeta meta = read_checkpoint_meta(ckpt(dir, 7).string());
  EXPECT_EQ(meta.step, 7);
  EXPECT_EQ(meta.optimizer_steps, 7);
  EXPECT_TRUE(meta.has_optimizer);
  int64_t tokens = 0;
  for (const auto& j : test::metric_lines(dir)) tokens += j["tokens"].get<int64_t>();
  EXPECT_EQ(meta.tokens_seen, tokens);
  EXPECT_NE(meta.config_yaml.find("every: 2"), std::string::npos) << meta.config_yaml;
  EXPECT_DOUBLE_EQ(meta.lr, test::metric_lines(dir).back()["lr"].get<double>());
  EXPECT_TRUE(fs::exists(dir / "final" / "model.safetensors"));
  // Started again: already at train.steps, nothing to do, nothing changed.
  const std::string before = test::file_bytes(ckpt(dir, 7));
  r = train(dir, "train.steps=7 checkpoint.every=2 checkpoint.keep=2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("nothing to train"), std::string::npos) << r.output;
  EXPECT_TRUE(test::file_bytes(ckpt(dir, 7)) == before);
  EXPECT_EQ(test::metric_lines(dir).size(), 7u);
  // checkpoint.every=0 (the default): a run that ends normally saves none.
  const fs::path none = test::temp_dir("ckpt_periodic_none");
  ASSERT_EQ(train(none, "train.steps=2").status, 0);
  EXPECT_TRUE(CheckpointDir(none).complete().empty());
  EXPECT_TRUE(fs::exists(none / "final" / "model.safetensors"));
}

// Resuming from step 4 of an 8-step run, in its own directory (the `latest` pointer) and
// in a fresh one (checkpoint.load), gives the uninterrupted run's losses and final model
// bit for bit.
TEST(CheckpointTrain, ResumeIsBitExact) {
  const std::string args = "train.steps=8 checkpoint.every=4 checkpoint.keep=5";
  const fs::path full = test::temp_dir("ckpt_exact_full");
  ASSERT_EQ(train(full, args).status, 0);
  const auto ref = test::step_losses(full);
  ASSERT_EQ(ref.size(), 8u);

  // Own directory: a copy of the run as it was after step 4 (its metrics too).
  const fs::path own = test::temp_dir("ckpt_exact_own");
  fs::create_directories(own / "checkpoints");
  fs::copy_file(ckpt(full, 4), ckpt(own, 4));
  std::ofstream(own / "checkpoints" / "latest") << "step-00000004.h5\n";
  {
    std::ofstream m(own / "metrics.jsonl");
    for (const auto& j : test::metric_lines(full)) m << j.dump() << "\n";  // steps 5-8 to drop
  }
  CommandResult r = train(own, args);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
  test::expect_same_losses(test::step_losses(own), ref, 1, 8, "own directory");
  EXPECT_EQ(test::metric_lines(own).size(), 8u);
  EXPECT_TRUE(test::file_bytes(own / "final" / "model.safetensors") ==
              test::file_bytes(full / "final" / "model.safetensors"));

  // checkpoint.load into a fresh directory: steps 5-8 only.
  const fs::path loaded = test::temp_dir("ckpt_exact_load");
  r = train(loaded, args + " checkpoint.load=" + ckpt(full, 4).string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("starting from"), std::string::npos) << r.output;
  const auto got = test::step_losses(loaded);
  EXPECT_EQ(got.begin()->first, 5);
  test::expect_same_losses(got, ref, 5, 8, "checkpoint.load");
  EXPECT_TRUE(test::file_bytes(loaded / "final" / "model.safetensors") ==
              test::file_bytes(full / "final" / "model.safetensors"));
  // The optimizer state of the last checkpoints agrees too.
  const LoadedState a = load_tiny(ckpt(full, 8)), b = load_tiny(ckpt(loaded, 8));
  EXPECT_TRUE(same_bits(a.params, b.params));
  EXPECT_TRUE(same_bits(a.optim, b.optim));
  EXPECT_EQ(a.meta.tokens_seen, b.meta.tokens_seen);

  // A directory given as checkpoint.load means its newest checkpoint (step 8: done).
  const fs::path from_dir = test::temp_dir("ckpt_exact_dir");
  r = train(from_dir, args + " checkpoint.load=" + full.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("nothing to train"), std::string::npos) << r.output;
}

TEST(CheckpointTrain, WhereARunStartsFrom) {
  const fs::path dir = test::temp_dir("ckpt_start");
  ASSERT_EQ(train(dir, "train.steps=2 checkpoint.every=2").status, 0);
  // resume=false in a directory that already has checkpoints: refused, nothing touched.
  const std::string before = test::file_bytes(ckpt(dir, 2));
  CommandResult r = train(dir, "train.steps=4 checkpoint.every=2 checkpoint.resume=false");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("checkpoint.resume=false"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step-00000002.h5"), std::string::npos) << r.output;
  EXPECT_TRUE(test::file_bytes(ckpt(dir, 2)) == before);
  // checkpoint.load naming nothing.
  const fs::path other = test::temp_dir("ckpt_start_other");
  r = train(other, "train.steps=2 checkpoint.every=2 checkpoint.load=" + (dir / "nope.h5").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("nope.h5' does not exist"), std::string::npos) << r.output;
  // The directory's own checkpoint wins over checkpoint.load (a requeued job keeps its
  // progress): `other` trains to 2 from scratch, then continues from its own step 2.
  ASSERT_EQ(train(other, "optim.schedule=constant train.steps=2 checkpoint.every=2").status, 0);
  r = train(other, "optim.schedule=constant train.steps=3 checkpoint.every=2 checkpoint.load=" +
                       ckpt(dir, 2).string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from " + ckpt(other, 2).string()), std::string::npos) << r.output;

  // A model-only checkpoint (`temper convert` of a run's final model): its weights, a
  // fresh optimizer, step 1 on; the same first loss as starting from the HF directory.
  const fs::path converted = test::temp_dir("ckpt_start_converted");
  const std::string model_only = (converted / "model.h5").string();
  ASSERT_EQ(test::run_command(fmt::format("{} convert {} --out {}", test::temper_bin(),
                                          (dir / "final").string(), model_only)).status, 0);
  const fs::path from_ckpt = converted / "a", from_hf = converted / "b";
  r = train(from_ckpt, "train.steps=2 checkpoint.load=" + model_only);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("a model-only checkpoint"), std::string::npos) << r.output;
  ASSERT_EQ(train(from_hf, "train.steps=2 model.preset= model.path=" + (dir / "final").string()).status, 0);
  const auto a = test::step_losses(from_ckpt), b = test::step_losses(from_hf);
  ASSERT_EQ(a.size(), 2u);
  test::expect_same_losses(a, b, 1, 2, "model-only checkpoint vs HF directory");
  EXPECT_LT(a.at(1), 5.0);  // trained weights, not a random init (~5.56)
}

// A NaN injected into a weight (test-only TEMPER_TEST_NONFINITE) makes the loss and
// gradient norm non-finite: the step is skipped (no update: parameters and optimizer
// state equal the previous step's) and counted; max_nonfinite_steps in a row stop the
// run with exit 1 after saving the last good state.
TEST(CheckpointTrain, NonfiniteStepsAreSkippedThenStopTheRun) {
  const std::string args = "checkpoint.every=1 checkpoint.keep=20 train.max_nonfinite_steps=3";
  const fs::path once = test::temp_dir("ckpt_nan_once");
  CommandResult r = train(once, "train.steps=5 " + args, "TEMPER_TEST_NONFINITE=3");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("step 3: non-finite"), std::string::npos) << r.output;
  auto lines = test::metric_lines(once);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_TRUE(lines[2].value("skipped", false));
  EXPECT_FALSE(lines[3].value("skipped", false));
  const LoadedState s2 = load_tiny(ckpt(once, 2)), s3 = load_tiny(ckpt(once, 3)),
                    s4 = load_tiny(ckpt(once, 4));
  EXPECT_TRUE(same_bits(s3.params, s2.params));
  EXPECT_TRUE(same_bits(s3.optim, s2.optim));
  EXPECT_EQ(s3.meta.optimizer_steps, 2);
  EXPECT_EQ(s3.meta.skipped_steps, 1);
  EXPECT_EQ(s3.meta.nonfinite_streak, 1);
  EXPECT_EQ(s4.meta.nonfinite_streak, 0);
  EXPECT_FALSE(same_bits(s4.params, s3.params));
  for (float v : s4.params) ASSERT_TRUE(std::isfinite(v));

  const fs::path stop = test::temp_dir("ckpt_nan_stop");
  r = train(stop, "train.steps=10 " + args, "TEMPER_TEST_NONFINITE=3-9");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("3 steps in a row (steps 3-5)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step-00000005.h5"), std::string::npos) << r.output;
  EXPECT_EQ(test::metric_lines(stop).size(), 5u);
  EXPECT_FALSE(fs::exists(stop / "final"));
  EXPECT_EQ(test::file_bytes(stop / "checkpoints" / "latest"), "step-00000005.h5\n");
  const LoadedState good = load_tiny(ckpt(stop, 2)), saved = load_tiny(ckpt(stop, 5));
  EXPECT_TRUE(same_bits(saved.params, good.params));
  EXPECT_TRUE(same_bits(saved.optim, good.optim));
  EXPECT_EQ(saved.meta.skipped_steps, 3);
  // Started again without the fault, it continues after step 5 and finishes.
  r = train(stop, "train.steps=10 " + args);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(test::step_losses(stop).size(), 10u);
}

}  // namespace
}  // namespace temper
