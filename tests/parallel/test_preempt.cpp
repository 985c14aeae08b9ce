// Preemption and faults under mpirun. A stop request (SIGUSR1 to mpirun, which forwards
// it; SIGUSR1 to one rank only; SIGTERM to launch/temper-mpirun, which turns it into
// SIGUSR1 for mpirun; SIGTERM to every rank, as Slurm signals tasks) makes every rank
// finish the same step, save, and exit 0 with a message; the same command started again
// resumes from `latest` and ends with the uninterrupted run's losses and model, bit for
// bit. A NaN on one rank stops every rank after the same step.
#include <gtest/gtest.h>

#include <regex>

#include "e2e/checkpoint_test_util.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

using test::CommandResult;

// 2 ranks, data parallel with ZeRO-2; long enough that a signal sent after the second
// step arrives well before the end.
constexpr int64_t kSteps = 50;
std::string job_args() {
  return fmt::format("train.steps={} train.grad_accum=2 parallel.zero=2 parallel.timeout_s=120",
                     kSteps);
}

std::string mpirun_cmd(const fs::path& dir) {
  return fmt::format("{} mpirun -np 2 --oversubscribe --bind-to none {} {}", test::mpi_env(),
                     test::temper_bin(), test::train_args(dir, job_args()));
}

std::string wrapper_cmd(const fs::path& dir) {
  return fmt::format("OMP_NUM_THREADS=1 TEMPER_BIN={} bash {}/launch/temper-mpirun -n 2 -- {}",
                     test::temper_bin(), TEMPER_SOURCE_DIR, test::train_args(dir, job_args()));
}

// Starts `launch` in the background, waits until two steps are logged, runs `signal`
// (shell code; $pid is the launcher's pid), waits for the launcher and prints its status
// as "exit=N".
CommandResult run_and_signal(const std::string& launch, const fs::path& dir, const std::string& signal) {
  const std::string script = fmt::format(
      "{} & pid=$!\n"
      "for i in $(seq 1 1200); do\n"
      "  [ \"$(grep -c '\"loss\"' {}/metrics.jsonl 2>/dev/null)\" -ge 2 ] 2>/dev/null && break\n"
      "  sleep 0.05\n"
      "done\n"
      "{}\n"
      "wait $pid; echo \"exit=$?\"\n",
      launch, dir.string(), signal);
  const fs::path file = dir.parent_path() / (dir.filename().string() + ".sh");
  std::ofstream(file) << script;
  return test::run_command("timeout 300 bash " + file.string());
}

// The pids of the temper ranks below $pid (mpirun's children, or the wrapper's
// grandchildren), optionally only world rank R.
std::string ranks_of_pid(const std::string& only_rank = "") {
  const std::string filter = only_rank.empty() ? "" :
      fmt::format(" | while read p; do tr '\\0' '\\n' < /proc/$p/environ | grep -qx "
                  "OMPI_COMM_WORLD_RANK={} && echo $p; done", only_rank);
  return "$(pgrep -f '" + test::temper_bin() + "' | while read p; do "
         "[ \"$(ps -o ppid= -p $p | tr -d ' ')\" = \"$pid\" ] && echo $p; done" + filter + ")";
}

// What a stop must leave, and the resume that must follow.
void expect_stop_then_exact_resume(const CommandResult& r, const fs::path& dir,
                                   const fs::path& ref, const char* signal,
                                   const std::string& again) {
  ASSERT_NE(r.output.find("exit=0"), std::string::npos) << r.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex(std::string("stopped by ") + signal +
                                                        " after step ([0-9]+)/")))
      << r.output;
  const int64_t k = std::stoll(m[1]);
  EXPECT_GE(k, 2);
  ASSERT_LT(k, kSteps) << "the run ended before the signal";
  const fs::path saved = dir / "checkpoints" / fmt::format("step-{:08d}.h5", k);
  EXPECT_TRUE(fs::exists(saved)) << r.output;
  EXPECT_EQ(test::file_bytes(dir / "checkpoints" / "latest"), saved.filename().string() + "\n");
  EXPECT_EQ(test::step_losses(dir).size(), size_t(k));
  EXPECT_FALSE(fs::exists(dir / "final"));
  // Started again with the same command (a requeue).
  const CommandResult again_r = test::run_command("timeout 300 env " + again);
  ASSERT_EQ(again_r.status, 0) << again_r.output;
  EXPECT_NE(again_r.output.find("resuming from " + saved.string()), std::string::npos) << again_r.output;
  test::expect_same_losses(test::step_losses(dir), test::step_losses(ref), 1, kSteps, signal);
  EXPECT_TRUE(test::file_bytes(dir / "final" / "model.safetensors") ==
              test::file_bytes(ref / "final" / "model.safetensors"));
}

TEST(Preempt, SignalToMpirunOrToOneRank) {
  const fs::path ref = test::temp_dir("preempt_ref");
  ASSERT_EQ(test::run_command("timeout 300 env " + mpirun_cmd(ref)).status, 0);
  {
    SCOPED_TRACE("SIGUSR1 to mpirun");
    const fs::path dir = test::temp_dir("preempt_usr1");
    const CommandResult r = run_and_signal(mpirun_cmd(dir), dir, "kill -USR1 $pid");
    expect_stop_then_exact_resume(r, dir, ref, "SIGUSR1", mpirun_cmd(dir));
  }
  {
    SCOPED_TRACE("SIGUSR1 to rank 1 only");
    const fs::path dir = test::temp_dir("preempt_one_rank");
    const CommandResult r = run_and_signal(mpirun_cmd(dir), dir,
                                           "kill -USR1 " + ranks_of_pid("1"));
    expect_stop_then_exact_resume(r, dir, ref, "SIGUSR1", mpirun_cmd(dir));
  }
  {
    SCOPED_TRACE("SIGTERM to every rank");
    const fs::path dir = test::temp_dir("preempt_term_ranks");
    const CommandResult r = run_and_signal(mpirun_cmd(dir), dir, "kill -TERM " + ranks_of_pid());
    expect_stop_then_exact_resume(r, dir, ref, "SIGTERM", mpirun_cmd(dir));
  }
}

TEST(Preempt, SigtermToTheLaunchWrapper) {
  const fs::path ref = test::temp_dir("preempt_wrap_ref");
  ASSERT_EQ(test::run_command("timeout 300 env " + mpirun_cmd(ref)).status, 0);
  const fs::path dir = test::temp_dir("preempt_wrap");
  const CommandResult r = run_and_signal(wrapper_cmd(dir), dir, "kill -TERM $pid");
  expect_stop_then_exact_resume(r, dir, ref, "SIGUSR1", wrapper_cmd(dir));
}

// cluster/slurm/one-node.sbatch run as Slurm would, with stand-ins for srun (mpirun on
// 2 ranks: like srun it forwards SIGUSR1 to every task) and scontrol (logs its
// arguments): the warning signal to the batch shell (--signal=B:USR1) ends in a
// checkpoint, exit 0 and `scontrol requeue JOBID`; the requeued script resumes, finishes
// with the uninterrupted run's losses and does not requeue again.
TEST(Preempt, SlurmBatchScriptSavesAndRequeues) {
  const fs::path ref = test::temp_dir("preempt_slurm_ref");
  ASSERT_EQ(test::run_command("timeout 300 env " + mpirun_cmd(ref)).status, 0);
  const fs::path stubs = test::temp_dir("preempt_slurm_stubs");
  std::ofstream(stubs / "srun") << "#!/bin/bash\n"
                                   "while [[ \"$1\" == --* ]]; do shift; done\n"
                                   "exec mpirun -np 2 --oversubscribe --bind-to none \"$@\"\n";
  std::ofstream(stubs / "scontrol") << "#!/bin/bash\necho \"$@\" >> " << (stubs / "scontrol.log").string() << "\n";
  fs::permissions(stubs / "srun", fs::perms::owner_all);
  fs::permissions(stubs / "scontrol", fs::perms::owner_all);
  const fs::path dir = test::temp_dir("preempt_slurm");
  const std::string job = fmt::format(
      "env PATH={}:$PATH {} SLURM_JOB_ID=4242 SLURM_SUBMIT_DIR={} TEMPER_BIN={} bash "
      "{}/cluster/slurm/one-node.sbatch {} {}",
      stubs.string(), test::mpi_env(), TEMPER_SOURCE_DIR, test::temper_bin(), TEMPER_SOURCE_DIR,
      test::tiny_recipe(), test::train_overrides(dir, job_args()));
  const CommandResult r = run_and_signal(job, dir, "kill -USR1 $pid");
  EXPECT_EQ(test::file_bytes(stubs / "scontrol.log"), "requeue 4242\n") << r.output;
  expect_stop_then_exact_resume(r, dir, ref, "SIGUSR1", job);
  EXPECT_EQ(test::file_bytes(stubs / "scontrol.log"), "requeue 4242\n");  // not again
}

// A NaN in rank 3's weights only (tp 2 × dp 2) for steps 2 and 3: every rank skips both
// steps and, with max_nonfinite_steps=2, every rank stops after step 3 with the last good
// state saved; the job exits non-zero.
TEST(Preempt, NonfiniteOnOneRankStopsEveryRank) {
  const fs::path dir = test::temp_dir("preempt_nan");
  const std::string cmd = fmt::format(
      "{} TEMPER_TEST_NONFINITE=2-3@3 timeout 300 mpirun -np 4 --oversubscribe --bind-to none "
      "-x TEMPER_TEST_NONFINITE {} {}",
      test::mpi_env(), test::temper_bin(),
      test::train_args(dir, "train.steps=6 parallel.tp=2 parallel.zero=2 parallel.timeout_s=60 "
                            "train.max_nonfinite_steps=2"));
  const CommandResult r = test::run_command(cmd);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("2 steps in a row (steps 2-3)"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("timed out"), std::string::npos) << r.output;
  const auto lines = test::metric_lines(dir);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_TRUE(lines[1].value("skipped", false));
  EXPECT_TRUE(lines[2].value("skipped", false));
  EXPECT_EQ(test::file_bytes(dir / "checkpoints" / "latest"), "step-00000003.h5\n");
}

}  // namespace
}  // namespace temper
