// Where this process sits in the job, read from the launcher's environment before MPI
// starts: Open MPI's mpirun (OMPI_COMM_WORLD_*), Slurm's srun (SLURM_*), or neither (a
// single process). mpirun takes precedence: inside an sbatch allocation the SLURM_*
// variables of the batch step are inherited by every rank mpirun starts, and are stale.
#pragma once
#include <functional>
#include <map>
#include <string>

namespace temper {

struct ProcessInfo {
  int rank = 0;         // world rank
  int world_size = 1;
  int local_rank = 0;   // rank among this job's processes on this node
  int local_size = 1;   // this job's processes on this node
  int node = 0;         // node index, 0-based
  std::string hostname;
  std::string launcher = "none";  // "openmpi", "slurm" or "none"

  std::string str() const;  // "rank 2/4 (local 0/2, node 1, host gpu-b, openmpi)"
};

// Looks a variable up; nullptr when unset.
using EnvLookup = std::function<const char*(const char*)>;

// From the process environment (std::getenv).
ProcessInfo detect_process();
// From `env` (tests, and callers that build the environment themselves). Throws
// temper::Error naming the variables when they are missing, not integers, or
// inconsistent (rank >= size, local rank >= local size, more local than world ranks...).
//
// Node index: Slurm gives it (SLURM_NODEID). Open MPI does not; it is rank / local_size,
// which holds for mpirun's default by-slot placement with the same number of ranks per
// node (always 0 on one node). Local size under Slurm comes from SLURM_STEP_TASKS_PER_NODE
// (or SLURM_TASKS_PER_NODE), e.g. "4(x2),2".
ProcessInfo detect_process(const EnvLookup& env);
// Same, from a map (unit tests).
ProcessInfo detect_process(const std::map<std::string, std::string>& env);

// The GPU this process drives, among those it can see: local rank modulo the visible
// count. Every GPU visible (mpirun, srun --gpus-per-node): the local rank's own GPU. Slurm's
// per-task binding (--gpus-per-task=1, or CUDA_VISIBLE_DEVICES set per rank): each rank
// sees its own one GPU, device 0. Throws temper::Error naming the rank when none is visible.
int pick_gpu(const ProcessInfo& info, int visible_gpus);

}  // namespace temper
