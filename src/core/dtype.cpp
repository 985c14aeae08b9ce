#include "core/dtype.h"

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

}  // namespace temper
