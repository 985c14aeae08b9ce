#include "parallel/mpi_comm.h"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <utility>

#include "core/error.h"
#include "core/log.h"

namespace temper {

namespace detail {

std::string timeout_message(int rank, int world_rank, const std::string& op,
                            const std::string& group, double timeout_s) {
  return fmt::format(
      "rank {} (world rank {}): {} on group '{}' did not complete within {:g} s — a rank may "
      "have died or stalled",
      rank, world_rank, op, group, timeout_s);
}

}  // namespace detail

namespace {

using Clock = std::chrono::steady_clock;

std::string mpi_error_string(int rc) {
  char buf[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", rc);
  return std::string(buf, size_t(len));
}

void check_mpi(int rc, const char* call, const std::string& where) {
  if (rc != MPI_SUCCESS) fail("{}: {} failed: {}", where, call, mpi_error_string(rc));
}

// Where an operation ran, for messages; copied into each Work so a Work never points
// back at its communicator.
struct Site {
  int rank = 0;
  int world_rank = 0;
  std::string group;
  double timeout_s = 0;

  std::string where(const char* op) const {
    return fmt::format("rank {} (world rank {}): {} on group '{}'", rank, world_rank, op, group);
  }
};

// Polls `request` until it completes (true) or `timeout_s` passes (false). Yields for the
// first polls, then sleeps briefly: ranks may outnumber cores, and a spinning waiter
// would take the core from the rank it waits for.
bool poll(MPI_Request& request, double timeout_s, const Site& site, const char* op) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  for (int polls = 0;; ++polls) {
    int done = 0;
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test", site.where(op));
    if (done) return true;
    if (Clock::now() >= deadline) return false;
    if (polls < 100)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(polls < 1000 ? 50 : 500));
  }
}

void wait_or_throw(MPI_Request& request, const Site& site, const char* op) {
  if (!poll(request, site.timeout_s, site, op))
    throw Error(detail::timeout_message(site.rank, site.world_rank, op, site.group,
                                        site.timeout_s));
}

class MpiWork final : public Work {
 public:
  MpiWork(MPI_Request request, const char* op, Site site, std::function<void()> on_complete)
      : request_(request), op_(op), site_(std::move(site)), on_complete_(std::move(on_complete)) {}

  void wait() override {
    if (state_ == State::Done) return;
    bool done = false;
    try {
      done = poll(request_, site_.timeout_s, site_, op_);
    } catch (...) {
      state_ = State::Failed;  // MPI reported an error: the request is gone
      throw;
    }
    if (!done) {
      state_ = State::TimedOut;
      throw Error(detail::timeout_message(site_.rank, site_.world_rank, op_, site_.group,
                                          site_.timeout_s));
    }
    state_ = State::Done;
    if (on_complete_) on_complete_();
  }

  ~MpiWork() override {
    // A collective cannot be cancelled or freed (MPI 3.1 §5.12), and its buffers are the
    // caller's: an un-waited Work is waited here. A timed-out one is left posted (the
    // caller has the error and is expected to abort the job).
    if (state_ != State::Pending) return;
    try {
      wait();
    } catch (const std::exception& e) {
      abort_job(std::string(e.what()) + " (while destroying a Work that was never waited)");
    }
  }

 private:
  enum class State { Pending, Done, TimedOut, Failed };
  MPI_Request request_;
  const char* op_;
  Site site_;
  std::function<void()> on_complete_;
  State state_ = State::Pending;
};

MPI_Datatype reduce_type(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::I32: return MPI_INT32_T;
    default: return MPI_DATATYPE_NULL;
  }
}

int checked_count(size_t n, const std::string& where, const char* unit) {
  if (n > size_t(INT_MAX))
    fail("{}: {} {} exceed MPI's int count limit ({}); split the buffer", where, n, unit,
         INT_MAX);
  return int(n);
}

bool overlaps(const Tensor& a, const Tensor& b) {
  auto pa = static_cast<const char*>(a.data()), pb = static_cast<const char*>(b.data());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

}  // namespace

// ---- MpiRuntime ----------------------------------------------------------------------

MpiRuntime::MpiRuntime() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized)
    fail("MPI was already finalized in this process and cannot start again: create one "
         "MpiRuntime at the start of main and keep it until the end");
  if (initialized) {
    MPI_Query_thread(&thread_level_);
  } else {
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &thread_level_);
    if (rc != MPI_SUCCESS) fail("MPI_Init_thread failed: {}", mpi_error_string(rc));
    owns_ = true;
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) log::set_rank(rank);
}

MpiRuntime::~MpiRuntime() {
  if (!owns_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

bool MpiRuntime::active() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

// ---- MpiComm -------------------------------------------------------------------------

MpiComm::MpiComm(MPI_Comm comm, std::string name, double timeout_s)
    : name_(std::move(name)), timeout_s_(timeout_s) {
  if (!MpiRuntime::active())
    fail("MpiComm '{}' needs MPI: create a temper::MpiRuntime first (and keep it alive)", name_);
  set_timeout(timeout_s);
  // Ranks of the parent, for the messages of the dup itself.
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
  Site site{rank_, world_rank_, name_, timeout_s_};
  MPI_Request request;
  check_mpi(MPI_Comm_idup(comm, &comm_, &request), "MPI_Comm_idup", site.where("setup"));
  wait_or_throw(request, site, "communicator setup (MPI_Comm_idup)");
  init_ranks();
}

MpiComm::MpiComm(Adopt, MPI_Comm owned, std::string name, double timeout_s)
    : comm_(owned), name_(std::move(name)), timeout_s_(timeout_s) {
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  init_ranks();
}

void MpiComm::init_ranks() {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);  // errors become temper::Error
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiComm::~MpiComm() {
  if (comm_ != MPI_COMM_NULL && MpiRuntime::active()) MPI_Comm_free(&comm_);
}

void MpiComm::set_timeout(double seconds) {
  if (!(seconds > 0))
    fail("communicator '{}': timeout must be > 0 seconds, got {}", name_, seconds);
  timeout_s_ = seconds;
}

std::vector<int> MpiComm::world_ranks() const {
  MPI_Group mine, world;
  MPI_Comm_group(comm_, &mine);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  std::vector<int> here(static_cast<size_t>(size_)), there(static_cast<size_t>(size_));
  for (int i = 0; i < size_; ++i) here[size_t(i)] = i;
  MPI_Group_translate_ranks(mine, size_, here.data(), world, there.data());
  MPI_Group_free(&mine);
  MPI_Group_free(&world);
  return there;
}

void MpiComm::check_host(const Tensor& t, const char* op, const char* what) const {
  if (!t.defined())
    fail("rank {}: {} on group '{}': `{}` is an undefined tensor", rank_, op, name_, what);
  if (t.device().kind != DeviceKind::CPU)
    fail("rank {}: {} on group '{}': MpiComm moves host tensors, but `{}` is {} (use NcclComm "
         "for device tensors)",
         rank_, op, name_, what, t.str());
}

std::unique_ptr<Work> MpiComm::make_work(const char* op, MPI_Request request) const {
  return std::make_unique<MpiWork>(request, op, Site{rank_, world_rank_, name_, timeout_s_},
                                   nullptr);
}

std::unique_ptr<Work> MpiComm::all_reduce_async(Tensor x, ReduceOp op) {
  const char* name = "all_reduce";
  check_host(x, name, "x");
  MPI_Datatype type = reduce_type(x.dtype());
  if (type == MPI_DATATYPE_NULL)
    fail("rank {}: all_reduce on group '{}': MpiComm reduces f32 and i32 tensors, got {}", rank_,
         name_, x.str());
  Site site{rank_, world_rank_, name_, timeout_s_};
  int count = checked_count(size_t(x.numel()), site.where(name), "elements");
  MPI_Request request;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, x.data(), count, type,
                           op == ReduceOp::Sum ? MPI_SUM : MPI_MAX, comm_, &request),
            "MPI_Iallreduce", site.where(name));
  bytes_.by_op[name] += 2 * x.nbytes();  // reduce-scatter + all-gather volume
  return make_work(name, request);
}

std::unique_ptr<Work> MpiComm::reduce_scatter_async(Tensor out, Tensor in) {
  const char* name = "reduce_scatter";
  check_host(out, name, "out");
  check_host(in, name, "in");
  MPI_Datatype type = reduce_type(in.dtype());
  if (type == MPI_DATATYPE_NULL || out.dtype() != in.dtype())
    fail("rank {}: reduce_scatter on group '{}': MpiComm reduces f32 and i32 tensors of one "
         "dtype, got out {} and in {}",
         rank_, name_, out.str(), in.str());
  if (in.numel() != out.numel() * size_)
    fail("rank {}: reduce_scatter on group '{}' of {} ranks: in must hold {} × out elements, got "
         "out {} and in {}",
         rank_, name_, size_, size_, out.str(), in.str());
  Site site{rank_, world_rank_, name_, timeout_s_};
  int count = checked_count(size_t(out.numel()), site.where(name), "elements");
  const size_t shard = out.nbytes();
  char* own = static_cast<char*>(in.data()) + size_t(rank_) * shard;
  MPI_Request request;
  std::function<void()> after;
  if (out.data() == own) {
    // In place: MPI leaves the result at the front of `in`; move it to this rank's shard.
    check_mpi(MPI_Ireduce_scatter_block(MPI_IN_PLACE, in.data(), count, type, MPI_SUM, comm_,
                                        &request),
              "MPI_Ireduce_scatter_block", site.where(name));
    if (rank_ != 0)
      after = [dst = out.data(), src = in.data(), shard] { std::memmove(dst, src, shard); };
  } else {
    if (overlaps(out, in))
      fail("rank {}: reduce_scatter on group '{}': out overlaps in without being this rank's "
           "shard of it",
           rank_, name_);
    check_mpi(MPI_Ireduce_scatter_block(in.data(), out.data(), count, type, MPI_SUM, comm_,
                                        &request),
              "MPI_Ireduce_scatter_block", site.where(name));
  }
  bytes_.by_op[name] += in.nbytes();
  return std::make_unique<MpiWork>(request, name, site, std::move(after));
}

std::unique_ptr<Work> MpiComm::all_gather_async(Tensor out, Tensor in) {
  const char* name = "all_gather";
  check_host(out, name, "out");
  check_host(in, name, "in");
  if (out.dtype() != in.dtype() || out.numel() != in.numel() * size_)
    fail("rank {}: all_gather on group '{}' of {} ranks: out must hold {} × in elements of the "
         "same dtype, got out {} and in {}",
         rank_, name_, size_, size_, out.str(), in.str());
  Site site{rank_, world_rank_, name_, timeout_s_};
  int count = checked_count(in.nbytes(), site.where(name), "bytes");
  char* own = static_cast<char*>(out.data()) + size_t(rank_) * in.nbytes();
  MPI_Request request;
  if (in.data() == own) {
    check_mpi(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, out.data(), count, MPI_BYTE,
                             comm_, &request),
              "MPI_Iallgather", site.where(name));
  } else {
    if (overlaps(out, in))
      fail("rank {}: all_gather on group '{}': in overlaps out without being this rank's shard "
           "of it",
           rank_, name_);
    check_mpi(MPI_Iallgather(in.data(), count, MPI_BYTE, out.data(), count, MPI_BYTE, comm_,
                             &request),
              "MPI_Iallgather", site.where(name));
  }
  bytes_.by_op[name] += out.nbytes();
  return make_work(name, request);
}

std::unique_ptr<Work> MpiComm::broadcast_async(Tensor x, int root) {
  const char* name = "broadcast";
  check_host(x, name, "x");
  if (root < 0 || root >= size_)
    fail("rank {}: broadcast on group '{}': root {} is not a rank of this {}-rank group", rank_,
         name_, root, size_);
  Site site{rank_, world_rank_, name_, timeout_s_};
  int count = checked_count(x.nbytes(), site.where(name), "bytes");
  MPI_Request request;
  check_mpi(MPI_Ibcast(x.data(), count, MPI_BYTE, root, comm_, &request), "MPI_Ibcast",
            site.where(name));
  bytes_.by_op[name] += x.nbytes();
  return make_work(name, request);
}

void MpiComm::barrier() {
  Site site{rank_, world_rank_, name_, timeout_s_};
  MPI_Request request;
  check_mpi(MPI_Ibarrier(comm_, &request), "MPI_Ibarrier", site.where("barrier"));
  wait_or_throw(request, site, "barrier");
}

std::unique_ptr<MpiComm> MpiComm::split(int color, int key, std::string name) const {
  // Exchange (color, key) first, within the timeout: every rank then sees a bad color,
  // and MPI_Comm_split (blocking) starts only once all ranks have arrived.
  Site site{rank_, world_rank_, name_, timeout_s_};
  int mine[2] = {color, key};
  std::vector<int> all(size_t(2 * size_));
  MPI_Request request;
  check_mpi(MPI_Iallgather(mine, 2, MPI_INT, all.data(), 2, MPI_INT, comm_, &request),
            "MPI_Iallgather", site.where("split"));
  wait_or_throw(request, site, "split");
  for (int r = 0; r < size_; ++r)
    if (all[size_t(2 * r)] < 0)
      fail("split of group '{}' into '{}': rank {} passed color {}; colors must be >= 0", name_,
           name, r, all[size_t(2 * r)]);
  MPI_Comm child = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(comm_, color, key, &child), "MPI_Comm_split", site.where("split"));
  return std::unique_ptr<MpiComm>(new MpiComm(Adopt{}, child, std::move(name), timeout_s_));
}

// ---- job-level helpers ---------------------------------------------------------------

void check_launch(const ProcessInfo& env) {
  if (!MpiRuntime::active()) fail("check_launch needs MPI: create a temper::MpiRuntime first");
  int mpi_rank = 0, mpi_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
  if (env.launcher == "none") {
    if (mpi_size > 1)
      fail("MPI reports {} processes but neither Open MPI (OMPI_COMM_WORLD_*) nor Slurm "
           "(SLURM_*) rank variables are set, so local ranks (GPU choice) are unknown; launch "
           "with Open MPI's mpirun or with srun",
           mpi_size);
    return;
  }
  if (env.rank != mpi_rank || env.world_size != mpi_size)
    fail("the {} environment says rank {} of {} but MPI says rank {} of {}{}", env.launcher,
         env.rank, env.world_size, mpi_rank, mpi_size,
         mpi_size == 1 && env.launcher == "slurm"
             ? ": each task started MPI on its own; is MPI built with Slurm's PMI support? try "
               "srun --mpi=pmix (srun --mpi=list shows the plugins)"
             : "");
}

void abort_job(const std::string& message) {
  log::error("{}", message);
  std::fflush(stdout);
  std::fflush(stderr);
  if (MpiRuntime::active()) MPI_Abort(MPI_COMM_WORLD, 1);
  std::exit(1);
}

}  // namespace temper
