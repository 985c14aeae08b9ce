// Checkpoints under faults, through the `temper` binary, one process: SIGKILL at every
// point of a save and at random moments never damages a complete checkpoint and the run
// always resumes from the newest complete one to the uninterrupted run's exact losses;
// truncated, corrupted and wrong-shape checkpoints and a full disk are clear errors that
// leave the existing checkpoints as they were.
#include <gtest/gtest.h>

#include <sys/mount.h>

#include <cstdio>
#include <random>

#include "checkpoint/checkpoint.h"
#include "e2e/checkpoint_test_util.h"
#include "train/checkpointing.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

using test::CommandResult;

CommandResult train(const fs::path& dir, const std::string& args, const std::string& prefix = "") {
  return test::run_command(test::train_cmd(dir, args, prefix));
}

// What must hold in a run directory whatever moment the run died at: every complete
// checkpoint reads back with verified checksums and the step its name says, is byte for
// byte what it was when first seen, and `latest` (when present) names one of them.
void expect_intact(const fs::path& dir, std::map<std::string, std::string>& seen) {
  const CheckpointDir d(dir);
  for (const auto& e : d.complete()) {
    const std::string name = e.path.filename();
    EXPECT_NO_THROW(describe_checkpoint(e.path.string(), true)) << name;
    EXPECT_EQ(read_checkpoint_meta(e.path.string()).step, e.step) << name;
    const std::string bytes = test::file_bytes(e.path);
    auto [it, fresh] = seen.emplace(name, bytes);
    if (!fresh) EXPECT_TRUE(it->second == bytes) << name << " changed after it was complete";
  }
  if (fs::exists(d.latest_pointer())) {
    std::string named = test::file_bytes(d.latest_pointer());
    ASSERT_FALSE(named.empty());
    named.pop_back();  // '\n'
    EXPECT_TRUE(fs::exists(d.path() / named)) << "latest names " << named;
  }
}

constexpr const char* kArgs = "train.steps=12 checkpoint.every=1 checkpoint.keep=3";

TEST(CheckpointFaults, SigkillAtEveryPointOfASave) {
  const fs::path ref_dir = test::temp_dir("fault_ref");
  ASSERT_EQ(train(ref_dir, kArgs).status, 0);
  const auto ref = test::step_losses(ref_dir);
  const std::string ref_final = test::file_bytes(ref_dir / "final" / "model.safetensors");
  // Killed in the save of step 5 (the save of step 5 also prunes step 2): the newest
  // complete checkpoint afterwards.
  for (const auto& [phase, newest] : {std::pair{"temp-written", 4}, std::pair{"renamed", 5},
                                      std::pair{"pointer-temp-written", 5},
                                      std::pair{"pointer-moved", 5}, std::pair{"pruned-one", 5}}) {
    SCOPED_TRACE(phase);
    const fs::path dir = test::temp_dir(std::string("fault_") + phase);
    std::map<std::string, std::string> seen;
    CommandResult r = train(dir, kArgs, fmt::format("TEMPER_TEST_KILL_IN_SAVE={}@5", phase));
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_EQ(test::metric_lines(dir).size(), 5u);
    expect_intact(dir, seen);
    ASSERT_TRUE(CheckpointDir(dir).resume_point().has_value());
    EXPECT_EQ(CheckpointDir(dir).resume_point()->step, newest);
    r = train(dir, kArgs);  // the same command again
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find(fmt::format("resuming from {}", CheckpointDir(dir).file_for(newest).string())),
              std::string::npos) << r.output;
    expect_intact(dir, seen);
    test::expect_same_losses(test::step_losses(dir), ref, 1, 12, phase);
    EXPECT_TRUE(test::file_bytes(dir / "final" / "model.safetensors") == ref_final);
    EXPECT_FALSE(fs::exists(CheckpointDir(dir).temp_for(5)));
  }
}

// SIGKILL at random moments, the same command started again each time, until the run
// finishes; then the same in a fresh directory, until enough kills have landed. Every
// other attempt aims at a save: it waits for a temp file to appear, then a random 0-30 ms
// (inside the write, the renames, the pruning, the next step); the others die after a
// random delay anywhere in the run, startup included.
TEST(CheckpointFaults, SigkillAtRandomMomentsThenResume) {
  constexpr const char* kLongArgs = "train.steps=40 checkpoint.every=1 checkpoint.keep=3";
  const fs::path ref_dir = test::temp_dir("fault_random_ref");
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(train(ref_dir, kLongArgs).status, 0);
  const double full_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto ref = test::step_losses(ref_dir);
  const std::string ref_final = test::file_bytes(ref_dir / "final" / "model.safetensors");

  std::mt19937 rng(20240607);
  std::uniform_real_distribution<double> in_save(0.0, 0.03), anywhere(0.02, full_s / 4);
  int kills = 0, in_save_kills = 0, round = 0;
  fs::path dir = test::temp_dir("fault_random_0");
  std::map<std::string, std::string> seen;
  auto finish_round = [&] {
    test::expect_same_losses(test::step_losses(dir), ref, 1, 40, dir.string());
    EXPECT_TRUE(test::file_bytes(dir / "final" / "model.safetensors") == ref_final) << dir;
    dir = test::temp_dir(fmt::format("fault_random_{}", ++round));
    seen.clear();
  };
  for (int attempt = 0; attempt < 80 && (kills < 16 || in_save_kills < 8); ++attempt) {
    const bool aim = attempt % 2 == 0;
    const std::string wait_then_kill =
        aim ? fmt::format("while kill -0 $pid 2>/dev/null && ! compgen -G '{}/checkpoints/*.tmp' "
                          ">/dev/null; do :; done; sleep {:.4f}",
                          dir.string(), in_save(rng))
            : fmt::format("sleep {:.3f}", anywhere(rng));
    const fs::path script = dir.parent_path() / (dir.filename().string() + ".sh");
    std::ofstream(script) << test::train_cmd(dir, kLongArgs) << " & pid=$!\n"
                          << wait_then_kill << "\nkill -KILL $pid 2>/dev/null\n"
                          << "wait $pid; echo \"exit=$?\"\n"
                          << "compgen -G '" << dir.string() << "/checkpoints/*.tmp' >/dev/null "
                          << "&& echo 'killed in a save'\n";
    // The newest complete checkpoint: the one this attempt must resume from.
    const auto complete = CheckpointDir(dir).complete();
    const CommandResult r = test::run_command("timeout 120 bash " + script.string());
    if (!complete.empty() && r.output.find("resuming from") != std::string::npos)
      EXPECT_NE(r.output.find("resuming from " + complete.back().path.string()), std::string::npos)
          << r.output;
    const bool done = r.output.find("exit=0") != std::string::npos;
    if (!done) {
      ASSERT_NE(r.output.find("exit=137"), std::string::npos) << r.output;
      ++kills;
      if (r.output.find("killed in a save") != std::string::npos) ++in_save_kills;
    }
    expect_intact(dir, seen);
    if (HasFailure()) FAIL() << "after attempt " << attempt << ":\n" << r.output;
    if (done) finish_round();
  }
  std::printf("%d kills, %d of them inside a save, %d runs finished\n", kills, in_save_kills, round);
  EXPECT_GE(kills, 16);
  EXPECT_GE(in_save_kills, 8) << "too few kills landed inside a save";
  // The run in progress, to its end.
  ASSERT_EQ(train(dir, kLongArgs).status, 0);
  expect_intact(dir, seen);
  finish_round();
}

void damage(const fs::path& p, bool truncate) {
  if (truncate) {
    fs::resize_file(p, fs::file_size(p) / 2);
    return;
  }
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(std::streamoff(fs::file_size(p) * 7 / 10));
  f << std::string(256, '\x5a');
}

TEST(CheckpointFaults, DamagedOrForeignCheckpointsAreClearErrors) {
  const fs::path base = test::temp_dir("fault_bad_base");
  ASSERT_EQ(train(base, "train.steps=4 checkpoint.every=2").status, 0);
  const CheckpointDir good(base);
  const fs::path bad = test::temp_dir("fault_bad");
  for (const bool truncate : {true, false}) {
    const fs::path copy = bad / (truncate ? "truncated.h5" : "corrupted.h5");
    fs::copy_file(good.file_for(4), copy);
    damage(copy, truncate);
    CommandResult r = train(bad / "run", "train.steps=6 checkpoint.load=" + copy.string());
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find("cannot start from checkpoint.load=" + copy.string()), std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find(truncate ? "truncated" : "checksum"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("internal error"), std::string::npos) << r.output;
  }
  // Another model shape: the tensor that differs is named.
  CommandResult r = train(bad / "wide", "train.steps=6 model.hidden_size=96 checkpoint.load=" +
                                            good.file_for(4).string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("model.embed_tokens.weight"), std::string::npos) << r.output;

  // The run's own newest checkpoint damaged: a clear error saying what to do; nothing
  // in the directory is touched (the older checkpoint stays, the damaged one too).
  const fs::path own = test::temp_dir("fault_bad_own");
  fs::copy(base, own, fs::copy_options::recursive);
  const CheckpointDir d(own);
  damage(d.file_for(4), true);
  const std::string before2 = test::file_bytes(d.file_for(2)), before4 = test::file_bytes(d.file_for(4));
  r = train(own, "train.steps=6 checkpoint.every=2");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("cannot resume from " + d.file_for(4).string()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("checkpoint.load=PATH"), std::string::npos) << r.output;
  EXPECT_TRUE(test::file_bytes(d.file_for(2)) == before2);
  EXPECT_TRUE(test::file_bytes(d.file_for(4)) == before4);
}

// A save that runs out of space: exit 1 naming the file, the temp file removed, the
// earlier checkpoint and `latest` as they were; with space again the run resumes.
// A constant schedule: the run resumes longer as it was going (resume_check.h).
const std::string kSchedule = "optim.schedule=constant ";

void expect_full_disk_handled(const fs::path& dir, const std::string& limited_prefix) {
  ASSERT_EQ(train(dir, kSchedule + "train.steps=2 checkpoint.every=2").status, 0);
  const CheckpointDir d(dir);
  const std::string before = test::file_bytes(d.file_for(2));
  CommandResult r = train(dir, kSchedule + "train.steps=4 checkpoint.every=2", limited_prefix);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("saving the checkpoint of step 4 failed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step-00000004.h5.tmp"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("earlier checkpoints are untouched"), std::string::npos) << r.output;
  EXPECT_TRUE(test::file_bytes(d.file_for(2)) == before);
  EXPECT_EQ(test::file_bytes(d.latest_pointer()), "step-00000002.h5\n");
  EXPECT_FALSE(fs::exists(d.temp_for(4)));
  EXPECT_FALSE(fs::exists(d.file_for(4)));
}

TEST(CheckpointFaults, FullDiskDuringASave_FileSizeLimit) {
  const fs::path dir = test::temp_dir("fault_fsize");
  // Files may not grow past half a checkpoint (RLIMIT_FSIZE; SIGXFSZ ignored so the
  // write fails with EFBIG instead of killing the process).
  ASSERT_EQ(train(dir, "train.steps=1 checkpoint.every=1").status, 0);
  const uintmax_t limit_kib = fs::file_size(CheckpointDir(dir).file_for(1)) / 2048;
  fs::remove_all(dir);
  expect_full_disk_handled(dir, fmt::format("ulimit -f {}; trap '' XFSZ;", limit_kib));
  CommandResult r = train(dir, kSchedule + "train.steps=4 checkpoint.every=2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from"), std::string::npos) << r.output;
}

// The same on a real small file system (tmpfs, ENOSPC). Mounting needs root (CI runs as
// root); elsewhere this case reports that it cannot mount and is skipped.
TEST(CheckpointFaults, FullDiskDuringASave_SmallTmpfs) {
  const fs::path probe = test::temp_dir("fault_tmpfs_probe");
  ASSERT_EQ(train(probe, "train.steps=1 checkpoint.every=1").status, 0);
  const uintmax_t ckpt = fs::file_size(CheckpointDir(probe).file_for(1));
  const fs::path mnt = test::temp_dir("fault_tmpfs");
  // Room for one checkpoint, the final model and the logs, not for a second checkpoint.
  const std::string opts = fmt::format("size={}k", (ckpt + ckpt / 2) / 1024);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, opts.c_str()) != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << "); the "
                 << "file-size-limit case covers the same path";
  struct Unmount {
    fs::path at;
    ~Unmount() { ::umount(at.c_str()); }
  } unmount{mnt};
  expect_full_disk_handled(mnt / "run", "");
}

}  // namespace
}  // namespace temper
