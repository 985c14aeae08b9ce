// Learning-rate schedule: linear warmup, then cosine, linear or constant decay to
// lr · min_lr_ratio at the last step. Steps are 1-based.
#pragma once
#include <cstdint>
#include <string>

namespace temper {

struct LrSchedule {
  double lr = 3e-4;
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  std::string kind = "cosine";  // cosine | linear | constant

  double at(int64_t step) const;
};

}  // namespace temper
