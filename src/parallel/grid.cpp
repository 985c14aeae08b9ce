#include "parallel/grid.h"

#include <cstdint>

#include <fmt/format.h>

#include "core/error.h"

namespace temper {

GridCoords grid_coords(int world_size, int rank, int tp) {
  if (tp < 1) fail("parallel.tp={} must be >= 1", tp);
  if (world_size < 1 || rank < 0 || rank >= world_size)
    fail("rank {} is not in a world of {} process(es)", rank, world_size);
  if (world_size % tp != 0)
    fail("world size {} is not divisible by parallel.tp={}: start a multiple of {} processes "
         "(dp = world / tp)",
         world_size, tp, tp);
  GridCoords c;
  c.tp = tp;
  c.dp = world_size / tp;
  c.tp_rank = rank % tp;
  c.dp_rank = rank / tp;
  return c;
}

DeviceGrid::DeviceGrid(const MpiComm& world, int tp)
    : coords_(grid_coords(world.size(), world.rank(), tp)) {
  world_ = world.split(0, world.rank(), "world");
  // Every rank must ask for the same tp, or the groups below would not line up.
  int32_t extremes[2] = {tp, -tp};
  world_->all_reduce(Tensor(extremes, DType::I32, {2}), ReduceOp::Max);
  world_->reset_bytes();
  if (extremes[0] != -extremes[1])
    fail("ranks disagree on parallel.tp: rank {} has {}, others up to {} and down to {}",
         world.rank(), tp, extremes[0], -extremes[1]);
  tp_ = world_->split(coords_.dp_rank, coords_.tp_rank, "tp");
  dp_ = world_->split(coords_.tp_rank, coords_.dp_rank, "dp");
}

std::string DeviceGrid::str() const {
  return fmt::format("dp={} × tp={} (rank {}: dp_rank {}, tp_rank {})", coords_.dp, coords_.tp,
                     rank(), coords_.dp_rank, coords_.tp_rank);
}

}  // namespace temper
