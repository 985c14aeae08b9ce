#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace temper {

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps) return lr * double(step) / double(warmup_steps);
  if (kind == "constant") return lr;
  const double min_lr = lr * min_lr_ratio;
  const int64_t span = std::max<int64_t>(total_steps - warmup_steps, 1);
  const double progress = std::clamp(double(step - warmup_steps) / double(span), 0.0, 1.0);
  if (kind == "cosine") return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  if (kind == "linear") return lr - (lr - min_lr) * progress;
  fail("unknown lr schedule '{}' (expected cosine, linear or constant)", kind);
}

}  // namespace temper
