#include "model/rope.h"

#include <cmath>

namespace temper {

std::vector<double> rope_inverse_frequencies(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(c.head_dim));
  if (!c.rope_scaling.enabled()) return inv;
  // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the band in
  // between interpolated smoothly.
  const RopeScaling& s = c.rope_scaling;
  const double old_ctx = double(s.original_max_position_embeddings);
  const double low_wavelen = old_ctx / s.low_freq_factor;
  const double high_wavelen = old_ctx / s.high_freq_factor;
  for (auto& f : inv) {
    double wavelen = 2.0 * M_PI / f;
    if (wavelen < high_wavelen) continue;
    if (wavelen > low_wavelen) {
      f /= s.factor;
    } else {
      double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = (1.0 - smooth) * f / s.factor + smooth * f;
    }
  }
  return inv;
}

void rope_tables(const ModelConfig& c, int64_t positions, std::vector<float>& cos,
                 std::vector<float>& sin) {
  std::vector<double> inv = rope_inverse_frequencies(c);
  const int64_t half = int64_t(inv.size());
  cos.resize(positions * half);
  sin.resize(positions * half);
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      double a = double(p) * inv[i];
      cos[p * half + i] = float(std::cos(a));
      sin[p * half + i] = float(std::sin(a));
    }
}

}  // namespace temper
