#include "train/progress.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"

namespace temper {

OutputFacts output_facts() {
  OutputFacts f;
  if (const char* v = std::getenv("TEMPER_PROGRESS")) f.temper_progress = v;
  f.under_mpirun = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr;
  f.stdout_tty = isatty(fileno(stdout));
  if (f.under_mpirun) {
    // The parent's fd 1, opened anew (a terminal, a file, a pipe); never blocks.
    const std::string link = fmt::format("/proc/{}/fd/1", getppid());
    const int fd = ::open(link.c_str(), O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
      f.parent_stdout_tty = isatty(fd) != 0;
      ::close(fd);
    }
  }
  return f;
}

bool auto_progress_bar(const OutputFacts& f) {
  if (f.temper_progress == "bar") return true;
  if (f.temper_progress == "plain") return false;
  if (!f.temper_progress.empty())
    fail("TEMPER_PROGRESS='{}': expected bar or plain (or unset)", f.temper_progress);
  if (f.under_mpirun) return f.stdout_tty && f.parent_stdout_tty.value_or(false);
  return f.stdout_tty;
}

Progress::Progress(int64_t total_steps, const std::string& mode, int64_t log_every,
                   int64_t done_steps)
    : total_(total_steps), done_(done_steps), log_every_(log_every < 1 ? 1 : log_every),
      start_(std::chrono::steady_clock::now()) {
  if (mode == "auto") bar_ = auto_progress_bar(output_facts());
  else if (mode == "bar") bar_ = true;
  else if (mode == "plain") bar_ = false;
  else fail("train.progress must be auto, bar or plain, got '{}'", mode);
}

void Progress::step(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s) {
  if (!bar_) {
    if (step % log_every_ == 0 || step == total_)
      log::info("step {:>6}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | {:.0f} tok/s", step,
                total_, loss, lr, grad_norm, tokens_per_s);
    return;
  }
  const int width = 30;
  const int filled = int(double(step) / double(total_) * width);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t here = step - done_;  // steps this process has run
  const double eta = here > 0 ? elapsed / double(here) * double(total_ - step) : 0.0;
  fmt::print("\r[{}{}] {}/{} loss {:.4f} lr {:.2e} {:.0f} tok/s eta {:.0f}s   ",
             std::string(filled, '#'), std::string(width - filled, '.'), step, total_, loss, lr,
             tokens_per_s, eta);
  std::fflush(stdout);
  bar_drawn_ = true;
}

void Progress::eval(int64_t step, double val_loss) {
  if (bar_drawn_) fmt::print("\n");
  bar_drawn_ = false;
  log::info("step {:>6}/{} | val loss {:.4f}", step, total_, val_loss);
}

void Progress::finish() {
  if (bar_drawn_) fmt::print("\n");
  bar_drawn_ = false;
}

}  // namespace temper
