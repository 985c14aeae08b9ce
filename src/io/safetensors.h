// safetensors: 8-byte little-endian header length N, N bytes of JSON header
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}),
// then the raw little-endian data. Reading validates the header as the reference reader
// (safetensors 0.8) does: valid UTF-8 JSON object, known dtypes, shapes of non-negative
// integers without overflow, byte counts that match shapes, offsets inside the data,
// which they cover exactly (no hole, overlap or trailing bytes); a null __metadata__ is
// accepted. Stricter than the reference: a key twice in one object is refused (it keeps
// the last). Every violation is an Error naming the file and tensor.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace temper {

struct SafetensorsEntry {
  std::string dtype;             // "F32", "BF16", "F16", "I32", "U8", "F64", "I64", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;     // raw bytes
  std::vector<float> to_f32() const;  // F32/BF16/F16/F64/I32 -> f32 (throws otherwise)
};

struct SafetensorsFile {
  std::map<std::string, std::string> metadata;
  std::map<std::string, SafetensorsEntry> tensors;
  const SafetensorsEntry& at(const std::string& name) const;  // throws naming the tensor
};

// with_data = false: the header only (names, dtypes, shapes), validated the same way.
SafetensorsFile read_safetensors(const std::string& path, bool with_data = true);
void write_safetensors(const std::string& path, const SafetensorsFile& file);

// Helpers to build entries from host vectors.
SafetensorsEntry safetensors_f32(const std::vector<float>& v, std::vector<int64_t> shape);
SafetensorsEntry safetensors_i32(const std::vector<int32_t>& v, std::vector<int64_t> shape);

}  // namespace temper
