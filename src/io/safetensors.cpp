#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/limits.h"

namespace temper {
namespace {

// Bits per element of every dtype the reference reader knows (F4 and F6 are sub-byte).
size_t element_bits(const std::string& dtype) {
  static const std::map<std::string, size_t> bits = {
      {"BOOL", 8},     {"F4", 4},       {"F6_E2M3", 6},      {"F6_E3M2", 6},      {"U8", 8},
      {"I8", 8},       {"F8_E5M2", 8},  {"F8_E4M3", 8},      {"F8_E8M0", 8},      {"F8_E4M3FNUZ", 8},
      {"F8_E5M2FNUZ", 8}, {"I16", 16},  {"U16", 16},         {"F16", 16},         {"BF16", 16},
      {"I32", 32},     {"U32", 32},     {"F32", 32},         {"C64", 64},         {"F64", 64},
      {"I64", 64},     {"U64", 64}};
  auto it = bits.find(dtype);
  return it == bits.end() ? 0 : it->second;
}

// Parses the header, rejecting a key that appears twice in one object (the reference
// reader keeps the last one silently; an ambiguous header is refused here).
nlohmann::json parse_header(const std::string& header) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string duplicate;
  auto check = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& value) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) keys.emplace_back();
    else if (event == E::object_end && !keys.empty()) keys.pop_back();
    else if (event == E::key && !keys.empty() && !keys.back().insert(value.get<std::string>()).second &&
             duplicate.empty())
      duplicate = value.get<std::string>();
    return true;
  };
  // Raw NUL is never valid JSON (nlohmann's parser would stop at it as at the end).
  if (const size_t nul = header.find('\0'); nul != std::string::npos)
    fail("header is not valid JSON: a NUL byte at offset {}", nul);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header, check);
  } catch (const nlohmann::json::exception& e) {
    fail("header is not valid JSON: {}", e.what());
  }
  if (!duplicate.empty()) fail("header has the key '{}' twice", duplicate);
  return j;
}

}  // namespace

std::vector<float> SafetensorsEntry::to_f32() const {
  const size_t es = element_bits(dtype) / 8;
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

SafetensorsFile read_safetensors(const std::string& path, bool with_data) {
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
    if (header_len > limits::kMaxSafetensorsHeaderBytes)
      fail("header length {} exceeds the limit of {} bytes", header_len, limits::kMaxSafetensorsHeaderBytes);
    if (8 + header_len > file_size)
      fail("header length {} does not fit in the file ({} bytes)", header_len, file_size);
    std::string header(header_len, '\0');
    in.read(header.data(), std::streamsize(header_len));
    const nlohmann::json j = parse_header(header);
    if (!j.is_object()) fail("header is not a JSON object");
    const uint64_t data_size = file_size - 8 - header_len;
    SafetensorsFile f;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (auto& [name, v] : j.items()) {
      if (name == "__metadata__") {
        if (v.is_null()) continue;  // the reference reader accepts a null metadata
        if (!v.is_object()) fail("__metadata__ must be an object of strings");
        for (auto& [k, s] : v.items()) {
          if (!s.is_string()) fail("__metadata__ value for '{}' is not a string", k);
          f.metadata[k] = s.get<std::string>();
        }
        continue;
      }
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
        fail("tensor '{}': entry needs dtype, shape and data_offsets", name);
      if (!v["dtype"].is_string()) fail("tensor '{}': dtype must be a string", name);
      if (!v["shape"].is_array()) fail("tensor '{}': shape must be an array", name);
      SafetensorsEntry e;
      e.dtype = v["dtype"].get<std::string>();
      const size_t bits = element_bits(e.dtype);
      if (!bits) fail("tensor '{}': unknown dtype '{}'", name, e.dtype);
      uint64_t n = 1;
      for (auto& d : v["shape"]) {
        if (!d.is_number_unsigned()) fail("tensor '{}': shape entries must be non-negative integers", name);
        const uint64_t k = d.get<uint64_t>();
        if (k && n > (UINT64_MAX / 8) / k) fail("tensor '{}': shape overflows the byte count", name);
        e.shape.push_back(int64_t(k));
        n *= k;
      }
      if (n * bits % 8) fail("tensor '{}': {} elements of {} do not end on a byte", name, n, e.dtype);
      auto& off = v["data_offsets"];
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        fail("tensor '{}': data_offsets must be [begin, end]", name);
      const uint64_t b = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
      if (b > end || end > data_size)
        fail("tensor '{}': data_offsets [{}, {}] outside the {}-byte data section (truncated file?)",
             name, b, end, data_size);
      if (end - b != n * bits / 8)
        fail("tensor '{}': {} bytes for {} {} elements of shape (expected {})", name, end - b, n,
             e.dtype, n * bits / 8);
      ranges.emplace_back(b, end);
      if (with_data) {
        e.data.resize(end - b);
        in.seekg(std::streamoff(8 + header_len + b));
        in.read(reinterpret_cast<char*>(e.data.data()), std::streamsize(e.data.size()));
        if (!in) fail("tensor '{}': read failed", name);
      }
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
