#include "optim/loss_scale.h"

#include <algorithm>

namespace temper {

void DynamicLossScale::overflow() {
  scale_ = std::max(1.0, scale_ * 0.5);
  good_ = 0;
  ++overflows_;
}

void DynamicLossScale::good_step() {
  if (++good_ >= window_) {
    scale_ *= 2.0;
    good_ = 0;
  }
}

}  // namespace temper
