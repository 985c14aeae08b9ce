#include "io/gguf.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <regex>
#include <set>

#include <fmt/ranges.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/limits.h"

namespace temper {
namespace {

constexpr int kMaxArrayDepth = 8;      // nested arrays deeper than this are rejected
constexpr uint64_t kMaxKeyLength = 65535;
constexpr uint64_t kMaxNameLength = 64;
constexpr uint32_t kMaxDims = 4;

// Reads little-endian fields from the file, checking every length against the bytes left.
class Cursor {
 public:
  explicit Cursor(const std::string& path) : in_(path, std::ios::binary) {
    if (!in_) fail("cannot open");
    in_.seekg(0, std::ios::end);
    size_ = uint64_t(in_.tellg());
    in_.seekg(0);
  }
  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t left() const { return size_ - pos_; }
  void read(void* dst, uint64_t n, const char* what) {
    if (n > left())
      fail("truncated file: {} needs {} bytes at offset {} but only {} remain", what, n, pos_, left());
    in_.read(static_cast<char*>(dst), std::streamsize(n));
    if (!in_) fail("read of {} failed at offset {}", what, pos_);
    pos_ += n;
  }
  template <typename T>
  T get(const char* what) {  // the host is little-endian (x86-64 / aarch64)
    T v;
    return read(&v, sizeof(T), what), v;
  }
  void seek(uint64_t p) { in_.seekg(std::streamoff(pos_ = p)); }

 private:
  std::ifstream in_;
  uint64_t size_ = 0, pos_ = 0;
};

// The smallest encoding of a value of this type: bounds element counts before allocation.
// (STRING: its length field; ARRAY: element type + count.)
uint64_t min_value_bytes(GgufValueType t, bool v1) {
  static const uint64_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};
  if (v1 && (t == GgufValueType::STRING || t == GgufValueType::ARRAY)) return sizes[uint32_t(t)] - 4;
  return sizes[uint32_t(t)];
}

struct Parser {
  Cursor& c;
  bool v1;  // v1 files use u32 for counts and string lengths

  uint64_t size_field(const char* what) {
    return v1 ? uint64_t(c.get<uint32_t>(what)) : c.get<uint64_t>(what);
  }
  std::string string(const char* what, uint64_t max_len) {
    const uint64_t n = size_field(what);
    if (n > c.left())
      fail("{} length {} runs past the end of the file ({} bytes left at offset {})", what, n,
           c.left(), c.pos());
    if (n > max_len) fail("{} length {} exceeds the limit {}", what, n, max_len);
    std::string s(n, '\0');
    c.read(s.data(), n, what);
    return s;
  }
  GgufValueType value_type(const char* what) {
    const uint32_t t = c.get<uint32_t>(what);
    if (t > 12) fail("unknown {} {}", what, t);
    return GgufValueType(t);
  }
  GgufValue value(GgufValueType t, int depth) {
    GgufValue v;
    v.type = t;
    switch (t) {
      case GgufValueType::UINT8: v.u = c.get<uint8_t>("uint8 value"); break;
      case GgufValueType::INT8: v.i = c.get<int8_t>("int8 value"); break;
      case GgufValueType::UINT16: v.u = c.get<uint16_t>("uint16 value"); break;
      case GgufValueType::INT16: v.i = c.get<int16_t>("int16 value"); break;
      case GgufValueType::UINT32: v.u = c.get<uint32_t>("uint32 value"); break;
      case GgufValueType::INT32: v.i = c.get<int32_t>("int32 value"); break;
      case GgufValueType::UINT64: v.u = c.get<uint64_t>("uint64 value"); break;
      case GgufValueType::INT64: v.i = c.get<int64_t>("int64 value"); break;
      case GgufValueType::FLOAT32: v.f = c.get<float>("float32 value"); break;
      case GgufValueType::FLOAT64: v.f = c.get<double>("float64 value"); break;
      case GgufValueType::BOOL:
        if ((v.u = c.get<uint8_t>("bool value")) > 1) fail("bool value {} is neither 0 nor 1", v.u);
        break;
      case GgufValueType::STRING: v.s = string("string value", c.size()); break;
      case GgufValueType::ARRAY: {
        if (depth >= kMaxArrayDepth) fail("arrays nested deeper than {}", kMaxArrayDepth);
        v.elem_type = value_type("array element type");
        const uint64_t n = size_field("array length");
        if (n > limits::kMaxGgufArrayLength)
          fail("array length {} exceeds the limit of {} entries", n, limits::kMaxGgufArrayLength);
        if (n > c.left() / min_value_bytes(v.elem_type, v1))
          fail("array length {} of {} runs past the end of the file ({} bytes left)", n,
               gguf_value_type_name(v.elem_type), c.left());
        v.array.reserve(n);
        for (uint64_t k = 0; k < n; ++k) {
          try {
            v.array.push_back(value(v.elem_type, depth + 1));
          } catch (const Error& e) {
            throw Error(fmt::format("array element {}: {}", k, e.what()));
          }
        }
        break;
      }
    }
    return v;
  }
};

using VT = GgufValueType;
bool is_unsigned(VT t) { return t == VT::UINT8 || t == VT::UINT16 || t == VT::UINT32 || t == VT::UINT64; }
bool is_signed(VT t) { return t == VT::INT8 || t == VT::INT16 || t == VT::INT32 || t == VT::INT64; }
int64_t as_int(const GgufValue& v, const std::string& what) {
  if (is_signed(v.type)) return v.i;
  if (is_unsigned(v.type)) {
    if (v.u > uint64_t(std::numeric_limits<int64_t>::max())) fail("{}: value {} is too large", what, v.u);
    return int64_t(v.u);
  }
  fail("{}: type {}, expected an integer", what, gguf_value_type_name(v.type));
}
const GgufValue& typed(const GgufValue& v, VT t, const std::string& what) {
  if (v.type != t) fail("{}: type {}, expected {}", what, gguf_value_type_name(v.type), gguf_value_type_name(t));
  return v;
}
const GgufValue& as_array(const GgufValue& v, const std::string& what) { return typed(v, VT::ARRAY, what); }

uint16_t u16_at(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
float f16_at(const uint8_t* p) { return f16_to_f32(u16_at(p)); }
template <typename T>
T load(const uint8_t* p) { T v; std::memcpy(&v, p, sizeof(T)); return v; }

uint64_t checked_mul(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail("{} overflows", what);
  return r;
}

const GgmlTypeInfo kTypes[] = {
    {"F32", 1, 4},        {"F16", 1, 2},       {"Q4_0", 32, 18},    {"Q4_1", 32, 20},
    {nullptr, 0, 0},      {nullptr, 0, 0},     {"Q5_0", 32, 22},    {"Q5_1", 32, 24},
    {"Q8_0", 32, 34},     {"Q8_1", 32, 36},    {"Q2_K", 256, 84},   {"Q3_K", 256, 110},
    {"Q4_K", 256, 144},   {"Q5_K", 256, 176},  {"Q6_K", 256, 210},  {"Q8_K", 256, 292},
    {"IQ2_XXS", 256, 66}, {"IQ2_XS", 256, 74}, {"IQ3_XXS", 256, 98}, {"IQ1_S", 256, 50},
    {"IQ4_NL", 32, 18},   {"IQ3_S", 256, 110}, {"IQ2_S", 256, 82},  {"IQ4_XS", 256, 136},
    {"I8", 1, 1},         {"I16", 1, 2},       {"I32", 1, 4},       {"I64", 1, 8},
    {"F64", 1, 8},        {"IQ1_M", 256, 56},  {"BF16", 1, 2},      {nullptr, 0, 0},
    {nullptr, 0, 0},      {nullptr, 0, 0},     {"TQ1_0", 256, 54},  {"TQ2_0", 256, 66},
    {nullptr, 0, 0},      {nullptr, 0, 0},     {nullptr, 0, 0},     {"MXFP4", 32, 17},
    {"NVFP4", 64, 36},    {"Q1_0", 128, 18},
};

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  static const char* names[] = {"UINT8", "INT8",  "UINT16", "INT16", "UINT32", "INT32",  "FLOAT32",
                                "BOOL",  "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  return uint32_t(t) <= 12 ? names[uint32_t(t)] : "unknown";
}

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  if (type >= std::size(kTypes) || !kTypes[type].name) return nullptr;
  return &kTypes[type];
}

std::string ggml_type_name(uint32_t type) {
  return ggml_type_info(type) ? ggml_type_info(type)->name : fmt::format("unknown({})", type);
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // no overflow: read_gguf checked it
  return n;
}

GgufFile read_gguf(const std::string& path, bool read_tensor_data) {
  return with_context(path, [&] {
    Cursor c(path);
    GgufFile f;
    f.path = path;
    char magic[4];
    if (c.size() < 4) fail("truncated file: {} bytes, no GGUF magic", c.size());
    c.read(magic, 4, "magic");
    if (std::memcmp(magic, "GGUF", 4) != 0)
      fail("not a GGUF file: magic bytes {:02x} {:02x} {:02x} {:02x}, expected \"GGUF\"",
           uint8_t(magic[0]), uint8_t(magic[1]), uint8_t(magic[2]), uint8_t(magic[3]));
    f.version = c.get<uint32_t>("version");
    if (f.version > 0xffff && (f.version & 0xffff) == 0)
      fail("version field {:#x} looks byte-swapped: big-endian GGUF files are not supported",
           f.version);
    if (f.version < 1 || f.version > 3)
      fail("unsupported GGUF version {} (expected 1, 2 or 3)", f.version);
    Parser p{c, f.version == 1};
    const uint64_t n_tensors = p.size_field("tensor count");
    const uint64_t n_kv = p.size_field("metadata key/value count");
    // A KV pair takes >= 13 bytes, a tensor info >= 24: reject impossible counts up front.
    if (n_kv > c.left() / (p.v1 ? 9 : 13))
      fail("metadata key/value count {} cannot fit in the file ({} bytes left)", n_kv, c.left());
    if (n_tensors > c.left() / (p.v1 ? 16 : 24))
      fail("tensor count {} cannot fit in the file ({} bytes left)", n_tensors, c.left());

    for (uint64_t k = 0; k < n_kv; ++k) {
      std::string key = with_context(fmt::format("metadata key/value {}", k),
                                     [&] { return p.string("key", kMaxKeyLength); });
      with_context(fmt::format("metadata key '{}'", key), [&] {
        GgufValue v = p.value(p.value_type("value type"), 0);
        if (!f.metadata.emplace(key, std::move(v)).second) fail("duplicate key");
      });
    }
    if (f.has("general.alignment")) {
      f.alignment = typed(f.metadata.at("general.alignment"), VT::UINT32,
                          "metadata key 'general.alignment'").u;
      if (f.alignment == 0 || (f.alignment & (f.alignment - 1)))
        fail("metadata key 'general.alignment': {} is not a power of two", f.alignment);
    }

    std::set<std::string> names;
    f.tensors.reserve(n_tensors);
    for (uint64_t k = 0; k < n_tensors; ++k) {
      GgufTensor t;
      t.file = path;
      t.name = with_context(fmt::format("tensor info {}", k),
                            [&] { return p.string("tensor name", kMaxNameLength); });
      with_context(fmt::format("tensor '{}'", t.name), [&] {
        if (!names.insert(t.name).second) fail("duplicate tensor name");
        const uint32_t n_dims = c.get<uint32_t>("n_dims");
        if (n_dims < 1 || n_dims > kMaxDims) fail("n_dims {} outside 1..{}", n_dims, kMaxDims);
        for (uint32_t d = 0; d < n_dims; ++d) {
          const uint64_t n = p.size_field("dimension");
          if (n > uint64_t(std::numeric_limits<int64_t>::max())) fail("dimension {} is {}", d, n);
          t.ne.push_back(int64_t(n));
        }
        t.shape.assign(t.ne.rbegin(), t.ne.rend());
        t.type = c.get<uint32_t>("tensor type");
        if (!ggml_type_info(t.type)) fail("unknown ggml tensor type {}", t.type);
        t.offset = c.get<uint64_t>("tensor offset");
        if (t.offset % f.alignment)
          fail("offset {} is not a multiple of the alignment {}", t.offset, f.alignment);
      });
      f.tensors.push_back(std::move(t));
    }

    // The data section starts at the next multiple of the alignment.
    f.data_offset = (c.pos() + f.alignment - 1) / f.alignment * f.alignment;
    if (n_tensors && f.data_offset > c.size())
      fail("truncated file: the data section would start at byte {}, past the end ({} bytes)",
           f.data_offset, c.size());
    if (!read_tensor_data) return f;
    const uint64_t data_size = n_tensors ? c.size() - f.data_offset : 0;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (GgufTensor& t : f.tensors) {
      with_context(fmt::format("tensor '{}'", t.name), [&] {
        const GgmlTypeInfo& ti = *ggml_type_info(t.type);
        if (t.ne[0] % ti.block_size)
          fail("row length ne[0] = {} is not a multiple of the {} block size {}", t.ne[0],
               ti.name, ti.block_size);
        uint64_t bytes = checked_mul(uint64_t(t.ne[0] / ti.block_size), uint64_t(ti.type_size),
                                     "tensor byte size");
        for (size_t d = 1; d < t.ne.size(); ++d)
          bytes = checked_mul(bytes, uint64_t(t.ne[d]), "tensor byte size");
        uint64_t elems = 1;
        for (int64_t d : t.ne) elems = checked_mul(elems, uint64_t(d), "element count");
        if (elems > uint64_t(std::numeric_limits<int64_t>::max())) fail("element count overflows");
        if (t.offset > data_size || bytes > data_size - t.offset)
          fail("data [{}, {}) ({} {} bytes for dims {}) runs past the end of the {}-byte data "
               "section (truncated file?)",
               t.offset, t.offset + bytes, bytes, ti.name, fmt::join(t.ne, "x"), data_size);
        ranges.emplace_back(t.offset, t.offset + bytes);
        t.data.resize(bytes);
        c.seek(f.data_offset + t.offset);
        c.read(t.data.data(), bytes, "tensor data");
      });
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t k = 1; k < ranges.size(); ++k)
      if (ranges[k].first < ranges[k - 1].second)
        fail("tensor data ranges overlap at data offset {}", ranges[k].first);
    return f;
  });
}

const GgufValue& GgufFile::get(const std::string& key) const {
  auto it = metadata.find(key);
  if (it == metadata.end()) fail("{}: metadata key '{}' not found", path, key);
  return it->second;
}

std::string GgufFile::get_string(const std::string& key) const {
  return typed(get(key), VT::STRING, fmt::format("{}: metadata key '{}'", path, key)).s;
}
int64_t GgufFile::get_int(const std::string& key) const {
  return as_int(get(key), fmt::format("{}: metadata key '{}'", path, key));
}
double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = get(key);
  if (v.type == GgufValueType::FLOAT32 || v.type == GgufValueType::FLOAT64) return v.f;
  if (is_signed(v.type)) return double(v.i);
  if (is_unsigned(v.type)) return double(v.u);
  fail("{}: metadata key '{}': type {}, expected a number", path, key, gguf_value_type_name(v.type));
}
bool GgufFile::get_bool(const std::string& key) const {
  return typed(get(key), VT::BOOL, fmt::format("{}: metadata key '{}'", path, key)).u != 0;
}
std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const std::string what = fmt::format("{}: metadata key '{}'", path, key);
  const GgufValue& v = as_array(get(key), what);
  if (v.elem_type != GgufValueType::STRING)
    fail("{}: array of {}, expected an array of STRING", what, gguf_value_type_name(v.elem_type));
  std::vector<std::string> out;
  out.reserve(v.array.size());
  for (const GgufValue& e : v.array) out.push_back(e.s);
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const std::string what = fmt::format("{}: metadata key '{}'", path, key);
  const GgufValue& v = as_array(get(key), what);
  std::vector<int64_t> out;
  out.reserve(v.array.size());
  for (const GgufValue& e : v.array) out.push_back(as_int(e, what));
  return out;
}

uint64_t GgufFile::array_size(const std::string& key) const {
  return as_array(get(key), fmt::format("{}: metadata key '{}'", path, key)).array.size();
}
int64_t GgufFile::get_int_or(const std::string& key, int64_t d) const { return has(key) ? get_int(key) : d; }
double GgufFile::get_float_or(const std::string& key, double d) const { return has(key) ? get_float(key) : d; }

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  for (const GgufTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const GgufTensor& GgufFile::tensor(const std::string& name) const {
  const GgufTensor* t = find_tensor(name);
  if (!t) fail("{}: tensor '{}' not found", path, name);
  return *t;
}

std::vector<float> dequantize(const GgufTensor& t) {
  const GgmlTypeInfo* ti = ggml_type_info(t.type);
  const auto where = [&] { return fmt::format("{}: tensor '{}'", t.file, t.name); };
  if (!ti) fail("{}: unknown ggml type {}", where(), t.type);
  const int64_t n = t.numel();
  const uint64_t blocks = uint64_t(n / ti->block_size);
  if (n % ti->block_size || t.data.size() != blocks * uint64_t(ti->type_size))
    fail("{}: {} bytes do not match {} elements of type {}", where(), t.data.size(), n, ti->name);
  std::vector<float> out(size_t(n), 0.0f);
  if (n == 0) return out;  // (an empty vector's data() may be null: no memcpy from it)
  const uint8_t* d = t.data.data();
  switch (GgmlType(t.type)) {
    case GgmlType::F32: std::memcpy(out.data(), d, size_t(n) * 4); break;
    case GgmlType::F16: for (int64_t i = 0; i < n; ++i) out[i] = f16_at(d + 2 * i); break;
    case GgmlType::BF16: for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(u16_at(d + 2 * i)); break;
    case GgmlType::F64: for (int64_t i = 0; i < n; ++i) out[i] = float(load<double>(d + 8 * i)); break;
    case GgmlType::I8: for (int64_t i = 0; i < n; ++i) out[i] = float(int8_t(d[i])); break;
    case GgmlType::I16: for (int64_t i = 0; i < n; ++i) out[i] = float(load<int16_t>(d + 2 * i)); break;
    case GgmlType::I32: for (int64_t i = 0; i < n; ++i) out[i] = float(load<int32_t>(d + 4 * i)); break;
    case GgmlType::Q8_0:
      for (uint64_t b = 0; b < blocks; ++b) {
        const uint8_t* blk = d + b * 34;
        const float scale = f16_at(blk);
        for (int j = 0; j < 32; ++j) out[b * 32 + j] = float(int8_t(blk[2 + j])) * scale;
      }
      break;
    case GgmlType::Q4_0:  // d, qs[16]: (q - 8) * d; low nibbles are 0..15, high 16..31
    case GgmlType::Q4_1:  // d, m, qs[16]: q * d + m
      for (uint64_t b = 0; b < blocks; ++b) {
        const bool q41 = GgmlType(t.type) == GgmlType::Q4_1;
        const uint8_t* blk = d + b * uint64_t(ti->type_size);
        const uint8_t* qs = blk + (q41 ? 4 : 2);
        // Q4_0 as q * d + (-8 d): both products are exact in f32 (an f16 d times a 4-bit q),
        // so the sum equals (q - 8) * d bit for bit.
        const float scale = f16_at(blk), min = q41 ? f16_at(blk + 2) : -8.0f * scale;
        for (int j = 0; j < 16; ++j) {
          out[b * 32 + j] = float(qs[j] & 0x0f) * scale + min;
          out[b * 32 + j + 16] = float(qs[j] >> 4) * scale + min;
        }
      }
      break;
    default:
      fail("{}: dequantizing ggml type {} is not supported (supported: F32, F16, BF16, F64, I8, "
           "I16, I32, Q8_0, Q4_0, Q4_1)", where(), ti->name);
  }
  return out;
}

void unpermute_llama_qk(std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_heads) {
  if (rows <= 0 || cols <= 0 || n_heads <= 0 || rows % n_heads || (rows / n_heads) % 2)
    fail("unpermute_llama_qk: {} rows do not split into {} heads of an even head_dim", rows, n_heads);
  if (int64_t(w.size()) != rows * cols)
    fail("unpermute_llama_qk: {} values, expected {} x {}", w.size(), rows, cols);
  const int64_t hd = rows / n_heads, half = hd / 2;
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t s = 0; s < 2; ++s)
      for (int64_t p = 0; p < half; ++p)
        std::memcpy(&out[size_t((h * hd + s * half + p) * cols)],
                    &w[size_t((h * hd + 2 * p + s) * cols)], size_t(cols) * sizeof(float));
  w.swap(out);
}

ModelConfig model_config_from_gguf(const GgufFile& f) {
  return with_context(f.path, [&] {
    const std::string arch = f.get_string("general.architecture");
    if (arch != "llama" && arch != "qwen2")
      fail("general.architecture '{}' is not supported (expected llama or qwen2)", arch);
    const std::string a = arch + ".";
    // Head counts and the FFN length may be per-layer arrays; we need them uniform.
    auto uniform = [&](const std::string& key) -> int64_t {
      if (f.get(key).type != GgufValueType::ARRAY) return f.get_int(key);
      std::vector<int64_t> v = f.get_int_array(key);
      if (v.empty() || std::any_of(v.begin(), v.end(), [&](int64_t x) { return x != v[0]; }))
        fail("metadata key '{}': per-layer values differ; only uniform layers are supported", key);
      return v[0];
    };
    ModelConfig c;
    c.model_type = arch;
    c.max_position_embeddings = f.get_int(a + "context_length");
    c.hidden_size = f.get_int(a + "embedding_length");
    c.intermediate_size = uniform(a + "feed_forward_length");
    c.num_hidden_layers = f.get_int(a + "block_count");
    c.num_attention_heads = uniform(a + "attention.head_count");
    c.num_key_value_heads =
        f.has(a + "attention.head_count_kv") ? uniform(a + "attention.head_count_kv") : 0;
    c.rms_norm_eps = f.get_float(a + "attention.layer_norm_rms_epsilon");
    c.rope_theta = f.get_float_or(a + "rope.freq_base", 10000.0);
    c.head_dim = f.get_int_or(a + "attention.key_length", 0);
    if (const std::string k = a + "rope.scaling.type"; f.has(k) && f.get_string(k) != "none")
      fail("metadata key '{}' = '{}': rope scaling is not supported", k, f.get_string(k));
    if (f.find_tensor("rope_freqs.weight"))
      fail("tensor 'rope_freqs.weight' (Llama 3.1 rope scaling) is not supported");
    if (const GgufTensor* e = f.find_tensor("token_embd.weight"); e && e->shape.size() == 2)
      c.vocab_size = e->shape[0];
    else if (f.has("tokenizer.ggml.tokens"))
      c.vocab_size = int64_t(f.array_size("tokenizer.ggml.tokens"));
    else
      c.vocab_size = f.get_int(a + "vocab_size");
    c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
    c.attention_bias = arch == "qwen2" || f.find_tensor("blk.0.attn_q.bias") != nullptr;
    c.bos_token_id = f.get_int_or("tokenizer.ggml.bos_token_id", -1);
    c.eos_token_id = f.get_int_or("tokenizer.ggml.eos_token_id", -1);
    c.finalize();
    return c;
  });
}

std::string hf_name_for_gguf(const std::string& name) {
  static const std::map<std::string, std::string> top = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"}};
  static const std::map<std::string, std::string> layer = {
      {"attn_norm", "input_layernorm"},       {"attn_q", "self_attn.q_proj"},
      {"attn_k", "self_attn.k_proj"},         {"attn_v", "self_attn.v_proj"},
      {"attn_output", "self_attn.o_proj"},    {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},          {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"}};
  if (auto it = top.find(name); it != top.end()) return it->second;
  static const std::regex re(R"(blk\.(\d+)\.([a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(name, m, re))
    if (auto it = layer.find(m[2].str()); it != layer.end())
      return "model.layers." + m[1].str() + "." + it->second + "." + m[3].str();
  fail("GGUF tensor '{}' has no Hugging Face Llama equivalent", name);
}

std::vector<float> gguf_tensor_to_hf(const GgufFile& f, const GgufTensor& t,
                                     const ModelConfig& config) {
  std::vector<float> v = dequantize(t);
  if (f.has("general.architecture") && f.get_string("general.architecture") == "llama") {
    const bool q = t.name.find(".attn_q.") != std::string::npos;
    const bool k = t.name.find(".attn_k.") != std::string::npos;
    if (q || k) {
      const int64_t rows = t.shape[0], cols = t.shape.size() > 1 ? t.numel() / rows : 1;
      with_context(fmt::format("{}: tensor '{}'", f.path, t.name), [&] {
        unpermute_llama_qk(v, rows, cols, q ? config.num_attention_heads : config.num_key_value_heads);
      });
    }
  }
  return v;
}

}  // namespace temper
