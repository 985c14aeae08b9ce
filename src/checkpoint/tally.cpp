#include "checkpoint/tally.h"

#include "parallel/grid.h"

namespace temper::ckpt {

MPI_Comm file_comm(DeviceGrid* grid) {
  return grid && grid->world_size() > 1 ? grid->world().handle() : MPI_COMM_NULL;
}

void sum_over_ranks(MPI_Comm comm, std::vector<uint64_t>& v) {
  if (comm == MPI_COMM_NULL || v.empty()) return;
  MPI_Allreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_UINT64_T, MPI_SUM, comm);
}

void Tally::add(std::string name, uint64_t sum, uint64_t count, uint64_t full_numel,
                uint64_t stored_sum) {
  names.push_back(std::move(name));
  sums.push_back(sum);
  counts.push_back(count);
  numel.push_back(full_numel);
  stored.push_back(stored_sum);
}

void Tally::reduce(MPI_Comm comm) {
  // One message: sums then counts (unsigned addition wraps mod 2^64, as the checksum does).
  std::vector<uint64_t> both(sums);
  both.insert(both.end(), counts.begin(), counts.end());
  sum_over_ranks(comm, both);
  std::copy(both.begin(), both.begin() + long(sums.size()), sums.begin());
  std::copy(both.begin() + long(sums.size()), both.end(), counts.begin());
}

}  // namespace temper::ckpt
