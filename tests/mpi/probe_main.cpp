// temper_mpi_probe: a small MPI program that misbehaves on purpose, for the no-hang tests
// (no_hang_test.cpp runs it under mpirun and times it).
//
//   temper_mpi_probe ok   [timeout_s]  every rank all-reduces 5 times, exit 0
//   temper_mpi_probe skip [timeout_s]  rank 1 skips the all-reduces and stalls: the
//                                      others must time out, naming rank and all_reduce,
//                                      and end the job through abort_job
//   temper_mpi_probe kill [timeout_s]  rank 1 SIGKILLs itself after 2 all-reduces: the
//                                      launcher must end the others
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "parallel/mpi_comm.h"

int main(int argc, char** argv) {
  using namespace temper;
  const std::string mode = argc > 1 ? argv[1] : "ok";
  const double timeout_s = argc > 2 ? std::atof(argv[2]) : 3.0;
  if (mode != "ok" && mode != "skip" && mode != "kill") {
    std::fprintf(stderr, "usage: temper_mpi_probe ok|skip|kill [timeout_s]\n");
    return 2;
  }
  MpiRuntime mpi;
  try {
    MpiComm world(MPI_COMM_WORLD, "world", timeout_s);
    float value = 1.0f;
    Tensor x(&value, DType::F32, {1});
    for (int step = 0; step < 5; ++step) {
      if (world.rank() == 1 && mode == "kill" && step == 2) std::raise(SIGKILL);
      if (world.rank() == 1 && mode == "skip") {
        log::info("rank 1 skips the all-reduce and stalls");
        std::this_thread::sleep_for(std::chrono::seconds(120));
        return 0;
      }
      value = 1.0f;
      world.all_reduce(x);
      if (value != float(world.size()))
        abort_job("all_reduce gave " + std::to_string(value) + ", expected " +
                  std::to_string(world.size()));
    }
    world.barrier();
    if (world.rank() == 0) log::info("probe {}: {} ranks done", mode, world.size());
  } catch (const Error& e) {
    abort_job(e.what());
  }
  return 0;
}
