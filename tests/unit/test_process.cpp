// detect_process() from fake launcher environments (Open MPI, Slurm, none), its errors,
// and pick_gpu(). No MPI is started here.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/process.h"

namespace temper {
namespace {

using Env = std::map<std::string, std::string>;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_error(const Env& env, const std::string& needle) {
  std::string e = error_of([&] { detect_process(env); });
  EXPECT_NE(e.find(needle), std::string::npos) << "got: " << e;
}

Env openmpi(int rank, int size, int local_rank, int local_size) {
  return {{"OMPI_COMM_WORLD_RANK", std::to_string(rank)},
          {"OMPI_COMM_WORLD_SIZE", std::to_string(size)},
          {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(local_rank)},
          {"OMPI_COMM_WORLD_LOCAL_SIZE", std::to_string(local_size)}};
}

Env slurm(int rank, int ntasks, int local_id, int node, const std::string& step_tasks) {
  return {{"SLURM_PROCID", std::to_string(rank)},
          {"SLURM_NTASKS", std::to_string(ntasks)},
          {"SLURM_LOCALID", std::to_string(local_id)},
          {"SLURM_NODEID", std::to_string(node)},
          {"SLURM_STEP_TASKS_PER_NODE", step_tasks}};
}

TEST(Process, NoLauncherIsOneProcess) {
  ProcessInfo p = detect_process(Env{});
  EXPECT_EQ(p.launcher, "none");
  EXPECT_EQ(p.rank, 0);
  EXPECT_EQ(p.world_size, 1);
  EXPECT_EQ(p.local_rank, 0);
  EXPECT_EQ(p.local_size, 1);
  EXPECT_EQ(p.node, 0);
  EXPECT_FALSE(p.hostname.empty());
}

TEST(Process, OpenMpi) {
  // 8 ranks, 4 per node: rank 6 is local rank 2 on node 1.
  ProcessInfo p = detect_process(openmpi(6, 8, 2, 4));
  EXPECT_EQ(p.launcher, "openmpi");
  EXPECT_EQ(p.rank, 6);
  EXPECT_EQ(p.world_size, 8);
  EXPECT_EQ(p.local_rank, 2);
  EXPECT_EQ(p.local_size, 4);
  EXPECT_EQ(p.node, 1);
  EXPECT_EQ(p.str(), "rank 6/8 (local 2/4, node 1, host " + p.hostname + ", openmpi)");
}

TEST(Process, Slurm) {
  // 7 tasks on 3 nodes laid out 3, 3, 1: task 4 is local 1 of 3 on node 1.
  ProcessInfo p = detect_process(slurm(4, 7, 1, 1, "3(x2),1"));
  EXPECT_EQ(p.launcher, "slurm");
  EXPECT_EQ(p.rank, 4);
  EXPECT_EQ(p.world_size, 7);
  EXPECT_EQ(p.local_rank, 1);
  EXPECT_EQ(p.local_size, 3);
  EXPECT_EQ(p.node, 1);
  p = detect_process(slurm(6, 7, 0, 2, "3(x2),1"));
  EXPECT_EQ(p.local_size, 1);
  EXPECT_EQ(p.node, 2);
  // Without the step's list, the job's is used.
  Env env = slurm(1, 2, 1, 0, "2");
  env.erase("SLURM_STEP_TASKS_PER_NODE");
  env["SLURM_TASKS_PER_NODE"] = "2";
  EXPECT_EQ(detect_process(env).local_size, 2);
}

TEST(Process, OpenMpiWinsOverInheritedSlurmVariables) {
  // mpirun inside an sbatch allocation: every rank inherits the batch step's SLURM_*.
  Env env = openmpi(3, 4, 3, 4);
  Env s = slurm(0, 1, 0, 0, "1");
  env.insert(s.begin(), s.end());
  ProcessInfo p = detect_process(env);
  EXPECT_EQ(p.launcher, "openmpi");
  EXPECT_EQ(p.rank, 3);
  EXPECT_EQ(p.world_size, 4);
}

TEST(Process, InconsistentOpenMpiVariables) {
  expect_error(openmpi(4, 4, 0, 4), "rank 4 is not below world size 4");
  expect_error(openmpi(1, 4, 2, 2), "local rank 2 is not below local size 2 (rank 1)");
  expect_error(openmpi(1, 2, 1, 4), "local size 4 exceeds world size 2");
  expect_error(openmpi(0, 0, 0, 1), "world size 0 < 1");
  Env env = openmpi(1, 4, 1, 4);
  env.erase("OMPI_COMM_WORLD_LOCAL_RANK");
  expect_error(env, "OMPI_COMM_WORLD_RANK is set (an Open MPI (mpirun) launch) but "
                    "OMPI_COMM_WORLD_LOCAL_RANK is not");
  env = openmpi(1, 4, 1, 4);
  env["OMPI_COMM_WORLD_SIZE"] = "four";
  expect_error(env, "OMPI_COMM_WORLD_SIZE='four' is not a non-negative integer");
  env["OMPI_COMM_WORLD_SIZE"] = "-2";
  expect_error(env, "OMPI_COMM_WORLD_SIZE='-2' is not a non-negative integer");
  env["OMPI_COMM_WORLD_SIZE"] = "";
  expect_error(env, "OMPI_COMM_WORLD_SIZE='' is not a non-negative integer");
}

TEST(Process, InconsistentSlurmVariables) {
  expect_error(slurm(2, 2, 0, 1, "1(x2)"), "rank 2 is not below world size 2");
  expect_error(slurm(1, 4, 2, 0, "2(x2)"), "local rank 2 is not below local size 2");
  expect_error(slurm(1, 4, 0, 2, "2(x2)"), "SLURM_NODEID=2 but SLURM_STEP_TASKS_PER_NODE='2(x2)' "
                                           "lists 2 node(s)");
  expect_error(slurm(1, 5, 1, 0, "2(x2)"),
               "SLURM_NTASKS=5 but SLURM_STEP_TASKS_PER_NODE='2(x2)' adds up to 4");
  expect_error(slurm(0, 2, 0, 0, "2(x"), "is not a Slurm tasks-per-node list");
  expect_error(slurm(0, 2, 0, 0, "two"), "is not a Slurm tasks-per-node list");
  Env env = slurm(0, 2, 0, 0, "2");
  env.erase("SLURM_NODEID");
  expect_error(env, "but SLURM_NODEID is not");
  env = slurm(0, 2, 0, 0, "2");
  env.erase("SLURM_STEP_TASKS_PER_NODE");
  expect_error(env, "neither SLURM_STEP_TASKS_PER_NODE nor SLURM_TASKS_PER_NODE");
  env = slurm(0, 4, 0, 0, "2(x2)");
  env["SLURM_STEP_NUM_NODES"] = "3";
  expect_error(env, "lists 2 node(s) but SLURM_STEP_NUM_NODES=3");
}

// The real environment, through setenv (restored afterwards).
TEST(Process, FromTheProcessEnvironment) {
  const std::vector<std::string> names = {
      "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
      "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_PROCID"};
  std::map<std::string, std::optional<std::string>> saved;
  for (const auto& n : names) {
    const char* v = std::getenv(n.c_str());
    saved[n] = v ? std::optional<std::string>(v) : std::nullopt;
    unsetenv(n.c_str());
  }
  setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
  ProcessInfo p;
  std::string e;
  try {
    p = detect_process();
  } catch (const Error& err) {
    e = err.what();
  }
  for (const auto& [n, v] : saved) {
    if (v)
      setenv(n.c_str(), v->c_str(), 1);
    else
      unsetenv(n.c_str());
  }
  ASSERT_EQ(e, "");
  EXPECT_EQ(p.launcher, "openmpi");
  EXPECT_EQ(p.rank, 1);
  EXPECT_EQ(p.world_size, 2);
  EXPECT_EQ(p.local_rank, 1);
  EXPECT_EQ(p.local_size, 2);
}

// Every GPU visible (mpirun, srun --gpus-per-node): the local rank's own. Slurm's per-task
// binding (--gpus-per-task=1) shows each task one GPU: device 0 of its own set, whatever
// its local rank (it failed as "no GPU of its own" before).
TEST(Process, PickGpuIsTheLocalRankModuloTheVisibleCount) {
  ProcessInfo p = detect_process(openmpi(6, 8, 2, 4));
  EXPECT_EQ(pick_gpu(p, 4), 2);
  EXPECT_EQ(pick_gpu(p, 8), 2);
  EXPECT_EQ(pick_gpu(p, 1), 0);
  EXPECT_EQ(pick_gpu(p, 2), 0);
  ProcessInfo task3 = detect_process(std::map<std::string, std::string>{
      {"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "3"},
      {"SLURM_NODEID", "0"}, {"SLURM_STEP_TASKS_PER_NODE", "4"}});
  EXPECT_EQ(pick_gpu(task3, 1), 0);
  EXPECT_EQ(pick_gpu(task3, 4), 3);
  const std::string e = error_of([&] { pick_gpu(p, 0); });
  EXPECT_NE(e.find("rank 6 (local rank 2 on host"), std::string::npos) << e;
  EXPECT_NE(e.find("no CUDA device is visible"), std::string::npos) << e;
}

}  // namespace
}  // namespace temper
