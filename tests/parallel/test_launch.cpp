// launch/temper-mpirun: the checks that save a cluster job from a confusing failure, a real
// two-rank run through it, its log when the output goes to a file (as under plain mpirun),
// and Ctrl-C.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fmt/format.h>
#include <fstream>
#include <thread>

#include "e2e/checkpoint_test_util.h"
#include "support/test_util.h"

namespace fs = std::filesystem;

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

// --tp is parallel.tp, passed on to train / bench and checked first; without it an override
// parallel.tp is what the rank count must fit.
TEST(Launch, TpIsParallelTp) {
  Result r = launch("-n 4 --tp 2 --dry-run -- train x.yaml out_dir=a");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("train x.yaml out_dir=a parallel.tp=2"), std::string::npos) << r.output;
  r = launch("-n 4 --tp 2 -- train x.yaml parallel.tp=4");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--tp 2 disagrees with the override parallel.tp=4"), std::string::npos) << r.output;
  r = launch("-n 3 -- train x.yaml parallel.tp=2");
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

// Output to a file: OpenMPI hands every rank a pty all the same, so isatty() says
// "terminal"; rank 0 must still write plain lines (no \r progress bar), every log_every
// steps, whether mpirun's own stdout or the wrapper's goes to the file.
TEST(Launch, LogsToAFileArePlainLines) {
  const auto dir = test::temp_dir("launch_logs");
  const std::string args = fmt::format("train {} train.steps=6 train.eval_every=0 train.log_every=2",
                                       test::tiny_recipe());
  const std::string mpirun = fmt::format(
      "{} mpirun -np 2 --oversubscribe --bind-to none {} {} out_dir={} > {} 2>&1", test::mpi_env(),
      test::temper_bin(), args, (dir / "a").string(), (dir / "mpirun.log").string());
  const std::string wrapper = fmt::format(
      "OMP_NUM_THREADS=1 TEMPER_BIN={} bash {}/launch/temper-mpirun -n 2 -- {} out_dir={} > {} 2>&1",
      test::temper_bin(), TEMPER_SOURCE_DIR, args, (dir / "b").string(), (dir / "wrapper.log").string());
  for (const auto& [cmd, log] : {std::pair{mpirun, dir / "mpirun.log"}, std::pair{wrapper, dir / "wrapper.log"}}) {
    ASSERT_EQ(test::run_command(cmd).status, 0) << test::file_bytes(log);
    const std::string text = test::file_bytes(log);
    EXPECT_EQ(text.find('\r'), std::string::npos) << log << ": a progress bar in a log file:\n" << text;
    for (int step : {2, 4, 6})
      EXPECT_NE(text.find(fmt::format("info: step {:>6}/6 | loss", step)), std::string::npos) << text;
    EXPECT_EQ(text.find("info: step      3/6"), std::string::npos) << text;  // log_every=2
  }
}

// `bash -c command` as a terminal's foreground job would run it: a session and process
// group of its own, SIGINT at its default (a shell's background job would ignore it).
pid_t start_foreground_job(const std::string& command) {
  const pid_t pid = fork();
  if (pid == 0) {
    setsid();
    signal(SIGINT, SIG_DFL);
    execl("/bin/bash", "bash", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Ctrl-C on a terminal is SIGINT to the foreground process group. Through the wrapper the
// first one makes every rank finish its step, save and exit 0; a second one ends the job
// at once, without a checkpoint.
TEST(Launch, CtrlCSavesAndASecondOneStopsAtOnce) {
  const auto dir = test::temp_dir("launch_ctrl_c");
  for (int presses : {1, 2}) {
    const auto out = dir / fmt::format("run{}", presses);
    const auto log = dir / fmt::format("run{}.log", presses);
    const pid_t job = start_foreground_job(fmt::format(
        "OMP_NUM_THREADS=1 TEMPER_BIN={} exec bash {}/launch/temper-mpirun -n 2 -- {} > {} 2>&1",
        test::temper_bin(), TEMPER_SOURCE_DIR,
        test::train_args(out, "train.steps=400 model.hidden_size=192 model.intermediate_size=512 "
                              "model.num_hidden_layers=4 train.micro_batch_size=8 train.seq_len=128"),
        log.string()));
    ASSERT_GT(job, 0);
    for (int i = 0; i < 1200 && test::step_losses(out).size() < 2; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_GE(test::step_losses(out).size(), 2u) << test::file_bytes(log);
    kill(-job, SIGINT);
    if (presses == 2) {
      for (int i = 0; i < 200 && test::file_bytes(log).find("Forwarding signal 10") == std::string::npos; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      kill(-job, SIGINT);
    }
    int status = 0;
    ASSERT_EQ(waitpid(job, &status, 0), job);
    const std::string text = test::file_bytes(log);
    ASSERT_TRUE(WIFEXITED(status)) << text;
    if (presses == 1) {
      EXPECT_EQ(WEXITSTATUS(status), 0) << text;
      EXPECT_NE(text.find("stopped by SIGUSR1 after step"), std::string::npos) << text;
      EXPECT_TRUE(fs::exists(out / "checkpoints" / "latest")) << text;
    } else {
      EXPECT_NE(WEXITSTATUS(status), 0) << text;
      EXPECT_NE(text.find("exiting now, without a checkpoint"), std::string::npos) << text;
      EXPECT_FALSE(fs::exists(out / "checkpoints" / "latest")) << text;
    }
  }
}

// Slurm creates no directory for --output / --error: a job whose log directory is missing
// fails before it starts, with nothing to read. Submitted from the repository root as the
// docs say, every template's log path must be in a directory that exists there.
TEST(SlurmTemplates, LogFilesGoWhereADirectoryExists) {
  const fs::path root = TEMPER_SOURCE_DIR;
  int templates = 0;
  for (const auto& e : fs::directory_iterator(root / "cluster" / "slurm")) {
    if (e.path().extension() != ".sbatch") continue;
    ++templates;
    std::ifstream in(e.path());
    int logs = 0;
    for (std::string line; std::getline(in, line);) {
      for (const char* key : {"#SBATCH --output=", "#SBATCH --error="}) {
        if (line.rfind(key, 0) != 0) continue;
        ++logs;
        const fs::path log = line.substr(std::string(key).size());
        const fs::path parent = log.parent_path();
        EXPECT_TRUE(parent.empty() || fs::is_directory(root / parent))
            << e.path() << ": " << line << ": no directory " << parent << " in the repository";
      }
    }
    EXPECT_EQ(logs, 1) << e.path() << " should set --output";
  }
  EXPECT_EQ(templates, 2);
}

}  // namespace
}  // namespace temper
