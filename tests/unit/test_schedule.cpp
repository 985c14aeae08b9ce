// LR schedule shapes and the clip factor; each property is what the config promises.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "optim/adamw.h"
#include "optim/schedule.h"

namespace temper {
namespace {

TEST(LrSchedule, WarmupThenDecayToMinimum) {
  for (std::string kind : {"cosine", "linear"}) {
    LrSchedule s{1e-3, 0.1, 10, 110, kind};
    EXPECT_DOUBLE_EQ(s.at(1), 1e-4) << kind;   // linear warmup from 0
    EXPECT_DOUBLE_EQ(s.at(10), 1e-3) << kind;  // peak at the end of warmup
    EXPECT_NEAR(s.at(110), 1e-4, 1e-15) << kind;  // lr · min_lr_ratio at the last step
    EXPECT_NEAR(s.at(60), 0.55e-3, 1e-12) << kind;  // halfway: the mean of peak and floor
    for (int64_t t = 11; t <= 110; ++t) EXPECT_LE(s.at(t), s.at(t - 1) + 1e-18) << kind << t;
  }
  LrSchedule cosine{1e-3, 0.0, 0, 100, "cosine"};
  EXPECT_NEAR(cosine.at(25), 1e-3 * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  LrSchedule constant{1e-3, 0.1, 5, 100, "constant"};
  EXPECT_DOUBLE_EQ(constant.at(3), 0.6e-3);
  EXPECT_DOUBLE_EQ(constant.at(100), 1e-3);
  LrSchedule bad{1e-3, 0.1, 0, 100, "exponential"};
  EXPECT_THROW(bad.at(5), Error);
}

TEST(GradClip, FactorFollowsTorchClipGradNorm) {
  EXPECT_EQ(clip_factor(0.5, 1.0), 1.0f);         // under the threshold: untouched
  EXPECT_FLOAT_EQ(clip_factor(4.0, 1.0), float(1.0 / (4.0 + 1e-6)));
  EXPECT_EQ(clip_factor(100.0, 0.0), 1.0f);       // disabled
}

}  // namespace
}  // namespace temper
