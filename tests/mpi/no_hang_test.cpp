// No-hang tests: a plain (single-process) gtest binary that runs temper_mpi_probe under
// mpirun and checks the exit code and the wall time. A stalled rank must be reported by
// the others within the communicator timeout (naming the rank and "all_reduce") and the
// job must end; a rank killed mid-run must take the job down promptly. `timeout -s KILL`
// bounds every run at 60 s, so a regression fails here instead of hanging ctest.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include <fmt/format.h>

namespace {

struct ProbeRun {
  int exit_code = -1;  // mpirun's (128 + signal when a rank was killed), or 137 at the limit
  double seconds = 0;
  std::string output;
};

constexpr double kHardLimitS = 60;

ProbeRun run_probe(int np, const std::string& mode, double timeout_s) {
  std::string cmd = fmt::format(
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -s KILL {:g} "
      "'{}' --oversubscribe --bind-to none -np {} '{}' {} {:g} 2>&1",
      kHardLimitS, TEMPER_MPIEXEC, np, TEMPER_MPI_PROBE, mode, timeout_s);
  ProbeRun run;
  auto start = std::chrono::steady_clock::now();
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) {
    run.output = "popen failed: " + cmd;
    return run;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) run.output.append(buf, n);
  int status = pclose(pipe);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (WIFEXITED(status))
    run.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    run.exit_code = 128 + WTERMSIG(status);
  std::cout << fmt::format("[probe {} -np {}] exit {} after {:.2f} s\n", mode, np, run.exit_code,
                           run.seconds);
  return run;
}

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

TEST(NoHang, ProbeSucceedsWhenEveryRankTakesPart) {
  ProbeRun run = run_probe(2, "ok", 3);
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(contains(run.output, "probe ok: 2 ranks done")) << run.output;
  EXPECT_LT(run.seconds, 20) << run.output;
}

// Rank 1 skips the all-reduce and stalls; rank 0 waits 3 s, then reports and aborts.
TEST(NoHang, StalledRankIsReportedWithinTheTimeout) {
  ProbeRun run = run_probe(2, "skip", 3);
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_TRUE(contains(run.output,
                       "rank 0 (world rank 0): all_reduce on group 'world' did not complete "
                       "within 3 s — a rank may have died or stalled"))
      << run.output;
  EXPECT_GE(run.seconds, 3.0) << run.output;
  EXPECT_LT(run.seconds, 15.0) << run.output;  // timeout + launch and teardown
}

// Rank 1 dies with SIGKILL after two all-reduces. With a long communicator timeout
// (30 s), a quick end shows the launcher, not the watchdog, stopped the other ranks.
TEST(NoHang, KilledRankEndsTheJobPromptly) {
  ProbeRun run = run_probe(3, "kill", 30);
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_LT(run.seconds, 15.0) << run.output;
  EXPECT_TRUE(contains(run.output, "rank 1") && contains(run.output, "signal 9")) << run.output;
  EXPECT_FALSE(contains(run.output, "did not complete")) << run.output;
  EXPECT_FALSE(contains(run.output, "probe kill: 3 ranks done")) << run.output;
}

// The same with a short timeout: whichever comes first (launcher or watchdog), every
// surviving rank is gone within about the timeout.
TEST(NoHang, KilledRankWithShortTimeout) {
  ProbeRun run = run_probe(4, "kill", 3);
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_LT(run.seconds, 3.0 + 8.0) << run.output;
}

}  // namespace
