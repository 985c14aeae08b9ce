// Choosing the next token from logits: greedy (argmax) or sampling from the softmax at a
// temperature, restricted to the top-k most likely tokens and then to the top-p nucleus,
// in that order (as Hugging Face's logits warpers apply them). Draws come from a Philox
// stream keyed by the seed (RngPurpose::Sampling), draw i for the i-th generated token, so
// a seed reproduces the text on any backend.
#pragma once
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace temper {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy; otherwise softmax(logits / temperature)
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = all
  float top_p = 1.0f;        // keep the smallest most-likely set with mass >= top_p; 1 = all
  uint64_t seed = 0;

  bool greedy() const { return temperature == 0.0f; }
  // Throws temper::Error naming the option when out of range (temperature >= 0, top_k >= 0,
  // 0 < top_p <= 1).
  void validate() const;
};

// Index of the largest logit (the lowest such index on ties); NaN logits are never chosen.
int32_t argmax(std::span<const float> logits);

// The distribution sampling draws from, as (token, probability) with probabilities summing
// to 1: p = softmax(logits / temperature); if top_k > 0, only the k largest p are kept
// (ties at the k-th value broken towards lower ids); if top_p < 1, of those, sorted by p
// descending, a token is kept while the mass of the tokens before it is < top_p (so the
// most likely one always stays); the kept p are renormalised. Tokens come sorted by
// probability descending (lower id first on ties) when a filter applies, else in id order.
// For temperature 0 it is the argmax with probability 1.
std::vector<std::pair<int32_t, double>> sampling_distribution(std::span<const float> logits,
                                                              const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(SamplingOptions options);
  // The next token: argmax when greedy, else an inverse-CDF draw from
  // sampling_distribution with the stream's next uniform number.
  int32_t next(std::span<const float> logits);
  uint64_t draws() const { return rng_.position(); }

 private:
  SamplingOptions options_;
  Rng rng_;
};

}  // namespace temper
