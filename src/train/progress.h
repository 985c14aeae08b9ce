// Rank 0's view of a run: a one-line progress bar redrawn in place on a terminal,
// plain log lines otherwise (files, Slurm logs, CI).
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace temper {

// What train.progress=auto looks at, for this process.
struct OutputFacts {
  std::string temper_progress;  // TEMPER_PROGRESS: "bar", "plain" or "" (unset)
  bool under_mpirun = false;    // OMPI_COMM_WORLD_SIZE is set
  bool stdout_tty = false;      // isatty(stdout)
  // Under mpirun: whether the parent's (mpirun's, on its node) stdout is a terminal;
  // nullopt when it cannot be told.
  std::optional<bool> parent_stdout_tty;
};
OutputFacts output_facts();

// auto: a bar only when the output reaches a terminal. TEMPER_PROGRESS decides when set
// (launch/temper-mpirun sets it from its own stdout). Under mpirun without it, the rank's
// stdout is a pty of mpirun's even when mpirun writes to a file, so mpirun's own stdout
// decides (unknown: plain). Otherwise isatty(stdout). A bad TEMPER_PROGRESS is an error.
bool auto_progress_bar(const OutputFacts& facts);

class Progress {
 public:
  // mode: "auto" (auto_progress_bar(output_facts())), "bar" or "plain". `done_steps`: steps
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
