// Interval timing on a backend's queue of work, for `temper bench --profile`
// (kernels/profiling_backend.h). start() and stop() bracket one op as the backend executes
// it: on the CPU, where an op has finished when it returns, they read the host clock; on
// CUDA they record events on the backend's stream, so an interval is the device time of
// the work enqueued between them, and recording never waits for the device.
#pragma once
#include <chrono>
#include <string>
#include <vector>

namespace temper {

class OpClock {
 public:
  virtual ~OpClock() = default;
  virtual void start() = 0;  // an interval begins after all work enqueued so far
  virtual void stop() = 0;   // and ends after all work enqueued so far
  // Seconds of every start/stop pair since the last call, in order; waits for the last
  // stop() to be reached. Intervals never overlap (each stop() precedes the next start()).
  virtual std::vector<double> take_seconds() = 0;
  virtual std::string what() const = 0;  // how it measures, for reports
};

// For backends whose ops have completed when they return (the CPU backend).
class HostOpClock final : public OpClock {
 public:
  void start() override { begin_ = std::chrono::steady_clock::now(); }
  void stop() override {
    seconds_.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - begin_).count());
  }
  std::vector<double> take_seconds() override {
    std::vector<double> out;
    out.swap(seconds_);
    return out;
  }
  std::string what() const override { return "host clock"; }

 private:
  std::chrono::steady_clock::time_point begin_;
  std::vector<double> seconds_;
};

}  // namespace temper
