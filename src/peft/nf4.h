// NF4 (QLoRA, Dettmers et al. 2023) in bitsandbytes' storage layout
// (shared/reference/peft.md §3): a weight flattened row-major in blocks of 64 elements,
// each element the index of the nearest of 16 NormalFloat code values after dividing by
// its block's absmax; two indices per byte, the even element in the high nibble. With
// double quantization the block absmaxes are stored as 8-bit codes of bitsandbytes'
// signed dynamic map in blocks of 256, after subtracting their mean (the offset), with one
// f32 absmax per 256 blocks. Host side: quantize, dequantize, the code books.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/parameters.h"

namespace temper {

constexpr int64_t kNf4Block = 64;     // weights per absmax
constexpr int64_t kNf4Nested = 256;   // absmaxes per nested absmax (double quantization)

// The 16 NF4 values, ascending (bitsandbytes' get_4bit_type("nf4")).
const std::array<float, 16>& nf4_code();
// bitsandbytes' signed dynamic 8-bit map (create_dynamic_map(signed=True)): 127 positive
// and 127 negative values with a dynamic exponent, 0 and 1, ascending.
const std::array<float, 256>& dynamic_map();

// A quantized tensor of `numel` elements (the whole logical weight), as files hold it.
struct Nf4Tensor {
  int64_t numel = 0;
  std::vector<uint8_t> packed;         // [ceil(numel / 2)] two 4-bit indices per byte
  bool double_quant = false;
  std::vector<float> absmax;           // [blocks] (no double quantization)
  std::vector<uint8_t> qabsmax;        // [blocks] dynamic-map codes of absmax − offset
  std::vector<float> nested_absmax;    // [ceil(blocks / 256)]
  float offset = 0.0f;                 // mean of the block absmaxes
  std::array<float, 16> code{};        // the NF4 values (a file may carry its own)
  std::array<float, 256> nested_map{};  // the dynamic map (likewise)
  int64_t blocks() const { return (numel + kNf4Block - 1) / kNf4Block; }
  // The f32 absmax of block b (decoding the double quantization).
  float block_absmax(int64_t b) const;
};

// Quantizes w[numel] (bitsandbytes' quantize_4bit with quant_type nf4, blocksize 64, and
// compress_statistics = double_quant). Nearest code value; on a tie the lower index.
Nf4Tensor nf4_quantize(const float* w, int64_t numel, bool double_quant);
// out[numel] = code[index] · absmax(block).
void nf4_dequantize(const Nf4Tensor& q, float* out);
// The NF4 index of element i.
inline uint8_t nf4_index(const std::vector<uint8_t>& packed, int64_t i) {
  const uint8_t b = packed[size_t(i / 2)];
  return i % 2 == 0 ? uint8_t(b >> 4) : uint8_t(b & 0xF);
}

// Bytes per weight of a quantized tensor of n weights: 0.5 + absmax overhead.
double nf4_bytes_per_weight(int64_t n, bool double_quant);

struct SafetensorsEntry;

// A bitsandbytes 4-bit weight of a safetensors checkpoint: `name` (packed bytes) with
// name.absmax, .quant_map, (double quantization:) .nested_absmax, .nested_quant_map and
// .quant_state.bitsandbytes__nf4 (JSON: quant_type nf4, blocksize 64, shape, nested_offset).
// `get` finds a tensor by key (nullptr: absent). Read as stored, code books included;
// `shape` is the weight the model expects. A missing, truncated or foreign quant state is
// an error naming `file` and the key.
Nf4Tensor nf4_from_bitsandbytes(const std::string& name, const std::vector<int64_t>& shape,
                                const std::function<const SafetensorsEntry*(const std::string&)>& get,
                                const std::string& file);
// The keys such a weight adds to `name`.
std::vector<std::string> bitsandbytes_nf4_keys(const std::string& name);

// A quantized parameter (Parameter::quantized) set from the whole tensor's quantization:
// this rank's codes and block statistics, the whole's nested statistics and code books,
// so it dequantizes to exactly the whole tensor's values. Errors name the parameter.
void set_nf4_parameter(Backend& backend, Parameter& p, const Nf4Tensor& whole);
// This rank's block of a quantized parameter, dequantized, f32 row-major (host).
std::vector<float> nf4_parameter_values(Backend& backend, const Parameter& p);

}  // namespace temper
