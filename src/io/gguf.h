// GGUF (llama.cpp / ggml model files): a validating reader, dequantization of the common
// types, llama.cpp's Q/K row permutation undone, and the mapping to our (Hugging Face)
// parameter names and ModelConfig.
//
// Layout (little-endian): "GGUF", u32 version (1, 2 or 3), tensor count and KV count
// (u64; u32 in v1), the metadata key/values, the tensor infos (name, n_dims, dims with
// the fastest-varying first, ggml type, offset into the data section), zero padding to
// the alignment (general.alignment, default 32), then the tensor data. Every violation of
// the format (truncation, lengths or counts that run past the end, unknown types,
// misaligned or out-of-range offsets, sizes that disagree with the dims) is a
// temper::Error naming the file and the key or tensor; corrupt lengths are checked
// against the bytes left in the file before anything is allocated.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/config.h"

namespace temper {

// GGUF metadata value types (the u32 written before each value).
enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  uint64_t u = 0;      // unsigned integers, and bool (0/1)
  int64_t i = 0;       // signed integers
  double f = 0;        // FLOAT32 / FLOAT64
  std::string s;       // STRING
  GgufValueType elem_type = GgufValueType::UINT8;  // ARRAY: element type
  std::vector<GgufValue> array;                    // ARRAY: elements (may nest)
};

// ggml tensor types (the ids in ggml.h's enum ggml_type).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21,
  IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28,
  IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct GgmlTypeInfo {
  const char* name;      // "F32", "Q4_0", ...
  int64_t block_size;    // elements per block (1 for plain types)
  int64_t type_size;     // bytes per block
};
// Block size and bytes per block of a known ggml type id; nullptr for an unknown id.
const GgmlTypeInfo* ggml_type_info(uint32_t type);
std::string ggml_type_name(uint32_t type);  // "Q4_0", or "unknown(N)"

struct GgufTensor {
  std::string name;
  // Dims as GGUF stores them: ne[0] is the fastest-varying axis (the row length).
  std::vector<int64_t> ne;
  // The same dims in row-major (PyTorch / HF) order, i.e. ne reversed: a GGUF matrix with
  // ne = [cols, rows] has shape = [rows, cols]. A Linear weight [out, in] in HF is
  // shape [out, in] here, with the same element order.
  std::vector<int64_t> shape;
  uint32_t type = 0;           // a GgmlType id
  uint64_t offset = 0;         // relative to the start of the data section
  std::vector<uint8_t> data;   // the tensor's raw bytes (size checked against the dims)
  std::string file;            // the path it came from (for error messages)
  int64_t numel() const;
};

struct GgufFile {
  std::string path;
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;   // absolute file offset of the data section
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensor> tensors;  // in file order

  bool has(const std::string& key) const { return metadata.count(key) != 0; }
  // Typed getters; each throws temper::Error naming the file and key when the key is
  // missing or has an incompatible type. get_int accepts any integer type (and checks
  // the range), get_float any float or integer type, get_bool only BOOL.
  const GgufValue& get(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  uint64_t array_size(const std::string& key) const;  // length of an ARRAY value
  // Defaults when absent (still an error if present with the wrong type).
  int64_t get_int_or(const std::string& key, int64_t def) const;
  double get_float_or(const std::string& key, double def) const;

  const GgufTensor* find_tensor(const std::string& name) const;  // nullptr if absent
  const GgufTensor& tensor(const std::string& name) const;       // throws naming it
};

// read_tensor_data = false reads the metadata and tensor infos only (tensor data left
// empty, its ranges unchecked): enough for the tokenizer of a multi-GB file.
GgufFile read_gguf(const std::string& path, bool read_tensor_data = true);

// Values of a tensor as f32, in its row-major order (shape). Supports F32, F16, BF16,
// F64, I8, I16, I32, Q8_0, Q4_0 and Q4_1; other types are an Error naming the tensor
// and type.
std::vector<float> dequantize(const GgufTensor& t);

// Undoes llama.cpp's convert-time permutation of q_proj / k_proj rows (arch "llama"):
// within each head, GGUF row 2p + s holds HF row s*(head_dim/2) + p. `w` is [rows, cols]
// row-major (cols = 1 for a bias); n_heads is the head count for Q, the KV head count
// for K.
void unpermute_llama_qk(std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_heads);

// ModelConfig from the metadata of a "llama" or "qwen2" file (finalized). vocab_size comes
// from the token_embd.weight rows, else the tokenizer.ggml.tokens length, else
// {arch}.vocab_size; tie_word_embeddings is set when there is no output.weight.
// Rope scaling (a rope_freqs.weight tensor or {arch}.rope.scaling.type other than none)
// is rejected as unsupported rather than silently ignored.
ModelConfig model_config_from_gguf(const GgufFile& f);

// GGUF tensor name -> our HF parameter name (weights and biases); Error for others.
std::string hf_name_for_gguf(const std::string& gguf_name);

// A tensor as f32 in HF layout: dequantized and, for arch "llama", attn_q / attn_k rows
// unpermuted with the config's head counts.
std::vector<float> gguf_tensor_to_hf(const GgufFile& f, const GgufTensor& t,
                                     const ModelConfig& config);

}  // namespace temper
