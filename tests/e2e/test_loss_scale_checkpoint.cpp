// The trainer's dynamic loss scale (f16 training) through checkpoints, on the CPU: the
// scale is trainer-level state (optim/loss_scale, train/run_checkpoint), so the CPU f32
// backend exercises it when TEMPER_TEST_LOSS_SCALE=1 forces one, with overflows injected by
// TEMPER_TEST_NONFINITE (a NaN in a weight for that step: the step is skipped and the scale
// halved, as an f16 overflow would). Checked through `temper train`:
//  - a power-of-two scale changes no f32 result (losses and gradient norms of every step
//    bit-identical to the run without one) and follows the halve/double schedule;
//  - the checkpoint holds the scale, the good steps of the current window and the overflow
//    count, and a run resumed from it continues the schedule exactly where it stood (a
//    restart that lost the scale or its window shows in the logged scales).
#include <gtest/gtest.h>

#include "checkpoint/checkpoint.h"
#include "e2e/checkpoint_test_util.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

// Initial scale 1024, doubling after 3 good steps; steps 2, 3 and 7 overflow. Saved at step
// 4 (scale 256, one good step of the window) and 8. A resume that lost the scale would
// start again at 1024 (differs from step 5 on); one that lost the window would double a step
// late (differs at step 6).
const std::string kArgs =
    "train.steps=9 optim.loss_scale_init=1024 optim.loss_scale_window=3 checkpoint.every=4 "
    "checkpoint.keep=5 train.max_nonfinite_steps=3";
const std::string kOverflows = "TEMPER_TEST_NONFINITE=2,3,7";

test::CommandResult train(const fs::path& dir, const std::string& env, const std::string& args = "") {
  return test::run_command(test::train_cmd(dir, kArgs + " " + args, env));
}

fs::path ckpt(const fs::path& dir, int64_t step) {
  return dir / "checkpoints" / fmt::format("step-{:08d}.h5", step);
}

TEST(LossScaleCheckpoint, ScaleIsSavedAndRestoredOnTheCpu) {
  const fs::path full = test::temp_dir("loss_scale_full"), plain = test::temp_dir("loss_scale_plain");
  const fs::path resumed = test::temp_dir("loss_scale_resumed");
  test::CommandResult r = train(full, "TEMPER_TEST_LOSS_SCALE=1 " + kOverflows);
  ASSERT_EQ(r.status, 0) << r.output;
  r = train(plain, kOverflows);
  ASSERT_EQ(r.status, 0) << r.output;

  // The schedule, step by step, from the logged scales and skip flags: halved by a skipped
  // step, doubled after the third good step in a row, unchanged otherwise.
  const auto scales = test::step_values(full, "loss_scale");
  const auto skipped = test::step_values(full, "skipped");
  ASSERT_EQ(scales.size(), 9u);
  EXPECT_TRUE(test::step_values(plain, "loss_scale").empty()) << "a loss scale without the hook";
  double scale = 1024;
  int good = 0;
  for (int64_t s = 1; s <= 9; ++s) {
    const bool skip = skipped.count(s) > 0;
    EXPECT_EQ(skip, s == 2 || s == 3 || s == 7) << "step " << s;
    if (skip) {
      scale /= 2, good = 0;
    } else if (++good == 3) {
      scale *= 2, good = 0;
    }
    EXPECT_EQ(scales.at(s), scale) << "step " << s;
  }
  // The scale is divided back exactly: the same losses and gradient norms as without it.
  test::expect_same_losses(test::step_losses(full), test::step_losses(plain), 1, 9, "scaled vs plain");
  test::expect_grad_norms_close(full, plain, 1, 9, 0.0, "scaled vs plain");

  // What the step-4 checkpoint holds: scale 256 (halved at steps 2 and 3), 1 good step
  // since, 2 overflows.
  const CheckpointMeta meta = read_checkpoint_meta(ckpt(full, 4).string());
  EXPECT_EQ(meta.loss_scale, scales.at(4));
  EXPECT_EQ(meta.loss_scale, 256);
  EXPECT_EQ(meta.loss_scale_good_steps, 1);
  EXPECT_EQ(meta.loss_scale_overflows, 2);
  EXPECT_EQ(meta.skipped_steps, 2);
  EXPECT_EQ(read_checkpoint_meta(ckpt(full, 8).string()).loss_scale_overflows, 3);

  // Resumed from step 4: the scale doubles at step 6 (the window's third good step), as in
  // the uninterrupted run; then the overflow at 7 halves it. Everything bit-identical.
  r = train(resumed, "TEMPER_TEST_LOSS_SCALE=1 " + kOverflows, "checkpoint.load=" + ckpt(full, 4).string());
  ASSERT_EQ(r.status, 0) << r.output;
  const auto resumed_scales = test::step_values(resumed, "loss_scale");
  ASSERT_EQ(resumed_scales.size(), 5u);
  for (int64_t s = 5; s <= 9; ++s) EXPECT_EQ(resumed_scales.at(s), scales.at(s)) << "step " << s;
  test::expect_same_losses(test::step_losses(resumed), test::step_losses(full), 5, 9, "resumed");
  test::expect_grad_norms_close(resumed, full, 5, 9, 0.0, "resumed");
  EXPECT_EQ(read_checkpoint_meta(ckpt(resumed, 8).string()).loss_scale_overflows, 3);
}

}  // namespace
}  // namespace temper
