// Philox4x32-10 counter-based random numbers (Salmon et al., SC'11), usable on host
// and device so CPU and GPU draw the same stream. A stream is keyed by
// (seed, purpose, rank): the seed is the key, and (purpose, rank) fill the upper half
// of the counter, so every stream has 2^64 independent 128-bit blocks. Element i of a
// stream uses block i, so any shard of a tensor can be drawn without the rest.
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>

#include "core/dtype.h"

namespace temper {

// What a stream is for; part of the key so streams never overlap.
enum class RngPurpose : uint32_t { Init = 1, Data = 2, Dropout = 3, Sampling = 4, Test = 5 };

struct Philox4x32 {
  uint32_t v[4];
};

TEMPER_HD inline Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                          uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;  // Weyl key increments
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(M0) * c0, p1 = uint64_t(M1) * c2;
    uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += W0; k1 += W1;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform in (0, 1]: never 0, so log() is safe.
TEMPER_HD inline float uint_to_unit(uint32_t x) { return (float(x >> 8) + 1.0f) * (1.0f / 16777216.0f); }

struct RngStream {
  uint64_t seed = 0;
  uint32_t purpose = 0;
  uint32_t sub = 0;  // rank, or a tensor's id for parameter init

  TEMPER_HD Philox4x32 block(uint64_t i) const {
    return philox4x32_10(uint32_t(i), uint32_t(i >> 32), sub, purpose, uint32_t(seed),
                         uint32_t(seed >> 32));
  }
  // Element i of the stream as U(0,1] and as N(0,1) (Box-Muller on the first two words).
  TEMPER_HD float uniform(uint64_t i) const { return uint_to_unit(block(i).v[0]); }
  TEMPER_HD float normal(uint64_t i) const {
    Philox4x32 b = block(i);
    float u1 = uint_to_unit(b.v[0]), u2 = uint_to_unit(b.v[1]);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
  }
  TEMPER_HD uint32_t bits(uint64_t i) const { return block(i).v[0]; }
};

// A stream for (seed, purpose, rank).
inline RngStream rng_stream(uint64_t seed, RngPurpose purpose, uint32_t rank = 0) {
  return {seed, uint32_t(purpose), rank};
}
// 32-bit FNV-1a of a name, to give each parameter its own init stream by name.
uint32_t name_hash(std::string_view name);

// Sequential host-side generator over one stream (shuffles, synthetic data).
class Rng {
 public:
  explicit Rng(RngStream s, uint64_t position = 0) : s_(s), pos_(position) {}
  float uniform() { return s_.uniform(pos_++); }
  float normal() { return s_.normal(pos_++); }
  uint32_t bits() { return s_.bits(pos_++); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) {
    Philox4x32 b = s_.block(pos_++);
    uint64_t x = (uint64_t(b.v[0]) << 32) | b.v[1];
    return n ? x % n : 0;
  }
  uint64_t position() const { return pos_; }

 private:
  RngStream s_;
  uint64_t pos_;
};

}  // namespace temper
