// The trainer's checkpoint directory (train/checkpointing.h): file names, the `latest`
// pointer, keep-K pruning, which checkpoint a resume picks after a save was cut short
// at each point, stop signals and the test-only NaN injection's parser. The HDF5
// contents are not involved: the files here are stand-ins.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "support/test_util.h"
#include "train/checkpointing.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

using test::error_of;

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// What a save does before publish(): every rank writes the temp file.
void write_temp(const CheckpointDir& d, int64_t step) {
  fs::create_directories(d.path());
  std::ofstream(d.temp_for(step)) << "checkpoint of step " << step;
}

std::vector<int64_t> steps_of(const CheckpointDir& d) {
  std::vector<int64_t> v;
  for (const auto& e : d.complete()) v.push_back(e.step);
  return v;
}

TEST(CheckpointDir, NamesAndSteps) {
  const CheckpointDir d("runs/x");
  EXPECT_EQ(d.path(), fs::path("runs/x/checkpoints"));
  EXPECT_EQ(d.file_for(12), fs::path("runs/x/checkpoints/step-00000012.h5"));
  EXPECT_EQ(d.temp_for(12), fs::path("runs/x/checkpoints/step-00000012.h5.tmp"));
  EXPECT_EQ(checkpoint_step_of("step-00000012.h5"), 12);
  EXPECT_EQ(checkpoint_step_of("step-123456789.h5"), 123456789);
  for (const char* not_one : {"step-00000012.h5.tmp", "step-.h5", "step-12x.h5", "latest",
                              "step-00000012.h5~", "x-00000012.h5", "step--1.h5"})
    EXPECT_FALSE(checkpoint_step_of(not_one).has_value()) << not_one;
}

TEST(CheckpointDir, PublishMovesLatestAndKeepsTheNewestK) {
  const fs::path out = test::temp_dir("ckdir_publish");
  const CheckpointDir d(out);
  EXPECT_FALSE(d.resume_point().has_value());  // no directory yet
  for (int64_t step : {2, 4, 6, 8}) {
    write_temp(d, step);
    EXPECT_EQ(d.publish(step, 2), d.file_for(step));
    EXPECT_FALSE(fs::exists(d.temp_for(step)));
    EXPECT_EQ(read_text(d.latest_pointer()), d.file_for(step).filename().string() + "\n");
    EXPECT_EQ(read_text(d.file_for(step)), "checkpoint of step " + std::to_string(step));
  }
  EXPECT_EQ(steps_of(d), (std::vector<int64_t>{6, 8}));
  ASSERT_TRUE(d.resume_point().has_value());
  EXPECT_EQ(d.resume_point()->step, 8);
  EXPECT_FALSE(fs::exists(d.path() / "latest.tmp"));
}

TEST(CheckpointDir, ResumePointAfterASaveCutShort) {
  const fs::path out = test::temp_dir("ckdir_cut");
  const CheckpointDir d(out);
  write_temp(d, 3);
  d.publish(3, 5);
  // Died while writing step 6: only its temp file exists. Never a resume point.
  write_temp(d, 6);
  EXPECT_EQ(d.resume_point()->step, 3);
  d.remove_partial();
  EXPECT_FALSE(fs::exists(d.temp_for(6)));
  EXPECT_EQ(steps_of(d), (std::vector<int64_t>{3}));
  // Died between the rename and the pointer's move: `latest` still says 3, the newer
  // complete file wins.
  write_temp(d, 6);
  fs::rename(d.temp_for(6), d.file_for(6));
  EXPECT_EQ(read_text(d.latest_pointer()), "step-00000003.h5\n");
  EXPECT_EQ(d.resume_point()->step, 6);
  // A pointer naming a file that is gone, or garbage: the newest complete one.
  std::ofstream(d.latest_pointer()) << "step-00000099.h5\n";
  EXPECT_EQ(d.resume_point()->step, 6);
  std::ofstream(d.latest_pointer()) << "\x01\x02garbage";
  EXPECT_EQ(d.resume_point()->step, 6);
  // No pointer at all (died before the first pointer was written).
  fs::remove(d.latest_pointer());
  EXPECT_EQ(d.resume_point()->step, 6);
}

TEST(CheckpointDir, PublishFailureNamesTheFileAndKeepsWhatWasThere) {
  const fs::path out = test::temp_dir("ckdir_fail");
  const CheckpointDir d(out);
  write_temp(d, 1);
  d.publish(1, 3);
  // No temp file for step 2 (the write failed): publish fails, step 1 stays latest.
  const std::string msg = error_of([&] { d.publish(2, 3); });
  EXPECT_NE(msg.find("step-00000002.h5.tmp"), std::string::npos) << msg;
  EXPECT_EQ(d.resume_point()->step, 1);
  EXPECT_EQ(read_text(d.latest_pointer()), "step-00000001.h5\n");
  EXPECT_EQ(read_text(d.file_for(1)), "checkpoint of step 1");
}

TEST(StopSignals, RecordTheFirstSignalAndRestoreTheOldHandlers) {
  struct sigaction before {};
  sigaction(SIGUSR1, nullptr, &before);
  {
    StopSignals s;
    EXPECT_EQ(s.received(), 0);
    std::raise(SIGUSR1);  // would end the process without the handler
    EXPECT_EQ(s.received(), SIGUSR1);
    std::raise(SIGTERM);  // the first one stays
    EXPECT_EQ(s.received(), SIGUSR1);
    EXPECT_EQ(agree_on_stop(s.received(), nullptr), SIGUSR1);
  }
  struct sigaction after {};
  sigaction(SIGUSR1, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
  EXPECT_STREQ(signal_name(SIGTERM), "SIGTERM");
}

TEST(NonfiniteInjection, Parses) {
  NonfiniteInjection a = parse_nonfinite_injection("3,5-7");
  EXPECT_EQ(a.rank, -1);
  EXPECT_EQ(a.steps, (std::vector<int64_t>{3, 5, 6, 7}));
  EXPECT_TRUE(a.at(6, 0));
  EXPECT_TRUE(a.at(6, 3));
  EXPECT_FALSE(a.at(4, 0));
  NonfiniteInjection b = parse_nonfinite_injection("4@1");
  EXPECT_EQ(b.rank, 1);
  EXPECT_TRUE(b.at(4, 1));
  EXPECT_FALSE(b.at(4, 0));
  for (const char* bad : {"", "x", "3,", "7-5", "3@", "3@-1", "1-2-3"}) {
    const std::string msg = error_of([&] { parse_nonfinite_injection(bad); });
    EXPECT_NE(msg.find("TEMPER_TEST_NONFINITE"), std::string::npos) << bad << " -> " << msg;
  }
}

}  // namespace
}  // namespace temper
