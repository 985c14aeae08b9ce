// Element types. f32/bf16/f16 for values, i32 for token ids and targets, u8 for masks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__CUDACC__)
#define TEMPER_HD __host__ __device__
#else
#define TEMPER_HD
#endif

namespace temper {

enum class DType : uint8_t { F32, BF16, F16, I32, U8 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

std::string_view dtype_name(DType t);
// "f32", "bf16", "f16", "i32", "u8"; throws temper::Error naming the bad value otherwise.
DType parse_dtype(std::string_view name);

// bf16 <-> f32 on the host, round to nearest even (NaN stays NaN).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE binary16 <-> f32 on the host, round to nearest even (subnormals, inf, NaN kept).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace temper
