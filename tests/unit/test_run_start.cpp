// What a run decides before its first step: its length from train.steps / train.epochs and
// how often it validates (run_length.h), whether a resume under a changed config stays
// exact (resume_check.h), and whether rank 0 draws a progress bar (progress.h).
#include <gtest/gtest.h>

#include "core/error.h"
#include "support/test_util.h"
#include "train/progress.h"
#include "train/resume_check.h"
#include "train/run_length.h"

namespace temper {
namespace {

using test::error_of;

RunConfig config(const std::vector<std::string>& overrides) {
  return run_config_from_yaml_text("", "test.yaml", overrides);
}

TEST(RunLength, StepsOrEpochsOverTheGlobalBatch) {
  // 40 micro-batches an epoch, 2 a step (accum 2, one rank).
  const RunConfig steps = config({"train.steps=7", "train.grad_accum=2"});
  EXPECT_EQ(run_length(steps, 40, 1, true).steps, 7);
  const RunConfig epochs = config({"train.epochs=1.5", "train.grad_accum=2"});
  EXPECT_EQ(run_length(epochs, 40, 1, true).steps, 30);
  EXPECT_EQ(run_length(epochs, 41, 1, true).steps, 31);  // ceil(30.75): the last batches too
  EXPECT_EQ(run_length(epochs, 40, 4, true).steps, 8);   // 4 dp ranks: 8 micro-batches a step
  EXPECT_EQ(run_length(config({"train.epochs=0.3"}), 10, 1, true).steps, 3);  // not 4
  EXPECT_EQ(run_length(config({"train.epochs=0.001"}), 10, 1, true).steps, 1);
  // Neither given: one epoch.
  const RunLength one = run_length(config({}), 25, 1, true);
  EXPECT_EQ(one.steps, 25);
  EXPECT_DOUBLE_EQ(one.epochs(), 1.0);
  EXPECT_NE(one.describe(config({})).find("25 steps = 1 epochs (one epoch: train.steps and "
                                          "train.epochs unset; an epoch is 25 micro-batches of 4 × "
                                          "128 tokens, a step 1)"),
            std::string::npos)
      << one.describe(config({}));
}

TEST(RunLength, ValidationEveryTenthOfTheRunByDefault) {
  EXPECT_EQ(run_length(config({"train.steps=100"}), 40, 1, true).eval_every, 10);
  EXPECT_EQ(run_length(config({"train.steps=8"}), 40, 1, true).eval_every, 1);
  EXPECT_EQ(run_length(config({"train.steps=45"}), 40, 1, true).eval_every, 5);
  EXPECT_EQ(run_length(config({"train.steps=100"}), 40, 1, false).eval_every, 0);  // no val split
  EXPECT_EQ(run_length(config({"train.steps=100", "train.eval_every=0"}), 40, 1, true).eval_every, 0);
  EXPECT_EQ(run_length(config({"train.steps=100", "train.eval_every=7"}), 40, 1, true).eval_every, 7);
}

std::vector<std::string> changes(const RunConfig& then, const RunConfig& now, int64_t dp_then = 1,
                                 int64_t dp_now = 1, int64_t steps_then = 10, int64_t steps_now = 10) {
  LrSchedule a{then.optim.lr, then.optim.min_lr_ratio, then.optim.warmup_steps, steps_then, then.optim.schedule};
  LrSchedule b{now.optim.lr, now.optim.min_lr_ratio, now.optim.warmup_steps, steps_now, now.optim.schedule};
  return exactness_breaking_changes(then, RunShape{dp_then, a}, now, RunShape{dp_now, b});
}

TEST(ResumeCheck, NamesEveryKeyThatBreaksExactness) {
  const RunConfig base = config({"train.steps=10", "data.path=a.h5", "train.grad_accum=2"});
  EXPECT_TRUE(changes(base, base).empty());
  // What may change: logging, evaluation, checkpoints, layout, recompute, backend.
  EXPECT_TRUE(changes(base, config({"train.steps=10", "data.path=a.h5", "train.grad_accum=2",
                                    "train.log_every=5", "train.eval_every=3", "checkpoint.every=2",
                                    "parallel.zero=2", "train.recompute=true", "checkpoint.keep=1",
                                    "checkpoint.resume=force", "train.progress=plain"}))
                  .empty());
  // The same global batch from another split between accumulation and ranks.
  EXPECT_TRUE(changes(base, config({"train.steps=10", "data.path=a.h5", "train.grad_accum=1"}), 1, 2).empty());
  const auto got = changes(base, config({"train.steps=10", "data.path=b.h5", "train.grad_accum=2",
                                         "train.seq_len=256", "optim.lr=1e-3", "peft.method=lora",
                                         "model.preset=small", "seed=7", "train.micro_batch_size=8"}),
                           1, 2);
  const std::vector<std::string> want = {
      "data.path: \"a.h5\" -> \"b.h5\"",         "model.preset: \"\" -> \"small\"",
      "optim.lr: 0.0003 -> 0.001",               "peft.method: \"full\" -> \"lora\"",
      "seed: 1234 -> 7",                          "train.micro_batch_size: 4 -> 8",
      "train.seq_len: 128 -> 256",
      "global batch (train.grad_accum × data-parallel ranks): 2 × 1 -> 2 × 2 micro-batches"};
  EXPECT_EQ(got, want);
}

TEST(ResumeCheck, TheLengthMattersToADecayingScheduleOnly) {
  const RunConfig cosine = config({"train.steps=10"}), longer = config({"train.steps=20"});
  const auto got = changes(cosine, longer, 1, 1, 10, 20);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(got[0].find("10 -> 20 steps, which stretches the cosine lr schedule"), std::string::npos) << got[0];
  const RunConfig constant = config({"train.steps=10", "optim.schedule=constant"});
  EXPECT_TRUE(changes(constant, config({"train.steps=20", "optim.schedule=constant"}), 1, 1, 10, 20).empty());
  // train.epochs resolving to the same steps (the data did not change) is no change.
  EXPECT_TRUE(changes(config({"train.epochs=1"}), config({"train.epochs=1"}), 1, 1, 30, 30).empty());
}

TEST(Progress, AutoDrawsABarOnlyWhenTheOutputReachesATerminal) {
  EXPECT_TRUE(auto_progress_bar({"", false, true, std::nullopt}));
  EXPECT_FALSE(auto_progress_bar({"", false, false, std::nullopt}));
  // mpirun gives each rank a pty: what counts is mpirun's own stdout.
  EXPECT_FALSE(auto_progress_bar({"", true, true, false}));
  EXPECT_TRUE(auto_progress_bar({"", true, true, true}));
  EXPECT_FALSE(auto_progress_bar({"", true, true, std::nullopt}));  // unknown: plain
  // launch/temper-mpirun says which.
  EXPECT_FALSE(auto_progress_bar({"plain", true, true, true}));
  EXPECT_TRUE(auto_progress_bar({"bar", true, false, false}));
  EXPECT_NE(error_of([] { auto_progress_bar({"fancy", false, true, std::nullopt}); })
                .find("TEMPER_PROGRESS='fancy'"),
            std::string::npos);
}

}  // namespace
}  // namespace temper
