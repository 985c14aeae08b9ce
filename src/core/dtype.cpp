#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace temper {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
  }
  return "?";
}

DType parse_dtype(std::string_view name) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::U8})
    if (dtype_name(t) == name) return t;
  fail("unknown dtype '{}' (expected f32, bf16, f16, i32 or u8)", name);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {  // zero or subnormal: mant · 2^-24
    float f = std::ldexp(float(mant), -24);
    return sign ? -f : f;
  } else if (exp == 31) {  // inf / nan
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return sign | (a > 0x7f800000u ? 0x7e00 : 0x7c00);  // nan / inf
  if (a >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to inf
  if (a < 0x38800000u) {                       // below 2^-14: a subnormal half
    float af;
    std::memcpy(&af, &a, 4);
    return sign | uint16_t(std::nearbyint(af * 16777216.0f));  // exact scale, RNE
  }
  a += 0xfffu + ((a >> 13) & 1u);  // round to nearest even at bit 13
  return sign | uint16_t((a - 0x38000000u) >> 13);
}

}  // namespace temper
