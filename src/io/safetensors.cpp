#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace temper {
namespace {

size_t element_size(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
      {"I16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"U16", 2}, {"U32", 4}, {"U64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

}  // namespace

std::vector<float> SafetensorsEntry::to_f32() const {
  const size_t es = element_size(dtype);
  std::vector<float> out(es ? data.size() / es : 0);
  for (size_t i = 0; i < out.size(); ++i) {
    const uint8_t* p = data.data() + i * es;
    if (dtype == "F32") std::memcpy(&out[i], p, 4);
    else if (dtype == "BF16") out[i] = bf16_to_f32(uint16_t(p[0] | (p[1] << 8)));
    else if (dtype == "F16") out[i] = f16_to_f32(uint16_t(p[0] | (p[1] << 8)));
    else if (dtype == "F64") { double d; std::memcpy(&d, p, 8); out[i] = float(d); }
    else if (dtype == "I32") { int32_t v; std::memcpy(&v, p, 4); out[i] = float(v); }
    else fail("cannot convert safetensors dtype {} to f32", dtype);
  }
  return out;
}

const SafetensorsEntry& SafetensorsFile::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) fail("tensor '{}' not found", name);
  return it->second;
}

SafetensorsFile read_safetensors(const std::string& path) {
  return with_context(path, [&] {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("cannot open");
    in.seekg(0, std::ios::end);
    const uint64_t file_size = uint64_t(in.tellg());
    in.seekg(0);
    if (file_size < 8) fail("truncated: {} bytes, shorter than the 8-byte header length", file_size);
    uint8_t len_bytes[8];
    in.read(reinterpret_cast<char*>(len_bytes), 8);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    if (header_len > 100'000'000 || 8 + header_len > file_size)
      fail("header length {} does not fit in the file ({} bytes)", header_len, file_size);
    std::string header(header_len, '\0');
    in.read(header.data(), std::streamsize(header_len));
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(header);
    } catch (const nlohmann::json::exception& e) {
      fail("header is not valid JSON: {}", e.what());
    }
    if (!j.is_object()) fail("header is not a JSON object");
    const uint64_t data_size = file_size - 8 - header_len;
    SafetensorsFile f;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (auto& [name, v] : j.items()) {
      if (name == "__metadata__") {
        if (!v.is_object()) fail("__metadata__ must be an object of strings");
        for (auto& [k, s] : v.items()) {
          if (!s.is_string()) fail("__metadata__ value for '{}' is not a string", k);
          f.metadata[k] = s.get<std::string>();
        }
        continue;
      }
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
        fail("tensor '{}': entry needs dtype, shape and data_offsets", name);
      SafetensorsEntry e;
      e.dtype = v["dtype"].get<std::string>();
      const size_t es = element_size(e.dtype);
      if (!es) fail("tensor '{}': unknown dtype '{}'", name, e.dtype);
      uint64_t n = 1;
      for (auto& d : v["shape"]) {
        if (!d.is_number_unsigned()) fail("tensor '{}': shape entries must be non-negative integers", name);
        e.shape.push_back(d.get<int64_t>());
        n *= d.get<uint64_t>();
      }
      auto& off = v["data_offsets"];
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        fail("tensor '{}': data_offsets must be [begin, end]", name);
      const uint64_t b = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
      if (b > end || end > data_size)
        fail("tensor '{}': data_offsets [{}, {}] outside the {}-byte data section (truncated file?)",
             name, b, end, data_size);
      if (end - b != n * es)
        fail("tensor '{}': {} bytes for {} {} elements of shape (expected {})", name, end - b, n,
             e.dtype, n * es);
      ranges.emplace_back(b, end);
      e.data.resize(end - b);
      in.seekg(std::streamoff(8 + header_len + b));
      in.read(reinterpret_cast<char*>(e.data.data()), std::streamsize(e.data.size()));
      if (!in) fail("tensor '{}': read failed", name);
      f.tensors.emplace(name, std::move(e));
    }
    // The reference reader requires the data to be covered exactly, without holes or overlap.
    std::sort(ranges.begin(), ranges.end());
    uint64_t pos = 0;
    for (auto& [b, e] : ranges) {
      if (b != pos) fail("data section has a hole or overlap at byte {}", b);
      pos = e;
    }
    if (pos != data_size) fail("data section has {} trailing bytes not covered by any tensor", data_size - pos);
    return f;
  });
}

void write_safetensors(const std::string& path, const SafetensorsFile& f) {
  nlohmann::json j = nlohmann::json::object();
  if (!f.metadata.empty()) j["__metadata__"] = f.metadata;
  uint64_t off = 0;
  for (auto& [name, e] : f.tensors) {
    j[name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {off, off + e.data.size()}}};
    off += e.data.size();
  }
  std::string header = j.dump();
  while ((8 + header.size()) % 8) header += ' ';  // align the data section to 8 bytes
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot create '{}'", path);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xff));
  out.write(header.data(), std::streamsize(header.size()));
  for (auto& [name, e] : f.tensors) out.write(reinterpret_cast<const char*>(e.data.data()), std::streamsize(e.data.size()));
  out.flush();
  if (!out) fail("write to '{}' failed (disk full?)", path);
}

SafetensorsEntry safetensors_f32(const std::vector<float>& v, std::vector<int64_t> shape) {
  SafetensorsEntry e{"F32", std::move(shape), {}};
  e.data.resize(v.size() * 4);
  std::memcpy(e.data.data(), v.data(), e.data.size());
  return e;
}

SafetensorsEntry safetensors_i32(const std::vector<int32_t>& v, std::vector<int64_t> shape) {
  SafetensorsEntry e{"I32", std::move(shape), {}};
  e.data.resize(v.size() * 4);
  std::memcpy(e.data.data(), v.data(), e.data.size());
  return e;
}

}  // namespace temper
