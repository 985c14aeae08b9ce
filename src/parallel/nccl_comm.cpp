#include "kernels/cuda/cuda_backend.h"  // first: fmt_nvcc.h before any fmt header

#include "parallel/nccl_comm.h"

#include <nccl.h>

#include <chrono>
#include <thread>
#include <utility>

#include "core/error.h"
#include "core/log.h"
#include "kernels/cuda/cuda_check.h"

namespace temper {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
}

// Yield for the first polls, then sleep briefly (ranks may share cores).
void backoff(int polls) {
  if (polls < 100)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(polls < 1000 ? 50 : 500));
}

// dtype -> NCCL type; reductions take f32/bf16/f16/i32, data movement any dtype.
bool nccl_type(DType t, bool reduction, ncclDataType_t* out) {
  switch (t) {
    case DType::F32: *out = ncclFloat32; return true;
    case DType::BF16: *out = ncclBfloat16; return true;
    case DType::F16: *out = ncclFloat16; return true;
    case DType::I32: *out = ncclInt32; return true;
    case DType::U8: *out = ncclUint8; return !reduction;
  }
  return false;
}

bool overlaps(const Tensor& a, const Tensor& b) {
  auto pa = static_cast<const char*>(a.data()), pb = static_cast<const char*>(b.data());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

}  // namespace

// ---- Work --------------------------------------------------------------------------

class NcclWork final : public Work {
 public:
  NcclWork(NcclComm* comm, cudaEvent_t event, const char* op)
      : comm_(comm), event_(event), op_(op), timeout_s_(comm->timeout_s_) {}

  void wait() override {
    if (state_ == State::Done) return;
    if (comm_->aborted()) {
      state_ = State::Failed;
      fail("{}: the NCCL communicator was aborted after an earlier failure", comm_->where(op_));
    }
    comm_->use_device();
    const auto deadline = deadline_after(timeout_s_);
    for (int polls = 0;; ++polls) {
      cudaError_t q = cudaEventQuery(event_);
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) {
        (void)cudaGetLastError();
        state_ = State::Failed;
        comm_->abort_and_throw(fmt::format("{}: CUDA error while waiting: {} ({})",
                                           comm_->where(op_), cudaGetErrorName(q),
                                           cudaGetErrorString(q)));
      }
      ncclResult_t async = ncclSuccess;
      ncclResult_t r = ncclCommGetAsyncError(comm_->comm_, &async);
      if (r != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
        state_ = State::Failed;
        comm_->abort_and_throw(fmt::format("{}: NCCL error: {}", comm_->where(op_),
                                           ncclGetErrorString(r != ncclSuccess ? r : async)));
      }
      if (Clock::now() >= deadline) {
        state_ = State::Failed;
        comm_->abort_and_throw(detail::timeout_message(comm_->rank_, comm_->world_rank_, op_,
                                                       comm_->name_, timeout_s_));
      }
      backoff(polls);
    }
    state_ = State::Done;
  }

  ~NcclWork() override {
    if (state_ == State::Pending && !comm_->aborted()) {
      try {
        wait();
      } catch (const std::exception& e) {
        abort_job(std::string(e.what()) + " (while destroying a Work that was never waited)");
      }
    }
    (void)cudaEventDestroy(event_);
  }

 private:
  enum class State { Pending, Done, Failed };
  NcclComm* comm_;
  cudaEvent_t event_;
  const char* op_;
  double timeout_s_;
  State state_ = State::Pending;
};

// ---- NcclComm ----------------------------------------------------------------------

NcclComm::NcclComm(MpiComm& group, CudaBackend& backend, std::string name, double timeout_s)
    : backend_(backend),
      device_(backend.device().index),
      name_(name.empty() ? group.name() : std::move(name)),
      timeout_s_(timeout_s > 0 ? timeout_s : group.timeout_s()),
      rank_(group.rank()),
      size_(group.size()),
      world_rank_(group.world_rank()) {
  use_device();
  // The id: made on rank 0, broadcast over MPI (within the group's timeout).
  ncclUniqueId id{};
  if (rank_ == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess)
      fail("{}: ncclGetUniqueId failed: {}", where("setup"), ncclGetErrorString(r));
  }
  group.broadcast(Tensor(&id, DType::U8, {int64_t(sizeof(id))}), 0);

  // A non-blocking communicator, so that setup too can time out.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, size_, id, rank_, &config);
  comm_ = comm;
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm_) abort_and_throw(fmt::format("{}: ncclCommInitRankConfig failed: {}",
                                           where("setup"), ncclGetErrorString(r)));
    fail("{}: ncclCommInitRankConfig failed: {}", where("setup"), ncclGetErrorString(r));
  }
  settle(r, "communicator setup (ncclCommInitRankConfig)");

  try {
    CUDA_CHECK(cudaMalloc(&barrier_word_, sizeof(int)));
    CUDA_CHECK(cudaMemset(barrier_word_, 0, sizeof(int)));
  } catch (const Error& e) {
    if (barrier_word_) (void)cudaFree(barrier_word_);
    abort_and_throw(e.what());
  }
}

NcclComm::~NcclComm() {
  (void)cudaSetDevice(device_);
  if (comm_) release_comm();
  // After the communicator is gone: cudaFree may wait for the device, and a hung
  // collective only ends once the communicator is aborted.
  if (barrier_word_) (void)cudaFree(barrier_word_);
}

void NcclComm::release_comm() noexcept {
  // Finalize flushes and waits for quiescence (non-blocking: poll); then Destroy frees
  // locally. If the peers never get there, Abort instead of hanging.
  ncclResult_t r = ncclCommFinalize(comm_);
  const auto deadline = deadline_after(timeout_s_);
  ncclResult_t state = r;
  for (int polls = 0; state == ncclInProgress; ++polls) {
    if (Clock::now() >= deadline) break;
    backoff(polls);
    if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
  }
  if (state == ncclSuccess) {
    ncclCommDestroy(comm_);
  } else {
    log::error("{}: NCCL communicator did not finalize cleanly ({}); aborting it",
               where("teardown"), ncclGetErrorString(state));
    ncclCommAbort(comm_);
  }
  comm_ = nullptr;
}

void NcclComm::set_timeout(double seconds) {
  if (!(seconds > 0))
    fail("communicator '{}': timeout must be > 0 seconds, got {}", name_, seconds);
  timeout_s_ = seconds;
}

std::string NcclComm::where(const char* op) const {
  return fmt::format("rank {} (world rank {}): {} on group '{}'", rank_, world_rank_, op, name_);
}

void NcclComm::use_device() const { CUDA_CHECK(cudaSetDevice(device_)); }

void NcclComm::abort_and_throw(const std::string& message) {
  std::string full = message;
  if (comm_) {
    const char* last = ncclGetLastError(comm_);
    if (last && *last) full += fmt::format(" (NCCL: {})", last);
    (void)cudaSetDevice(device_);
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  throw Error(full);
}

void NcclComm::settle(int result, const char* op) {
  auto r = static_cast<ncclResult_t>(result);
  if (r == ncclSuccess) return;
  if (r != ncclInProgress)
    abort_and_throw(fmt::format("{}: NCCL call failed: {}", where(op), ncclGetErrorString(r)));
  const auto deadline = deadline_after(timeout_s_);
  for (int polls = 0;; ++polls) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
    if (q != ncclSuccess) state = q;
    if (state == ncclSuccess) return;
    if (state != ncclInProgress)
      abort_and_throw(fmt::format("{}: NCCL error: {}", where(op), ncclGetErrorString(state)));
    if (Clock::now() >= deadline)
      abort_and_throw(detail::timeout_message(rank_, world_rank_, op, name_, timeout_s_));
    backoff(polls);
  }
}

void NcclComm::check_device(const Tensor& t, const char* op, const char* what) const {
  if (aborted())
    fail("{}: the NCCL communicator was aborted after an earlier failure", where(op));
  if (!t.defined()) fail("{}: `{}` is an undefined tensor", where(op), what);
  if (t.device() != backend_.device())
    fail("{}: NcclComm moves tensors on {}, but `{}` is {} (use MpiComm for host tensors)",
         where(op), backend_.device().str(), what, t.str());
}

std::unique_ptr<Work> NcclComm::finish(const char* op) {
  cudaEvent_t event = nullptr;
  try {
    CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(event, backend_.stream()));
  } catch (const Error& e) {
    if (event) (void)cudaEventDestroy(event);
    abort_and_throw(fmt::format("{}: {}", where(op), e.what()));
  }
  return std::make_unique<NcclWork>(this, event, op);
}

std::unique_ptr<Work> NcclComm::all_reduce_async(Tensor x, ReduceOp op) {
  const char* name = "all_reduce";
  check_device(x, name, "x");
  ncclDataType_t type;
  if (!nccl_type(x.dtype(), true, &type))
    fail("{}: NcclComm reduces f32, bf16, f16 and i32 tensors, got {}", where(name), x.str());
  use_device();
  settle(ncclAllReduce(x.data(), x.data(), size_t(x.numel()), type,
                       op == ReduceOp::Sum ? ncclSum : ncclMax, comm_, backend_.stream()),
         name);
  bytes_.by_op[name] += 2 * x.nbytes();  // reduce-scatter + all-gather volume
  return finish(name);
}

std::unique_ptr<Work> NcclComm::reduce_scatter_async(Tensor out, Tensor in) {
  const char* name = "reduce_scatter";
  check_device(out, name, "out");
  check_device(in, name, "in");
  ncclDataType_t type;
  if (!nccl_type(in.dtype(), true, &type) || out.dtype() != in.dtype())
    fail("{}: NcclComm reduces f32, bf16, f16 and i32 tensors of one dtype, got out {} and in {}",
         where(name), out.str(), in.str());
  if (in.numel() != out.numel() * size_)
    fail("{} of {} ranks: in must hold {} × out elements, got out {} and in {}", where(name),
         size_, size_, out.str(), in.str());
  const char* own = static_cast<const char*>(in.data()) + size_t(rank_) * out.nbytes();
  if (out.data() != own && overlaps(out, in))
    fail("{}: out overlaps in without being this rank's shard of it", where(name));
  use_device();
  settle(ncclReduceScatter(in.data(), out.data(), size_t(out.numel()), type, ncclSum, comm_,
                           backend_.stream()),
         name);
  bytes_.by_op[name] += in.nbytes();
  return finish(name);
}

std::unique_ptr<Work> NcclComm::all_gather_async(Tensor out, Tensor in) {
  const char* name = "all_gather";
  check_device(out, name, "out");
  check_device(in, name, "in");
  ncclDataType_t type;
  if (!nccl_type(in.dtype(), false, &type) || out.dtype() != in.dtype() ||
      out.numel() != in.numel() * size_)
    fail("{} of {} ranks: out must hold {} × in elements of the same dtype, got out {} and in {}",
         where(name), size_, size_, out.str(), in.str());
  const char* own = static_cast<const char*>(out.data()) + size_t(rank_) * in.nbytes();
  if (in.data() != own && overlaps(out, in))
    fail("{}: in overlaps out without being this rank's shard of it", where(name));
  use_device();
  settle(ncclAllGather(in.data(), out.data(), size_t(in.numel()), type, comm_, backend_.stream()),
         name);
  bytes_.by_op[name] += out.nbytes();
  return finish(name);
}

std::unique_ptr<Work> NcclComm::broadcast_async(Tensor x, int root) {
  const char* name = "broadcast";
  check_device(x, name, "x");
  if (root < 0 || root >= size_)
    fail("{}: root {} is not a rank of this {}-rank group", where(name), root, size_);
  ncclDataType_t type;
  if (!nccl_type(x.dtype(), false, &type))
    fail("{}: unsupported dtype in {}", where(name), x.str());
  use_device();
  settle(ncclBroadcast(x.data(), x.data(), size_t(x.numel()), type, root, comm_,
                       backend_.stream()),
         name);
  bytes_.by_op[name] += x.nbytes();
  return finish(name);
}

void NcclComm::barrier() {
  const char* name = "barrier";
  if (aborted())
    fail("{}: the NCCL communicator was aborted after an earlier failure", where(name));
  use_device();
  settle(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum, comm_,
                       backend_.stream()),
         name);
  finish(name)->wait();
}

}  // namespace temper
