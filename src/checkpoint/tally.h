// Checksums of the tensors a rank wrote or read, summed over the ranks of a checkpoint
// file at the end (one all-reduce), and the checkpoint's MPI communicator.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace temper {
class DeviceGrid;
}

namespace temper::ckpt {

// grid->world() when there are several ranks, else MPI_COMM_NULL (this process alone).
MPI_Comm file_comm(DeviceGrid* grid);

// Element-wise sum of `v` over the ranks of `comm` (nothing to do for MPI_COMM_NULL).
void sum_over_ranks(MPI_Comm comm, std::vector<uint64_t>& v);

struct Tally {
  std::vector<std::string> names;    // dataset paths, "model/<name>", "optim/<name>/m", ...
  std::vector<uint64_t> sums, counts;  // this rank's checksum part and element count
  std::vector<uint64_t> numel;       // elements of the full tensor
  std::vector<uint64_t> stored;      // read side: the file's checksum attribute
  void add(std::string name, uint64_t sum, uint64_t count, uint64_t full_numel, uint64_t stored_sum = 0);
  // Sums `sums` and `counts` over the ranks (collective over comm).
  void reduce(MPI_Comm comm);
};

}  // namespace temper::ckpt
