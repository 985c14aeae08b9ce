// temper_print_process: prints where this process sits in the job as Temper itself
// detects it (detect_process(), the code `temper train` uses to pick its rank, local
// rank and node), one line per process, e.g.
//   rank 2/4 (local 0/2, node 1, host node-b, openmpi)
// It makes no MPI calls: detection reads the launcher's environment only. Used by
// tests/netns/test_two_node.sh under cluster/netns/two-node.sh.
#include <cstdio>
#include <exception>

#include "parallel/process.h"

int main() {
  try {
    std::printf("%s\n", temper::detect_process().str().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "temper_print_process: %s\n", e.what());
    return 1;
  }
}
