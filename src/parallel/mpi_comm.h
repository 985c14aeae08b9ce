// MPI: the process runtime and a Communicator over host tensors.
//
// MpiRuntime owns MPI_Init_thread / MPI_Finalize for the program (create one, first thing
// in main, and keep it alive until every MpiComm is gone). MpiComm runs the collectives of
// communicator.h on CPU tensors over a private duplicate of an MPI communicator: f32 and
// i32 for all-reduce and reduce-scatter, any dtype (as bytes) for all-gather and
// broadcast. Every collective is non-blocking underneath (MPI_Iallreduce,
// MPI_Ireduce_scatter_block, MPI_Iallgather, MPI_Ibcast, MPI_Ibarrier); Work::wait polls
// MPI_Test until the communicator's timeout, counted from the start of the wait, and then
// throws temper::Error:
//   "rank 0 (world rank 2): all_reduce on group 'dp' did not complete within 30 s — a rank
//    may have died or stalled"
// After a timeout the job cannot continue safely (the collective is still posted): log
// and call abort_job(). Tensors passed to an async collective must stay alive and
// untouched until its wait() returns.
//
// In place: all_gather where `in` is this rank's shard of `out`, and reduce_scatter where
// `out` is this rank's shard of `in` (the rest of `in` is then unspecified). Any other
// overlap between `in` and `out` is an error.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/process.h"

namespace temper {

class MpiRuntime {
 public:
  // Initialises MPI (MPI_THREAD_SERIALIZED requested) unless something else already has;
  // then this object does not finalize it either. Throws temper::Error when MPI was
  // already finalized in this process (MPI cannot start twice). Sets log::set_rank to the
  // world rank when the world has more than one process.
  MpiRuntime();
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // MPI is initialised and not yet finalized.
  static bool active();
  int thread_level() const { return thread_level_; }  // MPI_THREAD_* actually provided
  bool owns() const { return owns_; }

 private:
  bool owns_ = false;
  int thread_level_ = 0;
};

class MpiComm final : public Communicator {
 public:
  static constexpr double kDefaultTimeoutS = 600;

  // A private duplicate of `comm` (MPI_Comm_idup, within the timeout), so this group's
  // collectives never match anyone else's. Collective over `comm`; needs an active
  // MpiRuntime.
  explicit MpiComm(MPI_Comm comm = MPI_COMM_WORLD, std::string name = "world",
                   double timeout_s = kDefaultTimeoutS);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int world_rank() const { return world_rank_; }
  // World ranks of this group's members, in group-rank order.
  std::vector<int> world_ranks() const;
  MPI_Comm handle() const { return comm_; }

  double timeout_s() const { return timeout_s_; }
  void set_timeout(double seconds);

  std::unique_ptr<Work> all_reduce_async(Tensor x, ReduceOp op) override;
  std::unique_ptr<Work> reduce_scatter_async(Tensor out, Tensor in) override;
  std::unique_ptr<Work> all_gather_async(Tensor out, Tensor in) override;
  std::unique_ptr<Work> broadcast_async(Tensor x, int root) override;
  void barrier() override;

  // Collective over this group: ranks passing the same color form a new group, ordered by
  // (key, rank here). color must be >= 0. The child inherits this group's timeout.
  std::unique_ptr<MpiComm> split(int color, int key, std::string name) const;

 private:
  struct Adopt {};
  MpiComm(Adopt, MPI_Comm owned, std::string name, double timeout_s);
  void init_ranks();
  void check_host(const Tensor& t, const char* op, const char* what) const;
  std::unique_ptr<Work> make_work(const char* op, MPI_Request request) const;

  MPI_Comm comm_ = MPI_COMM_NULL;  // owned
  std::string name_;
  double timeout_s_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
};

// Checks that MPI_COMM_WORLD has the layout the launcher environment describes (same
// world rank and size; and no unrecognised launcher when there are several processes).
// Catches, e.g., srun starting N independent singletons because MPI was built without
// Slurm's PMI support. Throws temper::Error saying which disagree. Needs active MPI.
void check_launch(const ProcessInfo& env_info);

// Logs `message` as an error and ends the whole job: MPI_Abort(MPI_COMM_WORLD, 1) while
// MPI is active (mpirun/srun then stop every rank), std::exit(1) otherwise.
[[noreturn]] void abort_job(const std::string& message);

namespace detail {
// The timeout message shared by MpiComm and NcclComm.
std::string timeout_message(int rank, int world_rank, const std::string& op,
                            const std::string& group, double timeout_s);
}  // namespace detail

}  // namespace temper
