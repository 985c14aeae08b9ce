// The device grid: world = dp × tp, tp innermost, so the ranks of a tensor-parallel group
// are consecutive (and, with mpirun's by-slot placement, on one node):
//   tp_rank = rank % tp,  dp_rank = rank / tp
//   tp group of rank r: {dp_rank·tp + i : i < tp}      dp group: {tp_rank + j·tp : j < dp}
// A DeviceGrid owns its group communicators and is passed explicitly to whatever needs
// them; nothing here is global.
#pragma once
#include <memory>
#include <string>

#include "parallel/mpi_comm.h"

namespace temper {

struct GridCoords {
  int tp = 1, dp = 1;            // group sizes
  int tp_rank = 0, dp_rank = 0;  // this rank's coordinates
};

// Pure arithmetic, no MPI. Throws temper::Error for tp < 1, a rank outside the world, or
// a world size tp does not divide ("world size 3 is not divisible by parallel.tp=2").
GridCoords grid_coords(int world_size, int rank, int tp);

class DeviceGrid {
 public:
  // Collective over `world`: every rank calls it with the same tp. The grid's
  // communicators are split from `world` (which it does not keep) and inherit its timeout.
  DeviceGrid(const MpiComm& world, int tp);

  int rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  int tp_size() const { return coords_.tp; }
  int dp_size() const { return coords_.dp; }
  int tp_rank() const { return coords_.tp_rank; }
  int dp_rank() const { return coords_.dp_rank; }

  MpiComm& world() { return *world_; }  // all ranks, named "world"
  MpiComm& tp() { return *tp_; }        // the tp ranks sharing this rank's dp_rank, "tp"
  MpiComm& dp() { return *dp_; }        // the dp ranks sharing this rank's tp_rank, "dp"

  std::string str() const;  // "dp=2 × tp=2 (rank 3: dp_rank 1, tp_rank 1)"

 private:
  GridCoords coords_;
  std::unique_ptr<MpiComm> world_, tp_, dp_;
};

}  // namespace temper
