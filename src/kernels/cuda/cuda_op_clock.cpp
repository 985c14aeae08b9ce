// The CUDA backend's OpClock: a pair of CUDA events per interval, recorded on the
// backend's stream, read back with cudaEventElapsedTime once the last one is reached.
// Events are pooled across steps, so a profiled step creates none after the first.
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"

namespace temper {
namespace {

class CudaEventClock final : public OpClock {
 public:
  CudaEventClock(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~CudaEventClock() override {
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
  }
  CudaEventClock(const CudaEventClock&) = delete;
  CudaEventClock& operator=(const CudaEventClock&) = delete;

  void start() override { record(); }
  void stop() override { record(); }

  std::vector<double> take_seconds() override {
    std::vector<double> seconds;
    if (used_ == 0) return seconds;
    if (used_ % 2 != 0) fail("CUDA op clock: start() without stop() before take_seconds()");
    CUDA_CHECK(cudaEventSynchronize(events_[used_ - 1]));
    seconds.reserve(used_ / 2);
    for (size_t i = 0; i < used_; i += 2) {
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
      seconds.push_back(double(ms) / 1e3);
    }
    used_ = 0;
    return seconds;
  }
  std::string what() const override { return "CUDA events"; }

 private:
  void record() {
    if (used_ == events_.size()) {
      CUDA_CHECK(cudaSetDevice(device_));
      cudaEvent_t e = nullptr;
      CUDA_CHECK(cudaEventCreate(&e));  // timing enabled (the default flags)
      events_.push_back(e);
    }
    CUDA_CHECK(cudaEventRecord(events_[used_++], stream_));
  }

  int device_;
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;  // [2·intervals], reused across steps
  size_t used_ = 0;
};

}  // namespace

std::unique_ptr<OpClock> CudaBackend::make_op_clock() {
  return std::make_unique<CudaEventClock>(index_, stream_);
}

}  // namespace temper
