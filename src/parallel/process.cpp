#include "parallel/process.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace temper {
namespace {

std::string this_hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  return buf;
}

// A non-negative integer variable, or nullopt when unset.
std::optional<int> int_var(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  if (!v) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || errno != 0 || x < 0 || x > INT_MAX)
    fail("launcher environment: {}='{}' is not a non-negative integer", name, v);
  return int(x);
}

int required(const EnvLookup& env, const char* name, const char* launcher, const char* seen) {
  auto v = int_var(env, name);
  if (!v)
    fail("launcher environment: {} is set ({} launch) but {} is not; start the job with the "
         "launcher itself rather than copying its variables",
         seen, launcher, name);
  return *v;
}

// "4(x2),2,3" -> {4, 4, 2, 3}: Slurm's compressed tasks-per-node list, one entry per node.
std::vector<int> parse_tasks_per_node(const char* name, const std::string& s) {
  std::vector<int> out;
  size_t i = 0;
  auto bad = [&]() -> void {
    fail("launcher environment: {}='{}' is not a Slurm tasks-per-node list like '4(x2),2'",
         name, s);
  };
  while (i < s.size()) {
    size_t j = i;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
    if (j == i) bad();
    int n = std::stoi(s.substr(i, j - i));
    int repeat = 1;
    if (j < s.size() && s[j] == '(') {
      if (j + 2 >= s.size() || s[j + 1] != 'x') bad();
      size_t k = j + 2, m = k;
      while (m < s.size() && std::isdigit(static_cast<unsigned char>(s[m]))) ++m;
      if (m == k || m >= s.size() || s[m] != ')') bad();
      repeat = std::stoi(s.substr(k, m - k));
      j = m + 1;
    }
    for (int r = 0; r < repeat; ++r) out.push_back(n);
    if (j < s.size()) {
      if (s[j] != ',') bad();
      ++j;
    }
    i = j;
  }
  if (out.empty()) bad();
  return out;
}

void check_consistent(const ProcessInfo& p, const char* vars) {
  if (p.world_size < 1) fail("launcher environment ({}): world size {} < 1", vars, p.world_size);
  if (p.rank >= p.world_size)
    fail("launcher environment ({}): rank {} is not below world size {}", vars, p.rank,
         p.world_size);
  if (p.local_size < 1)
    fail("launcher environment ({}): local size {} < 1", vars, p.local_size);
  if (p.local_rank >= p.local_size)
    fail("launcher environment ({}): local rank {} is not below local size {} (rank {})", vars,
         p.local_rank, p.local_size, p.rank);
  if (p.local_size > p.world_size)
    fail("launcher environment ({}): local size {} exceeds world size {} (rank {})", vars,
         p.local_size, p.world_size, p.rank);
}

ProcessInfo from_openmpi(const EnvLookup& env) {
  const char* seen = env("OMPI_COMM_WORLD_RANK") ? "OMPI_COMM_WORLD_RANK" : "OMPI_COMM_WORLD_SIZE";
  ProcessInfo p;
  p.launcher = "openmpi";
  p.rank = required(env, "OMPI_COMM_WORLD_RANK", "an Open MPI (mpirun)", seen);
  p.world_size = required(env, "OMPI_COMM_WORLD_SIZE", "an Open MPI (mpirun)", seen);
  p.local_rank = required(env, "OMPI_COMM_WORLD_LOCAL_RANK", "an Open MPI (mpirun)", seen);
  p.local_size = required(env, "OMPI_COMM_WORLD_LOCAL_SIZE", "an Open MPI (mpirun)", seen);
  check_consistent(p, "OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}");
  p.node = p.rank / p.local_size;
  return p;
}

ProcessInfo from_slurm(const EnvLookup& env) {
  const char* seen = "SLURM_PROCID";
  ProcessInfo p;
  p.launcher = "slurm";
  p.rank = required(env, "SLURM_PROCID", "a Slurm (srun)", seen);
  p.world_size = required(env, "SLURM_NTASKS", "a Slurm (srun)", seen);
  p.local_rank = required(env, "SLURM_LOCALID", "a Slurm (srun)", seen);
  p.node = required(env, "SLURM_NODEID", "a Slurm (srun)", seen);

  const char* tpn_name = "SLURM_STEP_TASKS_PER_NODE";
  const char* tpn = env(tpn_name);
  if (!tpn) {
    tpn_name = "SLURM_TASKS_PER_NODE";
    tpn = env(tpn_name);
  }
  if (!tpn)
    fail("launcher environment: SLURM_PROCID is set but neither SLURM_STEP_TASKS_PER_NODE nor "
         "SLURM_TASKS_PER_NODE is (needed for the local size); start the job with srun");
  std::vector<int> per_node = parse_tasks_per_node(tpn_name, tpn);
  if (p.node >= int(per_node.size()))
    fail("launcher environment: SLURM_NODEID={} but {}='{}' lists {} node(s)", p.node, tpn_name,
         tpn, per_node.size());
  if (auto nn = int_var(env, "SLURM_STEP_NUM_NODES"); nn && int(per_node.size()) != *nn)
    fail("launcher environment: {}='{}' lists {} node(s) but SLURM_STEP_NUM_NODES={}", tpn_name,
         tpn, per_node.size(), *nn);
  p.local_size = per_node[p.node];
  // The step's task list must account for every task (the job-wide SLURM_TASKS_PER_NODE
  // may describe a larger allocation than this step uses, so only check the step's).
  if (std::string_view(tpn_name) == "SLURM_STEP_TASKS_PER_NODE") {
    long total = 0;
    for (int n : per_node) total += n;
    if (total != p.world_size)
      fail("launcher environment: SLURM_NTASKS={} but SLURM_STEP_TASKS_PER_NODE='{}' adds up "
           "to {}",
           p.world_size, tpn, total);
  }
  check_consistent(p, "SLURM_{PROCID,NTASKS,LOCALID,NODEID}");
  return p;
}

}  // namespace

std::string ProcessInfo::str() const {
  return fmt::format("rank {}/{} (local {}/{}, node {}, host {}, {})", rank, world_size,
                     local_rank, local_size, node, hostname, launcher);
}

ProcessInfo detect_process(const EnvLookup& env) {
  ProcessInfo p;
  if (env("OMPI_COMM_WORLD_RANK") || env("OMPI_COMM_WORLD_SIZE"))
    p = from_openmpi(env);
  else if (env("SLURM_PROCID"))
    p = from_slurm(env);
  p.hostname = this_hostname();
  return p;
}

ProcessInfo detect_process(const std::map<std::string, std::string>& env) {
  return detect_process([&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

ProcessInfo detect_process() {
  return detect_process([](const char* name) -> const char* { return std::getenv(name); });
}

int pick_gpu(const ProcessInfo& info, int visible_gpus) {
  if (visible_gpus <= 0)
    fail("rank {} (local rank {} on host {}): no CUDA device is visible (check the driver "
         "and CUDA_VISIBLE_DEVICES)",
         info.rank, info.local_rank, info.hostname);
  return info.local_rank % visible_gpus;
}

}  // namespace temper
