// A tokenizer from GGUF metadata (keys in /work/shared/reference/formats-and-hpc.md §2.4):
// tokenizer.ggml.model "llama" is SentencePiece BPE (tokens, scores, token_type); "gpt2" is
// byte-level BPE (tokens, merges, token_type) with the pre-tokenizer named by
// tokenizer.ggml.pre, rebuilt as the tokenizer.json of the model it was converted from.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizer_impl.h"
#include "io/gguf.h"

namespace temper {

using json = nlohmann::json;
using namespace tokenizer_detail;

namespace {

// The split patterns of the Hugging Face tokenizers llama.cpp names by tokenizer.ggml.pre.
constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
          {"use_regex", use_regex}};
}

json split_then_byte_level(const char* pattern) {
  return {{"type", "Sequence"},
          {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"Regex", pattern}}},
                                          {"behavior", "Isolated"}, {"invert", false}},
                                         byte_level(false)})}};
}

bool bool_or(const GgufFile& f, const std::string& key, bool dflt) {
  return f.has(key) ? f.get_bool(key) : dflt;
}

std::vector<std::string> gguf_tokens(const GgufFile& f) {
  std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  if (tokens.empty()) fail("{}: metadata key 'tokenizer.ggml.tokens': no tokens", f.path);
  return tokens;
}

std::vector<int64_t> token_types(const GgufFile& f, size_t n_tokens, bool required) {
  const std::string key = "tokenizer.ggml.token_type";
  if (!f.has(key)) {
    if (required) fail("{}: metadata key '{}' not found", f.path, key);
    return std::vector<int64_t>(n_tokens, kSpNormal);
  }
  std::vector<int64_t> types = f.get_int_array(key);
  if (types.size() != n_tokens)
    fail("{}: metadata key '{}': {} entries for {} tokens", f.path, key, types.size(), n_tokens);
  for (size_t i = 0; i < types.size(); ++i)
    if (types[i] < kSpNormal || types[i] > kSpByte)
      fail("{}: metadata key '{}'[{}]: unknown token type {}", f.path, key, i, types[i]);
  return types;
}

}  // namespace

std::optional<int32_t> tokenizer_detail::gguf_token_id(const GgufFile& f, const std::string& key,
                                                       size_t n_tokens) {
  if (!f.has(key)) return std::nullopt;
  const int64_t id = f.get_int(key);
  if (id < 0 || uint64_t(id) >= n_tokens)
    fail("{}: metadata key '{}': id {} is outside the {} tokens", f.path, key, id, n_tokens);
  return int32_t(id);
}

SpSpec tokenizer_detail::gguf_sentencepiece_spec(const GgufFile& f) {
  const std::vector<std::string> tokens = gguf_tokens(f);
  const std::string skey = "tokenizer.ggml.scores";
  const GgufValue& scores = f.get(skey);
  if (scores.type != GgufValueType::ARRAY || scores.array.size() != tokens.size())
    fail("{}: metadata key '{}': expected an array of {} numbers", f.path, skey, tokens.size());
  if (f.has("tokenizer.ggml.precompiled_charsmap"))
    fail("{}: metadata key 'tokenizer.ggml.precompiled_charsmap': SentencePiece normalization "
         "rules are unsupported", f.path);
  const std::vector<int64_t> types = token_types(f, tokens.size(), true);
  SpSpec spec;
  spec.where_pieces = "tokenizer.ggml.tokens";
  for (size_t i = 0; i < tokens.size(); ++i) {
    const GgufValue& s = scores.array[i];
    if (s.type != GgufValueType::FLOAT32 && s.type != GgufValueType::FLOAT64)
      fail("{}: metadata key '{}'[{}]: type {}, expected FLOAT32", f.path, skey, i,
           gguf_value_type_name(s.type));
    spec.pieces.push_back({tokens[i], float(s.f), uint8_t(types[i])});
    spec.byte_fallback = spec.byte_fallback || types[i] == kSpByte;
  }
  // llama.cpp's defaults for SentencePiece vocabularies.
  spec.add_dummy_prefix = bool_or(f, "tokenizer.ggml.add_space_prefix", true);
  spec.remove_extra_whitespaces = bool_or(f, "tokenizer.ggml.remove_extra_whitespaces", false);
  spec.bos = gguf_token_id(f, "tokenizer.ggml.bos_token_id", tokens.size());
  spec.eos = gguf_token_id(f, "tokenizer.ggml.eos_token_id", tokens.size());
  return spec;
}

json tokenizer_detail::gguf_bpe_tokenizer_json(const GgufFile& f) {
  const std::vector<std::string> tokens = gguf_tokens(f);
  const std::string pkey = "tokenizer.ggml.pre";
  if (!f.has(pkey))
    fail("{}: metadata key '{}' not found: cannot tell which pre-tokenizer split the model uses",
         f.path, pkey);
  const std::string pre = f.get_string(pkey);
  json j;
  j["normalizer"] = nullptr;
  bool ignore_merges = false;
  if (pre == "gpt2") {
    j["pre_tokenizer"] = byte_level(true);
  } else if (pre == "smollm") {  // SmolLM / StarCoder: every digit its own piece, then GPT-2
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                                         byte_level(true)})}};
  } else if (pre == "llama-bpe") {  // Llama 3
    j["pre_tokenizer"] = split_then_byte_level(kLlama3Pattern);
    ignore_merges = true;
  } else if (pre == "qwen2") {
    j["pre_tokenizer"] = split_then_byte_level(kQwen2Pattern);
    j["normalizer"] = {{"type", "NFC"}};
  } else {
    fail("{}: metadata key '{}': unsupported pre-tokenizer \"{}\" (supported: gpt2, smollm, "
         "llama-bpe, qwen2)", f.path, pkey, pre);
  }
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].empty()) fail("{}: metadata key 'tokenizer.ggml.tokens'[{}]: empty token", f.path, i);
    if (!vocab.emplace(tokens[i], i).second)
      fail("{}: metadata key 'tokenizer.ggml.tokens'[{}]: \"{}\" appears twice", f.path, i, tokens[i]);
  }
  const std::string mkey = "tokenizer.ggml.merges";
  const std::vector<std::string> merges = f.get_string_array(mkey);
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& m = merges[r];
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || m.find(' ', sp + 1) != std::string::npos)
      fail("{}: metadata key '{}'[{}]: expected \"left right\", got \"{}\"", f.path, mkey, r, m);
    const std::string a = m.substr(0, sp), b = m.substr(sp + 1);
    if (!vocab.contains(a) || !vocab.contains(b) || !vocab.contains(a + b))
      fail("{}: metadata key '{}'[{}]: \"{}\", \"{}\" or \"{}\" is not a token", f.path, mkey, r,
           a, b, a + b);
  }
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", ignore_merges},
                {"vocab", std::move(vocab)}, {"merges", merges}};
  // Control tokens were the special added tokens, user-defined ones the other added tokens.
  const std::vector<int64_t> types = token_types(f, tokens.size(), false);
  json added = json::array();
  for (size_t i = 0; i < tokens.size(); ++i)
    if (types[i] == kSpControl || types[i] == kSpUserDefined)
      added.push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false},
                       {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                       {"special", types[i] == kSpControl}});
  j["added_tokens"] = std::move(added);
  j["decoder"] = byte_level(true);  // tokenizers wants every ByteLevel field; decoding ignores them
  j["post_processor"] = nullptr;
  return j;
}

std::string tokenizer_detail::gguf_tokenizer_model(const GgufFile& f) {
  const std::string key = "tokenizer.ggml.model";
  if (!f.has(key)) fail("{}: metadata key '{}' not found: the file has no tokenizer", f.path, key);
  const std::string model = f.get_string(key);
  if (model != "llama" && model != "gpt2")
    fail("{}: metadata key '{}': unsupported tokenizer model \"{}\" (supported: llama, gpt2)",
         f.path, key, model);
  return model;
}

Tokenizer Tokenizer::from_gguf(const GgufFile& f) {
  if (gguf_tokenizer_model(f) == "llama")
    return from_impl(with_context(f.path, [&] { return make_sentencepiece(gguf_sentencepiece_spec(f), f.path); }));
  auto impl = with_context(f.path, [&] { return tokenizer_from_json(gguf_bpe_tokenizer_json(f), f.path); });
  const size_t n_tokens = impl->tokens.size();
  impl->bos = gguf_token_id(f, "tokenizer.ggml.bos_token_id", n_tokens);
  impl->eos = gguf_token_id(f, "tokenizer.ggml.eos_token_id", n_tokens);
  return from_impl(std::move(impl));
}

}  // namespace temper
