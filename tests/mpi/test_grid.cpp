// DeviceGrid (world = dp × tp, tp innermost), its errors, and the launcher check, on
// every rank of temper_mpi_tests.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/grid.h"
#include "parallel/mpi_comm.h"
#include "parallel/process.h"

namespace temper {
namespace {

constexpr double kTestTimeoutS = 30;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

int32_t sum_over(MpiComm& group, int32_t value) {
  std::vector<int32_t> v = {value};
  group.all_reduce(Tensor(v.data(), DType::I32, {1}));
  return v[0];
}

TEST(GridCoords, TpIsInnermost) {
  // 8 ranks, tp=2: rank 5 is tp_rank 1 of dp group 2.
  GridCoords c = grid_coords(8, 5, 2);
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.dp, 4);
  EXPECT_EQ(c.tp_rank, 1);
  EXPECT_EQ(c.dp_rank, 2);
  c = grid_coords(4, 3, 4);
  EXPECT_EQ(c.dp, 1);
  EXPECT_EQ(c.tp_rank, 3);
  EXPECT_EQ(c.dp_rank, 0);
  c = grid_coords(4, 3, 1);
  EXPECT_EQ(c.dp, 4);
  EXPECT_EQ(c.tp_rank, 0);
  EXPECT_EQ(c.dp_rank, 3);
}

TEST(GridCoords, Errors) {
  EXPECT_NE(error_of([] { grid_coords(3, 0, 2); })
                .find("world size 3 is not divisible by parallel.tp=2"),
            std::string::npos);
  EXPECT_NE(error_of([] { grid_coords(4, 0, 0); }).find("parallel.tp=0 must be >= 1"),
            std::string::npos);
  EXPECT_NE(error_of([] { grid_coords(4, 4, 2); }).find("rank 4 is not in a world of 4"),
            std::string::npos);
}

class MpiGrid : public ::testing::Test {
 protected:
  MpiComm world{MPI_COMM_WORLD, "world", kTestTimeoutS};
  const int rank = world.rank();
  const int size = world.size();
};

// Every tp that divides the world: coordinates, group names, members, and that each
// group's collectives reach exactly its members.
TEST_F(MpiGrid, GroupsForEveryDividingTp) {
  for (int tp = 1; tp <= size; ++tp) {
    if (size % tp) continue;
    SCOPED_TRACE("tp=" + std::to_string(tp));
    DeviceGrid grid(world, tp);
    const int dp = size / tp;
    EXPECT_EQ(grid.tp_size(), tp);
    EXPECT_EQ(grid.dp_size(), dp);
    EXPECT_EQ(grid.tp_rank(), rank % tp);
    EXPECT_EQ(grid.dp_rank(), rank / tp);
    EXPECT_EQ(grid.rank(), rank);
    EXPECT_EQ(grid.world_size(), size);
    EXPECT_EQ(grid.world().name(), "world");
    EXPECT_EQ(grid.tp().name(), "tp");
    EXPECT_EQ(grid.dp().name(), "dp");
    EXPECT_EQ(grid.tp().rank(), grid.tp_rank());
    EXPECT_EQ(grid.dp().rank(), grid.dp_rank());
    EXPECT_EQ(grid.tp().timeout_s(), kTestTimeoutS);

    std::vector<int> tp_members, dp_members, all;
    for (int i = 0; i < tp; ++i) tp_members.push_back(grid.dp_rank() * tp + i);
    for (int j = 0; j < dp; ++j) dp_members.push_back(grid.tp_rank() + j * tp);
    for (int r = 0; r < size; ++r) all.push_back(r);
    EXPECT_EQ(grid.tp().world_ranks(), tp_members);
    EXPECT_EQ(grid.dp().world_ranks(), dp_members);
    EXPECT_EQ(grid.world().world_ranks(), all);

    int32_t tp_sum = 0, dp_sum = 0;
    for (int r : tp_members) tp_sum += r;
    for (int r : dp_members) dp_sum += r;
    EXPECT_EQ(sum_over(grid.tp(), rank), tp_sum);
    EXPECT_EQ(sum_over(grid.dp(), rank), dp_sum);
    EXPECT_EQ(sum_over(grid.world(), rank), size * (size - 1) / 2);
    // Each communicator counts its own traffic (the grid's setup is not counted).
    EXPECT_EQ(grid.tp().bytes().total(), 8u);  // one 4-byte all-reduce: volume 2 × 4
    EXPECT_EQ(grid.world().bytes().total(), 8u);
    EXPECT_EQ(world.bytes().total(), 0u);
  }
}

// The 2 × 2 grid spelled out: tp groups {0,1} {2,3}, dp groups {0,2} {1,3}.
TEST_F(MpiGrid, TwoByTwo) {
  if (size != 4) GTEST_SKIP() << "needs 4 ranks";
  DeviceGrid grid(world, 2);
  const std::vector<std::vector<int>> tp_groups = {{0, 1}, {0, 1}, {2, 3}, {2, 3}};
  const std::vector<std::vector<int>> dp_groups = {{0, 2}, {1, 3}, {0, 2}, {1, 3}};
  const int tp_rank[] = {0, 1, 0, 1}, dp_rank[] = {0, 0, 1, 1};
  EXPECT_EQ(grid.tp().world_ranks(), tp_groups[size_t(rank)]);
  EXPECT_EQ(grid.dp().world_ranks(), dp_groups[size_t(rank)]);
  EXPECT_EQ(grid.tp_rank(), tp_rank[rank]);
  EXPECT_EQ(grid.dp_rank(), dp_rank[rank]);
  EXPECT_EQ(grid.str(), "dp=2 × tp=2 (rank " + std::to_string(rank) + ": dp_rank " +
                            std::to_string(dp_rank[rank]) + ", tp_rank " +
                            std::to_string(tp_rank[rank]) + ")");

  // A tp all-gather then a dp reduce-scatter: the ZeRO-style pattern over both axes.
  std::vector<float> mine = {float(rank)}, gathered(2);
  grid.tp().all_gather(Tensor(gathered.data(), DType::F32, {2}),
                       Tensor(mine.data(), DType::F32, {1}));
  EXPECT_EQ(gathered[0], float(tp_groups[size_t(rank)][0]));
  EXPECT_EQ(gathered[1], float(tp_groups[size_t(rank)][1]));
  std::vector<float> shard(1);
  grid.dp().reduce_scatter(Tensor(shard.data(), DType::F32, {1}),
                           Tensor(gathered.data(), DType::F32, {2}));
  // dp group {t, t+2} sums tp groups {0,1} and {2,3} elementwise: {2, 4}; rank keeps its
  // dp_rank'th element.
  EXPECT_EQ(shard[0], dp_rank[rank] == 0 ? 2.0f : 4.0f);
}

TEST_F(MpiGrid, TpMustDivideTheWorld) {
  const int tp = size + 1;  // never divides (size >= 1)
  std::string e = error_of([&] { DeviceGrid grid(world, tp); });
  EXPECT_NE(e.find("world size " + std::to_string(size) + " is not divisible by parallel.tp=" +
                   std::to_string(tp)),
            std::string::npos)
      << e;
  if (size == 4) {
    e = error_of([&] { DeviceGrid grid(world, 3); });
    EXPECT_NE(e.find("world size 4 is not divisible by parallel.tp=3"), std::string::npos) << e;
  }
  EXPECT_NE(error_of([&] { DeviceGrid grid(world, 0); }).find("parallel.tp=0 must be >= 1"),
            std::string::npos);
}

TEST_F(MpiGrid, RanksMustAgreeOnTp) {
  if (size < 2) GTEST_SKIP() << "needs two ranks";
  std::string e = error_of([&] { DeviceGrid grid(world, rank == 0 ? 1 : size); });
  EXPECT_NE(e.find("ranks disagree on parallel.tp"), std::string::npos) << e;
}

// ---- the launcher environment against MPI -------------------------------------------

TEST(MpiLaunch, EnvironmentMatchesMpi) {
  ProcessInfo p = detect_process();
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(p.launcher, "openmpi");  // the suite runs under mpirun
  EXPECT_EQ(p.rank, rank);
  EXPECT_EQ(p.world_size, size);
  EXPECT_EQ(p.local_rank, rank);  // one node
  EXPECT_EQ(p.local_size, size);
  EXPECT_EQ(p.node, 0);
  EXPECT_FALSE(p.hostname.empty());
  EXPECT_NO_THROW(check_launch(p));

  ProcessInfo wrong = p;
  wrong.world_size = size + 1;
  std::string e = error_of([&] { check_launch(wrong); });
  EXPECT_NE(e.find("the openmpi environment says rank " + std::to_string(rank) + " of " +
                   std::to_string(size + 1) + " but MPI says rank " + std::to_string(rank) +
                   " of " + std::to_string(size)),
            std::string::npos)
      << e;

  ProcessInfo none;  // no launcher variables
  if (size > 1)
    EXPECT_NE(error_of([&] { check_launch(none); }).find("local ranks (GPU choice) are unknown"),
              std::string::npos);
  else
    EXPECT_NO_THROW(check_launch(none));
}

}  // namespace
}  // namespace temper
