// Slurm for real: the batch templates in cluster/slurm, submitted with sbatch as users do
// (from the repository root, with overrides on the command line) to the one-machine
// cluster that cluster/slurm/local-cluster.sh starts for these tests (ctest fixture
// slurm_cluster; SLURM_CONF comes from ctest). Ranks start under `srun --mpi=pmix`.
//  - tp 2 × dp 2 on four tasks gives the one-process losses, gradient norms and parameters;
//  - a preemption (scancel --signal=USR1 --batch) makes the job save, requeue itself,
//    resume on its own and end with the uninterrupted run's parameters, bit for bit;
//  - a rank killed mid-run fails the job, and the log names the rank.
#include <gtest/gtest.h>

#include <chrono>
#include <fmt/format.h>
#include <regex>
#include <thread>

#include "e2e/checkpoint_test_util.h"
#include "support/test_util.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

using test::CommandResult;

// Submits `script` (relative to cluster/slurm) with sbatch from the repository root; the
// job's log goes to DIR/job.out. Returns the job id.
std::string submit(const std::string& script, const fs::path& dir, const std::string& sbatch_args,
                   const std::string& train_args) {
  const std::string cmd = fmt::format(
      "cd {} && TEMPER_BIN={} sbatch --parsable --output={}/job.out {} cluster/slurm/{} {} {}",
      TEMPER_SOURCE_DIR, test::temper_bin(), dir.string(), sbatch_args, script,
      test::tiny_recipe(), test::train_overrides(dir, train_args));
  const CommandResult r = test::run_command(cmd);
  EXPECT_EQ(r.status, 0) << cmd << "\n" << r.output;
  std::smatch m;  // the output's first line is the command; the job id is the last line
  const std::string out = r.output;
  if (!std::regex_search(out, m, std::regex("\\n([0-9]+)\\s*$"))) {
    ADD_FAILURE() << "sbatch printed no job id: " << r.output;
    return "";
  }
  return m[1];
}

// A job's fields from `scontrol show job -o ID` (KEY=VALUE words).
struct JobInfo {
  std::string state, exit_code;
  int restarts = 0;
};

JobInfo job_info(const std::string& id) {
  const CommandResult r = test::run_command("scontrol show job -o " + id);
  JobInfo info;
  std::smatch m;
  if (std::regex_search(r.output, m, std::regex("JobState=([A-Z_]+)"))) info.state = m[1];
  if (std::regex_search(r.output, m, std::regex("ExitCode=([0-9:]+)"))) info.exit_code = m[1];
  if (std::regex_search(r.output, m, std::regex("Restarts=([0-9]+)"))) info.restarts = std::stoi(m[1]);
  return info;
}

bool finished(const std::string& state) {
  for (const char* s : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                        "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
    if (state == s) return true;
  return false;
}

// Polls `scontrol show job` (sbatch --wait polls slowly; there is no sacct here) until the
// job has finished, or `timeout_s` passed (then the job is cancelled and this fails).
JobInfo wait_for_job(const std::string& id, double timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  JobInfo info;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < timeout_s) {
    info = job_info(id);
    if (finished(info.state)) return info;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  test::run_command("scancel " + id);
  ADD_FAILURE() << "job " << id << " still " << info.state << " after " << timeout_s << " s";
  return info;
}

// Cancels the job when a test ends early, so that the next test finds the node free.
struct CancelOnExit {
  std::string id;
  ~CancelOnExit() {
    if (!id.empty() && !finished(job_info(id).state)) test::run_command("scancel " + id);
  }
};

// Waits until DIR/metrics.jsonl holds `steps` step lines (or 120 s passed).
bool wait_for_steps(const fs::path& dir, size_t steps) {
  for (int i = 0; i < 1200; ++i) {
    if (fs::exists(dir / "metrics.jsonl") && test::step_losses(dir).size() >= steps) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string mpirun(int ranks, const fs::path& dir, const std::string& args) {
  return fmt::format("timeout 300 env {} mpirun -np {} --oversubscribe --bind-to none {} {}",
                     test::mpi_env(), ranks, test::temper_bin(), test::train_args(dir, args));
}

// The template asks for 8 tasks of 12 CPUs; the test node has 16 CPUs (4 ranks here).
std::string tasks(int n) { return fmt::format("--ntasks-per-node={} --cpus-per-task=1", n); }

TEST(Slurm, OneNodeTemplateTp2Dp2MatchesOneProcess) {
  // The same global batch (16 sequences) on one process and on dp 2 × tp 2.
  const std::string args = "train.steps=5 train.global_batch_size=16 train.grad_accum=0 "
                           "parallel.timeout_s=120";
  const fs::path ref = test::temp_dir("slurm_ref");
  const CommandResult one = test::run_command(test::train_cmd(ref, args, "timeout 300"));
  ASSERT_EQ(one.status, 0) << one.output;

  const fs::path dir = test::temp_dir("slurm_tp2_dp2");
  CancelOnExit job{submit("one-node.sbatch", dir, tasks(4), args + " parallel.tp=2")};
  ASSERT_FALSE(job.id.empty());
  const JobInfo info = wait_for_job(job.id, 300);
  const std::string log = test::file_bytes(dir / "job.out");
  ASSERT_EQ(info.state, "COMPLETED") << log;
  EXPECT_EQ(info.exit_code, "0:0") << log;
  EXPECT_NE(log.find("dp=2 × tp=2"), std::string::npos) << log;
  EXPECT_NE(log.find("global batch: 16 sequences (2 dp × 2 accum × 4 rows)"), std::string::npos) << log;
  test::expect_same_training(dir, ref, 5, 1e-5, test::kLayoutGradNormBound, "slurm tp2 dp2");
}

TEST(Slurm, PreemptionSavesRequeuesAndResumesExactly) {
  // dp 2 with ZeRO-2, long enough that the signal lands well before the end.
  constexpr int64_t kSteps = 40;
  const std::string args = fmt::format(
      "train.steps={} train.grad_accum=2 parallel.zero=2 parallel.timeout_s=120", kSteps);
  const fs::path ref = test::temp_dir("slurm_preempt_ref");
  const CommandResult uninterrupted = test::run_command(mpirun(2, ref, args));
  ASSERT_EQ(uninterrupted.status, 0) << uninterrupted.output;

  const fs::path dir = test::temp_dir("slurm_preempt");
  CancelOnExit job{submit("one-node.sbatch", dir, tasks(2), args)};
  ASSERT_FALSE(job.id.empty());
  ASSERT_TRUE(wait_for_steps(dir, 2)) << test::file_bytes(dir / "job.out");
  // What Slurm sends before the time limit (--signal=B:USR1@120), sent now.
  const CommandResult sig = test::run_command("scancel --signal=USR1 --batch " + job.id);
  ASSERT_EQ(sig.status, 0) << sig.output;
  const JobInfo info = wait_for_job(job.id, 300);
  const std::string log = test::file_bytes(dir / "job.out");
  ASSERT_EQ(info.state, "COMPLETED") << log;
  EXPECT_EQ(info.restarts, 1) << log;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex("stopped by SIGUSR1 after step ([0-9]+)/"))) << log;
  const int64_t k = std::stoll(m[1]);
  EXPECT_LT(k, kSteps) << log;
  EXPECT_NE(log.find("requeueing job " + job.id), std::string::npos) << log;
  EXPECT_NE(log.find(fmt::format("resuming from {}/checkpoints/step-{:08d}.h5", dir.string(), k)),
            std::string::npos) << log;
  test::expect_same_losses(test::step_losses(dir), test::step_losses(ref), 1, kSteps, "requeued");
  EXPECT_TRUE(test::file_bytes(dir / "final" / "model.safetensors") ==
              test::file_bytes(ref / "final" / "model.safetensors"))
      << "the requeued run's parameters differ from the uninterrupted run's";
}

TEST(Slurm, AKilledRankFailsTheJobAndTheLogNamesIt) {
  const fs::path dir = test::temp_dir("slurm_dead_rank");
  CancelOnExit job{submit("one-node.sbatch", dir, tasks(2),
                          "train.steps=200 train.grad_accum=2 parallel.timeout_s=30")};
  ASSERT_FALSE(job.id.empty());
  ASSERT_TRUE(wait_for_steps(dir, 2)) << test::file_bytes(dir / "job.out");
  // Rank 1 dies as from the OOM killer or a hardware fault.
  const CommandResult kill = test::run_command(fmt::format(
      "for p in $(pgrep -f '{}'); do tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | "
      "grep -qx 'SLURM_JOB_ID={}' && tr '\\0' '\\n' < /proc/$p/environ | grep -qx "
      "SLURM_PROCID=1 && kill -KILL $p && echo killed $p; done",
      test::temper_bin(), job.id));
  ASSERT_NE(kill.output.find("killed"), std::string::npos) << kill.output;
  const JobInfo info = wait_for_job(job.id, 120);
  const std::string log = test::file_bytes(dir / "job.out");
  EXPECT_EQ(info.state, "FAILED") << log;
  EXPECT_NE(info.exit_code, "0:0") << log;
  EXPECT_TRUE(std::regex_search(log, std::regex("task 1: Killed"))) << log;
  EXPECT_EQ(info.restarts, 0) << "a failure must not requeue: " << log;
}

}  // namespace
}  // namespace temper
