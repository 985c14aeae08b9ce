// What `temper train` does with an out_dir that already holds something, and with Ctrl-C
// (train/out_dir.h, train/resume_check.h, the SIGINT handling of train/checkpointing.h):
// a finished run is never overwritten without --overwrite, a resume says from which step
// and refuses a config that would not continue the run exactly, a failed start leaves no
// run folder behind, the first SIGINT saves and the second exits at once.
#include <gtest/gtest.h>

#include <regex>

#include "e2e/checkpoint_test_util.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

using test::CommandResult;

CommandResult train(const fs::path& dir, const std::string& args) {
  return test::run_command(test::train_cmd(dir, args));
}

#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

TEST(OutDir, AFinishedRunIsReplacedOnlyWithOverwrite) {
  const fs::path dir = test::temp_dir("outdir_finished") / "run";
  ASSERT_EQ(train(dir, "train.steps=3").status, 0);
  const std::string metrics = test::file_bytes(dir / "metrics.jsonl");
  const CommandResult again = train(dir, "train.steps=2");
  EXPECT_EQ(again.status, 1) << again.output;
  EXPECT_HAS(again.output, "out_dir " + dir.string() + " holds a finished run (final/, 3 steps "
                           "in metrics.jsonl) and no checkpoint to resume from");
  EXPECT_HAS(again.output, "--overwrite");
  EXPECT_EQ(test::file_bytes(dir / "metrics.jsonl"), metrics);  // untouched
  const CommandResult over = test::run_command(test::train_cmd(dir, "train.steps=2") + " --overwrite");
  ASSERT_EQ(over.status, 0) << over.output;
  EXPECT_HAS(over.output, "--overwrite: deleted the earlier run's");
  EXPECT_EQ(test::step_losses(dir).size(), 2u);
}

// A run killed before its first checkpoint: the same command starts it again, saying so.
TEST(OutDir, AnUnfinishedRunWithoutCheckpointsStartsAgain) {
  const fs::path dir = test::temp_dir("outdir_unfinished") / "run";
  ASSERT_EQ(train(dir, "train.steps=3").status, 0);
  fs::remove_all(dir / "final");  // as if killed before the end
  const CommandResult again = train(dir, "train.steps=2");
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_HAS(again.output, "holds 3 logged steps of a run that stopped before saving a checkpoint: "
                           "starting again from step 1");
  EXPECT_EQ(test::step_losses(dir).size(), 2u);
}

TEST(OutDir, AFailedStartLeavesNoRunFolder) {
  const fs::path base = test::temp_dir("outdir_failed");
  const fs::path missing = base / "new-run", existing = base / "empty";
  fs::create_directories(existing);
  for (const fs::path& dir : {missing, existing}) {
    const CommandResult r = train(dir, "data.source=hdf5 data.path=" + (base / "nope.h5").string());
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_HAS(r.output, "nope.h5");
  }
  EXPECT_FALSE(fs::exists(missing));
  EXPECT_TRUE(fs::is_directory(existing));
  EXPECT_TRUE(fs::is_empty(existing));
}

// A constant schedule keeps a longer run exact; everything else below is a change that
// would not continue the run as it was going.
TEST(Resume, SaysFromWhichStepAndRefusesAConfigThatBreaksExactness) {
  const fs::path dir = test::temp_dir("resume_check") / "run";
  const std::string run = "optim.schedule=constant checkpoint.every=2 ";
  ASSERT_EQ(train(dir, run + "train.steps=4").status, 0);
  const CommandResult longer = train(dir, run + "train.steps=6");
  ASSERT_EQ(longer.status, 0) << longer.output;
  EXPECT_HAS(longer.output, "resuming from " + (dir / "checkpoints" / "step-00000004.h5").string() +
                            ": step 4 of 6");
  const auto before = test::file_bytes(dir / "metrics.jsonl");
  const CommandResult changed =
      train(dir, run + "train.steps=8 train.seq_len=32 peft.method=lora optim.lr=1e-3");
  EXPECT_EQ(changed.status, 1) << changed.output;
  EXPECT_HAS(changed.output, "holds checkpoints of a run with another config (the newest, " +
                             (dir / "checkpoints" / "step-00000006.h5").string() + ", at step 6)");
  EXPECT_HAS(changed.output, "train.seq_len: 64 -> 32");
  EXPECT_HAS(changed.output, "peft.method: \"full\" -> \"lora\"");
  EXPECT_HAS(changed.output, "optim.lr: 0.003 -> 0.001");
  EXPECT_HAS(changed.output, "checkpoint.resume=force");
  EXPECT_EQ(test::file_bytes(dir / "metrics.jsonl"), before);
  // Forced: it goes on, saying how it differs.
  const CommandResult forced = train(dir, run + "train.steps=8 optim.lr=1e-3 checkpoint.resume=force");
  ASSERT_EQ(forced.status, 0) << forced.output;
  EXPECT_HAS(forced.output, "with a changed config (checkpoint.resume=force)");
  EXPECT_HAS(forced.output, "step 6 of 8");
  EXPECT_EQ(test::step_losses(dir).size(), 8u);
}

// The length of a decaying schedule counts too: more steps stretch it.
TEST(Resume, ALongerRunStretchesACosineSchedule) {
  const fs::path dir = test::temp_dir("resume_cosine") / "run";
  ASSERT_EQ(train(dir, "checkpoint.every=2 train.steps=2").status, 0);
  const CommandResult longer = train(dir, "checkpoint.every=2 train.steps=4");
  EXPECT_EQ(longer.status, 1) << longer.output;
  EXPECT_HAS(longer.output, "2 -> 4 steps, which stretches the cosine lr schedule");
}

// A step long enough (hundreds of ms) that a signal lands inside one.
std::string slow_run() {
  return "train.steps=400 model.hidden_size=192 model.intermediate_size=512 "
         "model.num_hidden_layers=4 train.micro_batch_size=8 train.seq_len=128 checkpoint.every=0";
}

// Starts a run in the background, waits for `steps` logged steps, then runs `then` (shell;
// $pid is the run's), and prints "exit=N".
CommandResult run_then(const fs::path& dir, int steps, const std::string& then) {
  const std::string script = fmt::format(
      "{} > {}.log 2>&1 & pid=$!\n"
      "for i in $(seq 1 1200); do\n"
      "  [ \"$(grep -c '\"loss\"' {}/metrics.jsonl 2>/dev/null)\" -ge {} ] 2>/dev/null && break\n"
      "  sleep 0.05\n"
      "done\n"
      "{}\n"
      "wait $pid; echo \"exit=$?\"; cat {}.log\n",
      test::train_cmd(dir, slow_run()), dir.string(), dir.string(), steps, then, dir.string());
  std::ofstream(dir.string() + ".sh") << script;
  return test::run_command("timeout 300 bash " + dir.string() + ".sh");
}

TEST(CtrlC, FirstSigintSavesASecondExitsAtOnce) {
  const fs::path base = test::temp_dir("ctrl_c");
  const fs::path once = base / "once", twice = base / "twice";
  const CommandResult r = run_then(once, 2, "kill -INT $pid");
  EXPECT_HAS(r.output, "exit=0");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("stopped by SIGINT after step ([0-9]+)/400: saved")))
      << r.output;
  const fs::path saved = once / "checkpoints" / fmt::format("step-{:08d}.h5", std::stoll(m[1]));
  EXPECT_TRUE(fs::exists(saved)) << r.output;
  EXPECT_HAS(r.output, "Ctrl-C again to exit at once");
  // The second one: once the first has been taken (its message is out), before the step ends.
  const CommandResult r2 = run_then(
      twice, 2,
      "kill -INT $pid; for i in $(seq 1 200); do grep -q 'SIGINT: finishing' " + twice.string() +
          ".log && break; sleep 0.01; done; kill -INT $pid");
  EXPECT_HAS(r2.output, "exit=130");
  EXPECT_HAS(r2.output, "SIGINT again: exiting now, without a checkpoint");
  EXPECT_FALSE(fs::exists(twice / "checkpoints" / "latest")) << r2.output;
}

}  // namespace
}  // namespace temper
