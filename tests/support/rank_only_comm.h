// A stand-in communicator that only knows its rank and size, for tests of shard
// arithmetic (which rank holds which slice) that run in one process. Any collective fails.
#pragma once
#include <string>

#include "core/error.h"
#include "parallel/communicator.h"

namespace temper::test {

class RankOnlyComm final : public Communicator {
 public:
  RankOnlyComm(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  std::unique_ptr<Work> all_reduce_async(Tensor, ReduceOp) override { refuse(); }
  std::unique_ptr<Work> reduce_scatter_async(Tensor, Tensor) override { refuse(); }
  std::unique_ptr<Work> all_gather_async(Tensor, Tensor) override { refuse(); }
  std::unique_ptr<Work> broadcast_async(Tensor, int) override { refuse(); }
  void barrier() override { refuse(); }

 private:
  [[noreturn]] static void refuse() { fail("RankOnlyComm: collectives are not available in this test"); }
  int rank_, size_;
  std::string name_ = "test";
};

}  // namespace temper::test
