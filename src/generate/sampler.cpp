#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace temper {

void SamplingOptions::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    fail("--temperature must be a finite number >= 0 (0 = greedy), got {}", temperature);
  if (top_k < 0) fail("--top-k must be >= 0 (0 = no limit), got {}", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("--top-p must be in (0, 1], got {}", top_p);
}

int32_t argmax(std::span<const float> logits) {
  int32_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i)
    if (!std::isnan(logits[i]) && (best < 0 || logits[i] > logits[best])) best = int32_t(i);
  if (best < 0) fail("sampling: all {} logits are NaN", logits.size());
  return best;
}

namespace {

using Dist = std::vector<std::pair<int32_t, double>>;

void normalise(Dist& d) {
  double sum = 0.0;
  for (const auto& e : d) sum += e.second;
  for (auto& e : d) e.second /= sum;
}

}  // namespace

Dist sampling_distribution(std::span<const float> logits, const SamplingOptions& o) {
  o.validate();
  const int32_t best = argmax(logits);
  if (o.greedy()) return {{best, 1.0}};
  // softmax(logits / T) in double; the argmax term is exp(0) = 1, so the sum is >= 1.
  const double top = logits[best], inv_t = 1.0 / double(o.temperature);
  Dist d;
  d.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    const double p = std::exp((double(logits[i]) - top) * inv_t);  // NaN and -inf give 0/NaN
    if (p > 0.0) d.emplace_back(int32_t(i), p);
  }
  if (d.empty()) return {{best, 1.0}};  // +inf logits: inf − inf is NaN
  normalise(d);
  const bool top_k = o.top_k > 0 && size_t(o.top_k) < d.size();
  if (!top_k && o.top_p >= 1.0f) return d;

  auto more_likely = [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  };
  if (top_k) {
    std::partial_sort(d.begin(), d.begin() + o.top_k, d.end(), more_likely);
    d.resize(size_t(o.top_k));
    normalise(d);
  } else {
    std::sort(d.begin(), d.end(), more_likely);
  }
  if (o.top_p < 1.0f) {
    // Keep a token while the mass before it is below top_p.
    double before = 0.0;
    size_t keep = 0;
    while (keep < d.size() && before < double(o.top_p)) before += d[keep++].second;
    d.resize(keep);
    normalise(d);
  }
  return d;
}

Sampler::Sampler(SamplingOptions options)
    : options_(options), rng_(rng_stream(options.seed, RngPurpose::Sampling)) {
  options_.validate();
}

int32_t Sampler::next(std::span<const float> logits) {
  if (options_.greedy()) return argmax(logits);
  const Dist d = sampling_distribution(logits, options_);
  // u in (0, 1] with 53 random bits from one Philox block; the first token whose
  // cumulative probability reaches u is drawn.
  const uint64_t hi = rng_.bits(), lo = rng_.bits();
  const double u = (double(((hi << 32) | lo) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  double cumulative = 0.0;
  for (const auto& [token, p] : d) {
    cumulative += p;
    if (cumulative >= u) return token;
  }
  return d.back().first;  // rounding left the sum just below u
}

}  // namespace temper
