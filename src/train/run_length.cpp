#include "train/run_length.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "core/error.h"

namespace temper {

double RunLength::epochs() const {
  return double(steps) * double(micro_per_step) / double(std::max<int64_t>(batches_per_epoch, 1));
}

std::string RunLength::describe(const RunConfig& c) const {
  const std::string from = c.train.steps > 0    ? fmt::format("train.steps={}", c.train.steps)
                           : c.train.epochs > 0 ? fmt::format("train.epochs={}", c.train.epochs)
                                                : std::string("one epoch: train.steps and train.epochs unset");
  return fmt::format("{} steps = {:.3g} epochs ({}; an epoch is {} micro-batches of {} × {} "
                     "tokens, a step {})",
                     steps, epochs(), from, batches_per_epoch, c.train.micro_batch_size,
                     c.train.seq_len, micro_per_step);
}

RunLength run_length(const RunConfig& c, int64_t batches_per_epoch, int dp, bool has_validation) {
  TEMPER_CHECK(batches_per_epoch > 0 && dp > 0, "{} batches an epoch, dp {}", batches_per_epoch, dp);
  RunLength r;
  r.batches_per_epoch = batches_per_epoch;
  r.micro_per_step = c.train.grad_accum * dp;
  if (c.train.steps > 0) {
    r.steps = c.train.steps;
  } else {
    const double epochs = c.train.epochs > 0 ? c.train.epochs : 1.0;
    // A little slack so that an epoch count that is exact in decimal (0.3 × 10 batches)
    // does not round up to one step more through binary floating point.
    const double micro = epochs * double(batches_per_epoch) / double(r.micro_per_step);
    r.steps = std::max<int64_t>(1, int64_t(std::ceil(micro - 1e-9)));
  }
  if (c.train.eval_every > 0) r.eval_every = c.train.eval_every;
  else if (c.train.eval_every < 0 && has_validation) r.eval_every = std::max<int64_t>(1, (r.steps + 5) / 10);
  return r;
}

}  // namespace temper
