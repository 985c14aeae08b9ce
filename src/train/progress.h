// Rank 0's view of a run: a one-line progress bar redrawn in place on a terminal,
// plain log lines otherwise (files, Slurm logs, CI).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace temper {

class Progress {
 public:
  // mode: "auto" (bar when stdout is a terminal), "bar" or "plain". `done_steps`: steps
  // already trained before this process started (a resume), left out of the ETA.
  Progress(int64_t total_steps, const std::string& mode, int64_t log_every, int64_t done_steps = 0);
  void step(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s);
  void eval(int64_t step, double val_loss);
  void finish();

 private:
  int64_t total_, done_;
  bool bar_;
  int64_t log_every_;
  std::chrono::steady_clock::time_point start_;
  bool bar_drawn_ = false;
};

}  // namespace temper
