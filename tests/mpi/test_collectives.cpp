// MpiComm collectives, blocking and async, f32 and i32 (and bytes), against values
// computed from the rank numbers; in-place forms; byte counters; errors; the timeout.
// Runs on every rank of temper_mpi_tests (1, 2 or 4 ranks).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "parallel/mpi_comm.h"

namespace temper {
namespace {

constexpr double kTestTimeoutS = 30;  // a mismatched test fails instead of hanging

template <typename T>
constexpr DType dtype_of() {
  return std::is_same_v<T, float> ? DType::F32 : DType::I32;
}

template <typename T>
Tensor host(std::vector<T>& v) {
  return Tensor(v.data(), dtype_of<T>(), {int64_t(v.size())});
}

class MpiCollectives : public ::testing::Test {
 protected:
  MpiComm world{MPI_COMM_WORLD, "world", kTestTimeoutS};
  const int rank = world.rank();
  const int size = world.size();
  const int64_t S = int64_t(size) * (size + 1) / 2;  // Σ (r + 1) over ranks
};

// ---- all-reduce ------------------------------------------------------------------

TEST_F(MpiCollectives, AllReduceSumF32) {
  const int n = 7;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = float(rank + 1) + 0.5f * float(i);
  world.all_reduce(host(x));
  for (int i = 0; i < n; ++i) EXPECT_EQ(x[i], float(S) + 0.5f * float(i) * float(size)) << i;
}

TEST_F(MpiCollectives, AllReduceMaxF32) {
  std::vector<float> x = {float(rank), -float(rank), float(rank % 2)};
  world.all_reduce(host(x), ReduceOp::Max);
  EXPECT_EQ(x[0], float(size - 1));
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_EQ(x[2], size > 1 ? 1.0f : 0.0f);
}

TEST_F(MpiCollectives, AllReduceSumAndMaxI32) {
  const int n = 5;
  std::vector<int32_t> sum(n), max(n);
  for (int i = 0; i < n; ++i) {
    sum[i] = (rank + 1) * 1000 + i;
    max[i] = rank * 10 - i;
  }
  world.all_reduce(host(sum), ReduceOp::Sum);
  world.all_reduce(host(max), ReduceOp::Max);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(sum[i], int32_t(S * 1000 + int64_t(size) * i)) << i;
    EXPECT_EQ(max[i], (size - 1) * 10 - i) << i;
  }
}

// ---- reduce-scatter ----------------------------------------------------------------

// in[j] = (rank + 1)·(j + 1) over size·n elements; rank r keeps the sum of its shard:
// out[i] = S·(r·n + i + 1).
template <typename T>
void check_reduce_scatter(MpiComm& world, int64_t S) {
  const int n = 3, rank = world.rank(), size = world.size();
  std::vector<T> in(size_t(n * size)), out(n, T(-1));
  for (int j = 0; j < n * size; ++j) in[j] = T((rank + 1) * (j + 1));
  world.reduce_scatter(host(out), host(in));
  for (int i = 0; i < n; ++i) EXPECT_EQ(out[i], T(S * (rank * n + i + 1))) << i;
  // The input is left alone.
  for (int j = 0; j < n * size; ++j) EXPECT_EQ(in[j], T((rank + 1) * (j + 1))) << j;
}

TEST_F(MpiCollectives, ReduceScatterF32) { check_reduce_scatter<float>(world, S); }
TEST_F(MpiCollectives, ReduceScatterI32) { check_reduce_scatter<int32_t>(world, S); }

TEST_F(MpiCollectives, ReduceScatterInPlaceIntoOwnShard) {
  const int n = 4;
  std::vector<float> buf(size_t(n * size));
  for (int j = 0; j < n * size; ++j) buf[j] = float((rank + 1) * (j + 1));
  Tensor in = host(buf);
  Tensor out = in.flat(int64_t(rank) * n, n);  // this rank's shard of in
  world.reduce_scatter(out, in);
  for (int i = 0; i < n; ++i) EXPECT_EQ(buf[rank * n + i], float(S * (rank * n + i + 1))) << i;
}

// ---- all-gather --------------------------------------------------------------------

template <typename T>
void check_all_gather(MpiComm& world) {
  const int n = 5, rank = world.rank(), size = world.size();
  std::vector<T> in(n), out(size_t(n * size), T(-1));
  for (int i = 0; i < n; ++i) in[i] = T(rank * 100 + i);
  world.all_gather(host(out), host(in));
  for (int r = 0; r < size; ++r)
    for (int i = 0; i < n; ++i) EXPECT_EQ(out[r * n + i], T(r * 100 + i)) << r << "," << i;
}

TEST_F(MpiCollectives, AllGatherF32) { check_all_gather<float>(world); }
TEST_F(MpiCollectives, AllGatherI32) { check_all_gather<int32_t>(world); }

TEST_F(MpiCollectives, AllGatherMovesAnyDtypeAsBytes) {
  const int n = 6;
  std::vector<uint16_t> in(n), out(size_t(n * size));  // bf16 bit patterns
  for (int i = 0; i < n; ++i) in[i] = f32_to_bf16(float(rank) + 0.25f * float(i));
  world.all_gather(Tensor(out.data(), DType::BF16, {int64_t(out.size())}),
                   Tensor(in.data(), DType::BF16, {n}));
  for (int r = 0; r < size; ++r)
    for (int i = 0; i < n; ++i)
      EXPECT_EQ(bf16_to_f32(out[r * n + i]), float(r) + 0.25f * float(i)) << r << "," << i;

  std::vector<uint8_t> b_in = {uint8_t(rank), uint8_t(200 + rank)}, b_out(size_t(2 * size));
  world.all_gather(Tensor(b_out.data(), DType::U8, {2 * size}),
                   Tensor(b_in.data(), DType::U8, {2}));
  for (int r = 0; r < size; ++r) {
    EXPECT_EQ(b_out[2 * r], r);
    EXPECT_EQ(b_out[2 * r + 1], 200 + r);
  }
}

TEST_F(MpiCollectives, AllGatherInPlaceFromOwnShard) {
  const int n = 3;
  std::vector<int32_t> buf(size_t(n * size), -1);
  for (int i = 0; i < n; ++i) buf[rank * n + i] = rank * 10 + i;
  Tensor out = host(buf);
  world.all_gather(out, out.flat(int64_t(rank) * n, n));
  for (int r = 0; r < size; ++r)
    for (int i = 0; i < n; ++i) EXPECT_EQ(buf[r * n + i], r * 10 + i);
}

// ---- broadcast ---------------------------------------------------------------------

TEST_F(MpiCollectives, BroadcastFromEveryRoot) {
  for (int root = 0; root < size; ++root) {
    std::vector<float> f(4, -7.0f);
    std::vector<int32_t> i(3, -7);
    std::vector<uint8_t> b(5, 0);
    if (rank == root) {
      for (int k = 0; k < 4; ++k) f[k] = float(root) + 0.5f * float(k);
      for (int k = 0; k < 3; ++k) i[k] = root * 1000 + k;
      for (int k = 0; k < 5; ++k) b[k] = uint8_t(root * 16 + k);
    }
    world.broadcast(host(f), root);
    world.broadcast(host(i), root);
    world.broadcast(Tensor(b.data(), DType::U8, {5}), root);
    for (int k = 0; k < 4; ++k) EXPECT_EQ(f[k], float(root) + 0.5f * float(k)) << root;
    for (int k = 0; k < 3; ++k) EXPECT_EQ(i[k], root * 1000 + k) << root;
    for (int k = 0; k < 5; ++k) EXPECT_EQ(b[k], root * 16 + k) << root;
  }
}

// ---- async -------------------------------------------------------------------------

TEST_F(MpiCollectives, AsyncOperationsOverlapAndCompleteInAnyWaitOrder) {
  const int n = 4;
  std::vector<float> a(n, float(rank + 1));
  std::vector<int32_t> m(n);
  for (int i = 0; i < n; ++i) m[i] = rank + i;
  std::vector<float> rs_in(size_t(n * size)), rs_out(n);
  for (int j = 0; j < n * size; ++j) rs_in[j] = float(rank + 1);
  std::vector<int32_t> ag_in(n, rank), ag_out(size_t(n * size), -1);
  std::vector<float> bc(n, rank == size - 1 ? 42.0f : 0.0f);

  // All posted before any wait (the pattern of bucketed gradient reduction).
  auto w1 = world.all_reduce_async(host(a), ReduceOp::Sum);
  auto w2 = world.all_reduce_async(host(m), ReduceOp::Max);
  auto w3 = world.reduce_scatter_async(host(rs_out), host(rs_in));
  auto w4 = world.all_gather_async(host(ag_out), host(ag_in));
  auto w5 = world.broadcast_async(host(bc), size - 1);
  w5->wait();
  w3->wait();
  w1->wait();
  w4->wait();
  w2->wait();
  w2->wait();  // a second wait is a no-op

  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(a[i], float(S));
    EXPECT_EQ(m[i], size - 1 + i);
    EXPECT_EQ(rs_out[i], float(S));
    EXPECT_EQ(bc[i], 42.0f);
  }
  for (int r = 0; r < size; ++r)
    for (int i = 0; i < n; ++i) EXPECT_EQ(ag_out[r * n + i], r);
}

TEST_F(MpiCollectives, UnwaitedWorkCompletesInItsDestructor) {
  std::vector<float> x(2, 1.0f);
  { auto w = world.all_reduce_async(host(x), ReduceOp::Sum); }
  EXPECT_EQ(x[0], float(size));
  EXPECT_EQ(x[1], float(size));
}

// No rank leaves a barrier before every rank has arrived. Rank r arrives r × 50 ms late
// (rotated in the second round, so the last to arrive changes); each rank notes its
// arrival and departure on CLOCK_MONOTONIC (std::steady_clock: one clock for every process
// of this host, where mpirun runs all ranks of this test) and the times are exchanged after
// the barrier: the earliest departure must not precede the latest arrival.
TEST_F(MpiCollectives, BarrierWaitsForEveryRank) {
  auto now_ns = [] {
    return int64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now().time_since_epoch())
                       .count());
  };
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round);
    const int late = (rank + round) % size;
    std::this_thread::sleep_for(std::chrono::milliseconds(50 * late));
    int64_t mine[2];
    mine[0] = now_ns();
    world.barrier();
    mine[1] = now_ns();
    std::vector<int64_t> all(size_t(2 * size));
    world.all_gather(Tensor(all.data(), DType::U8, {int64_t(all.size() * 8)}),
                     Tensor(mine, DType::U8, {16}));
    int64_t last_arrival = all[0], first_departure = all[1];
    for (int r = 0; r < size; ++r) {
      last_arrival = std::max(last_arrival, all[size_t(2 * r)]);
      first_departure = std::min(first_departure, all[size_t(2 * r + 1)]);
      EXPECT_GE(all[size_t(2 * r + 1)], all[size_t(2 * r)]) << "rank " << r;
    }
    EXPECT_GE(first_departure, last_arrival)
        << "a rank left the barrier " << (last_arrival - first_departure) / 1000
        << " us before the last rank arrived";
  }
}

// ---- byte counters -----------------------------------------------------------------

TEST_F(MpiCollectives, ByteCountersAreTheDocumentedPayloads) {
  world.reset_bytes();
  std::vector<float> ar(10, 1.0f);  // 40 B
  std::vector<int32_t> ar_i(3, 1);  // 12 B
  world.all_reduce(host(ar));
  world.all_reduce(host(ar_i), ReduceOp::Max);
  std::vector<float> rs_in(size_t(5 * size), 1.0f), rs_out(5);  // input 20·size B
  world.reduce_scatter(host(rs_out), host(rs_in));
  std::vector<int32_t> ag_in(6, 0), ag_out(size_t(6 * size));  // output 24·size B
  world.all_gather(host(ag_out), host(ag_in));
  std::vector<uint8_t> bc(9, 0);  // 9 B
  world.broadcast(Tensor(bc.data(), DType::U8, {9}), 0);
  world.barrier();  // moves no payload

  const CommBytes& b = world.bytes();
  EXPECT_EQ(b.by_op.at("all_reduce"), 2 * 52u);  // all-reduce counts twice its payload
  EXPECT_EQ(b.by_op.at("reduce_scatter"), uint64_t(20 * size));
  EXPECT_EQ(b.by_op.at("all_gather"), uint64_t(24 * size));
  EXPECT_EQ(b.by_op.at("broadcast"), 9u);
  EXPECT_EQ(b.by_op.size(), 4u);
  EXPECT_EQ(b.total(), uint64_t(2 * 52 + 20 * size + 24 * size + 9));

  auto w = world.all_reduce_async(host(ar), ReduceOp::Sum);  // counted when posted
  EXPECT_EQ(world.bytes().by_op.at("all_reduce"), 2 * 92u);
  w->wait();
  world.reset_bytes();
  EXPECT_EQ(world.bytes().total(), 0u);
}

// ---- errors (raised before anything is posted, identically on every rank) -----------

TEST_F(MpiCollectives, RejectsWhatItCannotMove) {
  std::vector<float> f(4 * size, 0.0f);
  std::vector<uint16_t> h(4, 0);
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one containing: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Tensor on_gpu(f.data(), DType::F32, {4}, Device{DeviceKind::CUDA, 0});
  expect_error([&] { world.all_reduce(on_gpu); }, "MpiComm moves host tensors");
  expect_error([&] { world.all_reduce(Tensor(h.data(), DType::BF16, {4})); },
               "reduces f32 and i32");
  expect_error([&] { world.all_reduce(Tensor{}); }, "undefined tensor");
  expect_error([&] { world.broadcast(host(f), size); }, "root");
  expect_error([&] { world.broadcast(host(f), -1); }, "root");
  std::vector<float> small(3);
  expect_error([&] { world.reduce_scatter(host(small), host(f)); }, "in must hold");
  expect_error([&] { world.all_gather(host(f), host(small)); }, "out must hold");
  Tensor whole = host(f);
  if (size > 1) {
    // Overlapping, but not this rank's own shard.
    Tensor wrong = whole.flat(int64_t((rank + 1) % size) * 4, 4);
    expect_error([&] { world.all_gather(whole, wrong); }, "overlaps");
    expect_error([&] { world.reduce_scatter(wrong, whole); }, "overlaps");
  }
  expect_error([&] { world.set_timeout(0); }, "timeout must be > 0");
}

// ---- split -------------------------------------------------------------------------

TEST_F(MpiCollectives, SplitByParityWithReversedKeys) {
  const int color = rank % 2;
  auto group = world.split(color, -rank, "parity");
  EXPECT_EQ(group->name(), "parity");
  EXPECT_EQ(group->timeout_s(), kTestTimeoutS);
  std::vector<int> want;
  for (int r = size - 1; r >= 0; --r)
    if (r % 2 == color) want.push_back(r);  // key = -rank: descending world rank
  EXPECT_EQ(group->world_ranks(), want);
  EXPECT_EQ(group->size(), int(want.size()));
  EXPECT_EQ(group->world_ranks()[size_t(group->rank())], rank);
  EXPECT_EQ(group->world_rank(), rank);

  std::vector<int32_t> x = {rank};
  group->all_reduce(host(x));
  int expected = 0;
  for (int r : want) expected += r;
  EXPECT_EQ(x[0], expected);
  EXPECT_EQ(world.bytes().total(), 0u);  // the split's own exchange is not payload
}

TEST_F(MpiCollectives, SplitRejectsNegativeColorOnEveryRank) {
  try {
    world.split(rank == 0 ? -1 : 0, 0, "bad");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 passed color -1"), std::string::npos)
        << e.what();
  }
}

// ---- timeout -----------------------------------------------------------------------

// Rank 1 joins the all-reduce late; rank 0, with a short timeout, gets the error naming
// its rank, the operation and the group, and can still complete the operation afterwards.
TEST_F(MpiCollectives, WaitTimesOutNamingRankOperationAndGroup) {
  if (size < 2) GTEST_SKIP() << "needs two ranks";
  auto group = world.split(0, rank, "slowpoke");
  std::vector<float> x(3, 1.0f);
  if (rank == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  if (rank == 0) group->set_timeout(0.3);
  auto start = std::chrono::steady_clock::now();
  auto work = group->all_reduce_async(host(x), ReduceOp::Sum);
  if (rank == 0) {
    try {
      work->wait();
      FAIL() << "no timeout";
    } catch (const Error& e) {
      double waited =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_GE(waited, 0.3);
      EXPECT_LT(waited, 1.4);
      EXPECT_EQ(std::string(e.what()),
                "rank 0 (world rank 0): all_reduce on group 'slowpoke' did not complete within "
                "0.3 s — a rank may have died or stalled");
    }
    // A timed-out Work can be waited on again (each wait allows the timeout set when the
    // work was posted) and completes once rank 1 arrives.
    for (int tries = 0;; ++tries) {
      try {
        work->wait();
        break;
      } catch (const Error&) {
        ASSERT_LT(tries, 100) << "rank 1 never joined";
      }
    }
  } else {
    work->wait();
  }
  EXPECT_EQ(x[0], float(size));
}

TEST_F(MpiCollectives, BarrierTimesOutToo) {
  if (size < 2) GTEST_SKIP() << "needs two ranks";
  auto group = world.split(0, rank, "late");
  if (rank == 0) {
    group->set_timeout(0.2);
    try {
      group->barrier();  // rank 1 is still asleep
      FAIL() << "no timeout";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rank 0 (world rank 0): barrier on group 'late' did "
                                           "not complete within 0.2 s"),
                std::string::npos)
          << e.what();
    }
    group->set_timeout(kTestTimeoutS);
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    group->barrier();
  }
  // Rank 0's timed-out barrier stays posted and completes with rank 1's, so the group is
  // still in step: the next collective is right.
  std::vector<float> y(1, 1.0f);
  group->all_reduce(host(y));
  EXPECT_EQ(y[0], float(size));
}

}  // namespace
}  // namespace temper
