// Collective communication over one group of ranks. MpiComm moves host buffers (the CPU
// engine, and the ncclUniqueId bootstrap); NcclComm moves device buffers on the CUDA
// backend's stream. Every collective has a blocking and an async form; async ones return
// a Work to wait on, so data-parallel reduction can overlap backward.
//
// No hangs: a wait that does not complete within the group's timeout throws
// temper::Error naming the rank, the operation and the group (then the caller aborts the
// job, see abort_job()). Every communicator counts the bytes it moves per operation kind.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "core/tensor.h"

namespace temper {

enum class ReduceOp { Sum, Max };

// Bytes moved per operation kind, as communication volume in the ZeRO paper's sense
// (algorithm-independent): an all-reduce of n bytes counts 2n (it is a reduce-scatter
// plus an all-gather); a reduce-scatter counts its input size; an all-gather counts its
// output size; a broadcast counts n. So plain data parallelism moves 2Ψ gradient bytes
// per step, and ZeRO's reduce-scatter + parameter all-gather moves the same 2Ψ.
struct CommBytes {
  std::map<std::string, uint64_t> by_op;  // "all_reduce", "reduce_scatter", ...
  uint64_t total() const;
};

class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;  // throws temper::Error on timeout, naming rank and operation
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;  // within this group
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;  // "world", "tp", "dp"

  // In place: x = reduce over ranks of x.
  virtual std::unique_ptr<Work> all_reduce_async(Tensor x, ReduceOp op) = 0;
  // out[n] = this rank's shard of the element-wise sum of in[n × size()] over ranks.
  virtual std::unique_ptr<Work> reduce_scatter_async(Tensor out, Tensor in) = 0;
  // out[n × size()] = concatenation of every rank's in[n] in rank order.
  virtual std::unique_ptr<Work> all_gather_async(Tensor out, Tensor in) = 0;
  virtual std::unique_ptr<Work> broadcast_async(Tensor x, int root) = 0;
  virtual void barrier() = 0;

  void all_reduce(Tensor x, ReduceOp op = ReduceOp::Sum) { all_reduce_async(x, op)->wait(); }
  void reduce_scatter(Tensor out, Tensor in) { reduce_scatter_async(out, in)->wait(); }
  void all_gather(Tensor out, Tensor in) { all_gather_async(out, in)->wait(); }
  void broadcast(Tensor x, int root) { broadcast_async(x, root)->wait(); }

  const CommBytes& bytes() const { return bytes_; }
  void reset_bytes() { bytes_ = {}; }

 protected:
  CommBytes bytes_;
};

// Sums host doubles over `comm` in place (counts, losses, norm partial sums). f64 has no
// Tensor dtype, so each value travels as an f32 part plus its f32 remainder: integer
// counts stay exact while every partial sum is below 2^24, otherwise the relative error
// is ~1e-7. Host memory: give it an MpiComm.
void all_reduce_sum_f64(Communicator& comm, std::span<double> values);

}  // namespace temper
