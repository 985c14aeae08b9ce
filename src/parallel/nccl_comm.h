// NCCL: a Communicator over device tensors of one CudaBackend (f32, bf16, f16, i32; and
// any dtype for all-gather and broadcast), enqueued on the backend's stream so it is
// ordered with the backend's kernels. Built only with CUDA and NCCL (TEMPER_HAVE_NCCL).
//
// Bootstrap: rank 0 of an MpiComm group calls ncclGetUniqueId and broadcasts the 128
// bytes over that group (MPI); every rank then joins a non-blocking NCCL communicator on
// the backend's device. Setup is bounded by the timeout like any collective.
//
// No hangs: an async collective records a CUDA event after it on the stream; Work::wait
// polls that event and ncclCommGetAsyncError until the timeout (counted from the start
// of the wait). On an NCCL error or the timeout it calls ncclCommAbort (pending NCCL
// kernels return) and throws temper::Error naming the rank, the operation and the group,
// with the same message as MpiComm. The communicator is unusable afterwards: abort the
// job (abort_job). wait() blocks the host; later work on the backend's stream is ordered
// after the collective anyway.
//
// In place: as MpiComm (all_gather from this rank's shard of out; reduce_scatter into
// this rank's shard of in, leaving the rest of in unspecified). Byte counting follows
// communicator.h; barrier() (an all-reduce of one device int) moves no payload.
// A NcclComm must outlive its Works, and its backend must outlive it.
#pragma once
#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "parallel/mpi_comm.h"

struct ncclComm;   // ncclComm_t
struct CUevent_st; // cudaEvent_t

namespace temper {

class CudaBackend;

class NcclComm final : public Communicator {
 public:
  // Collective over `group` (its rank 0 broadcasts the id; the broadcast shows in
  // group.bytes()). name defaults to the group's name, timeout_s (<= 0) to its timeout.
  NcclComm(MpiComm& group, CudaBackend& backend, std::string name = {}, double timeout_s = 0);
  ~NcclComm() override;  // ncclCommFinalize + Destroy within the timeout, else Abort
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int world_rank() const { return world_rank_; }
  double timeout_s() const { return timeout_s_; }
  void set_timeout(double seconds);
  bool aborted() const { return comm_ == nullptr; }

  std::unique_ptr<Work> all_reduce_async(Tensor x, ReduceOp op) override;
  std::unique_ptr<Work> reduce_scatter_async(Tensor out, Tensor in) override;
  std::unique_ptr<Work> all_gather_async(Tensor out, Tensor in) override;
  std::unique_ptr<Work> broadcast_async(Tensor x, int root) override;
  void barrier() override;

 private:
  friend class NcclWork;
  void use_device() const;
  void check_device(const Tensor& t, const char* op, const char* what) const;
  // After an NCCL call: throws (aborting) on an error; waits out ncclInProgress (the
  // non-blocking communicator's "not yet enqueued") until the timeout.
  void settle(int result, const char* op);
  // ncclCommAbort (once), then throws `message` (plus NCCL's last error when known).
  [[noreturn]] void abort_and_throw(const std::string& message);
  std::unique_ptr<Work> finish(const char* op);  // records the event, makes the Work
  std::string where(const char* op) const;
  void release_comm() noexcept;  // Finalize + Destroy within the timeout, else Abort

  ncclComm* comm_ = nullptr;
  CudaBackend& backend_;
  int device_ = 0;
  std::string name_;
  double timeout_s_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  int* barrier_word_ = nullptr;  // device [1] i32
};

}  // namespace temper
