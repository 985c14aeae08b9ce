// Dynamic loss scaling for f16 training (as torch.cuda.amp.GradScaler does): the loss is
// multiplied by `scale` so small gradients survive f16; a step whose gradients overflow is
// skipped and the scale halved; after `window` good steps in a row it doubles.
#pragma once
#include <cstdint>

namespace temper {

class DynamicLossScale {
 public:
  DynamicLossScale(double initial, int64_t window) : scale_(initial), window_(window) {}
  double scale() const { return scale_; }
  void overflow();   // halve (not below 1), restart the window
  void good_step();  // count; double after `window` in a row
  int64_t overflows() const { return overflows_; }
  int64_t good_steps() const { return good_; }  // in the current window
  // The state a checkpoint saved (scale, good_steps(), overflows()).
  void restore(double scale, int64_t good_steps, int64_t overflows) {
    scale_ = scale;
    good_ = good_steps;
    overflows_ = overflows;
  }

 private:
  double scale_;
  int64_t window_;
  int64_t good_ = 0;
  int64_t overflows_ = 0;
};

}  // namespace temper
