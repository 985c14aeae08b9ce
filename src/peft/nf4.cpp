#include "peft/nf4.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "io/safetensors.h"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

namespace temper {
namespace {

// Index of the value of sorted `code` nearest to x (a tie goes to the lower index).
template <size_t N>
uint8_t nearest(const std::array<float, N>& code, float x) {
  size_t hi = size_t(std::upper_bound(code.begin(), code.end(), x) - code.begin());
  if (hi == 0) return 0;
  if (hi == N) return uint8_t(N - 1);
  const size_t lo = hi - 1;
  return uint8_t(x - code[lo] <= code[hi] - x ? lo : hi);
}

}  // namespace

const std::array<float, 16>& nf4_code() {
  // bitsandbytes' NF4: quantiles of N(0, 1) (8 positive, 7 negative and 0), scaled to
  // [-1, 1] (create_normal_map(offset = 0.9677083, use_extra_value = True)).
  static const std::array<float, 16> code = {
      -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
      -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
      0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
      0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
  return code;
}

const std::array<float, 256>& dynamic_map() {
  // Exponent e = 0..6 takes 2^e fraction values: the midpoints of 2^e equal steps over
  // [0.1, 1], times 10^(e - 6), with both signs; then 0 and 1. 2·127 + 2 = 256 values.
  static const std::array<float, 256> map = [] {
    std::vector<double> v;
    for (int e = 0; e < 7; ++e) {
      const int n = 1 << e;
      const double scale = std::pow(10.0, e - 6);
      for (int i = 0; i < n; ++i) {
        const double lo = 0.1 + 0.9 * i / n, hi = 0.1 + 0.9 * (i + 1) / n;
        v.push_back(scale * (lo + hi) / 2.0);
        v.push_back(-scale * (lo + hi) / 2.0);
      }
    }
    v.push_back(0.0);
    v.push_back(1.0);
    std::sort(v.begin(), v.end());
    std::array<float, 256> out{};
    for (size_t i = 0; i < 256; ++i) out[i] = float(v[i]);
    return out;
  }();
  return map;
}

float Nf4Tensor::block_absmax(int64_t b) const {
  if (!double_quant) return absmax[size_t(b)];
  return nested_map[qabsmax[size_t(b)]] * nested_absmax[size_t(b / kNf4Nested)] + offset;
}

Nf4Tensor nf4_quantize(const float* w, int64_t numel, bool double_quant) {
  Nf4Tensor q;
  q.numel = numel;
  q.double_quant = double_quant;
  q.code = nf4_code();
  q.nested_map = dynamic_map();
  const int64_t blocks = q.blocks();
  std::vector<float> absmax(size_t(blocks), 0.0f);
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t i = b * kNf4Block; i < std::min(numel, (b + 1) * kNf4Block); ++i)
      absmax[size_t(b)] = std::max(absmax[size_t(b)], std::fabs(w[i]));
  q.packed.assign(size_t((numel + 1) / 2), 0);
  for (int64_t i = 0; i < numel; ++i) {
    const float a = absmax[size_t(i / kNf4Block)];
    const uint8_t idx = nearest(q.code, a > 0.0f ? w[i] / a : 0.0f);
    q.packed[size_t(i / 2)] |= i % 2 == 0 ? uint8_t(idx << 4) : idx;
  }
  if (!double_quant) {
    q.absmax = std::move(absmax);
    return q;
  }
  double sum = 0.0;
  for (float a : absmax) sum += a;
  q.offset = float(sum / double(blocks));
  const int64_t groups = (blocks + kNf4Nested - 1) / kNf4Nested;
  q.nested_absmax.assign(size_t(groups), 0.0f);
  q.qabsmax.resize(size_t(blocks));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t b0 = g * kNf4Nested, b1 = std::min(blocks, b0 + kNf4Nested);
    float m = 0.0f;
    for (int64_t b = b0; b < b1; ++b) m = std::max(m, std::fabs(absmax[size_t(b)] - q.offset));
    q.nested_absmax[size_t(g)] = m;
    for (int64_t b = b0; b < b1; ++b)
      q.qabsmax[size_t(b)] = nearest(q.nested_map, m > 0.0f ? (absmax[size_t(b)] - q.offset) / m : 0.0f);
  }
  return q;
}

void nf4_dequantize(const Nf4Tensor& q, float* out) {
  TEMPER_CHECK(int64_t(q.packed.size()) == (q.numel + 1) / 2, "NF4 tensor of {} elements has {} bytes",
               q.numel, q.packed.size());
  for (int64_t b = 0; b < q.blocks(); ++b) {
    const float a = q.block_absmax(b);
    for (int64_t i = b * kNf4Block; i < std::min(q.numel, (b + 1) * kNf4Block); ++i)
      out[i] = q.code[nf4_index(q.packed, i)] * a;
  }
}

double nf4_bytes_per_weight(int64_t n, bool double_quant) {
  const double blocks = double((n + kNf4Block - 1) / kNf4Block);
  const double groups = std::ceil(blocks / double(kNf4Nested));
  const double stats = double_quant ? blocks * 1.0 + groups * 4.0 + 4.0 : blocks * 4.0;
  return (double((n + 1) / 2) + stats) / double(n);
}

std::vector<std::string> bitsandbytes_nf4_keys(const std::string& name) {
  return {name + ".absmax", name + ".quant_map", name + ".nested_absmax", name + ".nested_quant_map",
          name + ".quant_state.bitsandbytes__nf4"};
}

Nf4Tensor nf4_from_bitsandbytes(const std::string& name, const std::vector<int64_t>& shape,
                                const std::function<const SafetensorsEntry*(const std::string&)>& get,
                                const std::string& file) {
  auto need = [&](const std::string& key) -> const SafetensorsEntry& {
    const SafetensorsEntry* e = get(key);
    if (!e) fail("{}: '{}' is missing (a bitsandbytes 4-bit weight needs it)", file, key);
    return *e;
  };
  const std::string qs_key = name + ".quant_state.bitsandbytes__nf4";
  const SafetensorsEntry& qs = need(qs_key);
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(std::string(qs.data.begin(), qs.data.end()));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: '{}' is not a JSON quant state (truncated or foreign?): {}", file, qs_key, e.what());
  }
  auto field = [&](const char* k) -> const nlohmann::json& {
    if (!state.is_object() || !state.contains(k))
      fail("{}: '{}' has no \"{}\" (a foreign quant state?)", file, qs_key, k);
    return state[k];
  };
  try {
    if (field("quant_type") != "nf4")
      fail("{}: '{}' is quant_type {}, only nf4 is read", file, qs_key, field("quant_type").dump());
    if (field("blocksize").get<int64_t>() != kNf4Block)
      fail("{}: '{}' has blocksize {}, NF4 here uses {}", file, qs_key, field("blocksize").dump(), kNf4Block);
    if (field("shape").get<std::vector<int64_t>>() != shape)
      fail("{}: '{}' is for shape {}, the model expects [{}]", file, qs_key, field("shape").dump(),
           fmt::join(shape, ", "));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: '{}' has a field of the wrong type: {}", file, qs_key, e.what());
  }
  Nf4Tensor q;
  q.numel = 1;
  for (int64_t d : shape) q.numel *= d;
  const SafetensorsEntry& packed = need(name);
  if (int64_t(packed.data.size()) != (q.numel + 1) / 2)
    fail("{}: '{}' holds {} bytes, {} weights need {}", file, name, packed.data.size(), q.numel,
         (q.numel + 1) / 2);
  q.packed = packed.data;
  auto floats = [&](const std::string& key, size_t n) {
    const SafetensorsEntry& e = need(key);
    if (e.dtype != "F32" || e.data.size() != n * 4)
      fail("{}: '{}' must be F32 with {} values, got {} ({} bytes)", file, key, n, e.dtype, e.data.size());
    return e.to_f32();
  };
  const std::vector<float> code = floats(name + ".quant_map", 16);
  std::copy(code.begin(), code.end(), q.code.begin());
  const size_t blocks = size_t(q.blocks());
  q.double_quant = get(name + ".nested_absmax") != nullptr;
  if (!q.double_quant) {
    q.absmax = floats(name + ".absmax", blocks);
    return q;
  }
  const SafetensorsEntry& codes = need(name + ".absmax");
  if (codes.data.size() != blocks)
    fail("{}: '{}.absmax' holds {} bytes, {} blocks need as many 8-bit codes", file, name,
         codes.data.size(), blocks);
  q.qabsmax = codes.data;
  q.nested_absmax = floats(name + ".nested_absmax", (blocks + kNf4Nested - 1) / kNf4Nested);
  const std::vector<float> map = floats(name + ".nested_quant_map", 256);
  std::copy(map.begin(), map.end(), q.nested_map.begin());
  try {
    if (field("nested_blocksize").get<int64_t>() != kNf4Nested)
      fail("{}: '{}' has nested_blocksize {}, expected {}", file, qs_key, field("nested_blocksize").dump(), kNf4Nested);
    q.offset = field("nested_offset").get<float>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: '{}' has a field of the wrong type: {}", file, qs_key, e.what());
  }
  return q;
}

void set_nf4_parameter(Backend& backend, Parameter& p, const Nf4Tensor& whole) {
  TEMPER_CHECK(p.quantized, "set_nf4_parameter: {} is not quantized", p.name);
  const Nf4Weight& w = p.nf4;
  if (whole.numel != p.full_shape.numel())
    fail("{}: an NF4 tensor of {} elements for a weight of shape {}", p.name, whole.numel,
         p.full_shape.str());
  if (whole.double_quant != w.double_quant())
    fail("{}: the weight is {} quantized but the model wants double_quant={}", p.name,
         whole.double_quant ? "double" : "singly", w.double_quant());
  const int64_t rows = w.rows, cols = w.cols, full_cols = w.full_cols;
  const int64_t r0 = w.row0;
  std::vector<uint8_t> packed(size_t(rows * cols / 2)), codes(size_t(rows * cols / kNf4Block));
  std::vector<float> absmax(codes.size());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t first = (r0 + r) * full_cols + w.col0;  // whole element of (r, 0)
    std::copy_n(whole.packed.begin() + first / 2, cols / 2, packed.begin() + r * cols / 2);
    for (int64_t j = 0; j < cols; j += kNf4Block) {
      const size_t local = size_t((r * cols + j) / kNf4Block), b = size_t((first + j) / kNf4Block);
      if (whole.double_quant) codes[local] = whole.qabsmax[b];
      else absmax[local] = whole.absmax[b];
    }
  }
  backend.copy_from_host(w.packed, packed.data());
  backend.copy_from_host(w.code, whole.code.data());
  if (whole.double_quant) {
    if (int64_t(whole.nested_absmax.size()) != w.nested_absmax.numel())
      fail("{}: {} nested absmaxes for {} blocks (expected {})", p.name, whole.nested_absmax.size(),
           whole.blocks(), w.nested_absmax.numel());
    backend.copy_from_host(w.qabsmax, codes.data());
    backend.copy_from_host(w.nested_absmax, whole.nested_absmax.data());
    backend.copy_from_host(w.nested_map, whole.nested_map.data());
    p.nf4.offset = whole.offset;
  } else {
    backend.copy_from_host(w.absmax, absmax.data());
  }
  backend.synchronize();
}

std::vector<float> nf4_parameter_values(Backend& backend, const Parameter& p) {
  Arena scratch(backend.memory(), "nf4 values");
  Tensor out = scratch.allocate(DType::F32, p.shape);
  backend.nf4_dequantize(out, p.nf4);
  std::vector<float> host(size_t(p.shape.numel()));
  backend.copy_to_host(host.data(), out);
  return host;
}

}  // namespace temper
