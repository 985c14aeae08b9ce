// Tokenizer internals shared by tokenizer.cpp (tokenizer.json loading), tokenizer_encode.cpp
// (the encode / decode pipeline), sentencepiece.cpp (tokenizer.model and the score-based
// BPE) and tokenizer_gguf.cpp (GGUF metadata), and tokenizer_export.cpp. Not part of the
// public interface.
#pragma once
#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "data/tokenizer.h"

namespace temper {
namespace tokenizer_detail {

// Hash / equality that let an unordered_map<std::string, V> be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// tokenizers' Metaspace PrependScheme.
enum class PrependScheme { Always, First, Never };

// One pre-tokenizer step (tokenizers' pre_tokenizers): Split / Digits (a regex split),
// ByteLevel (must be last; maps bytes to characters) or Metaspace (' ' -> replacement).
struct PreStep {
  enum class Kind { Split, ByteLevel, Metaspace } kind = Kind::Split;
  std::unique_ptr<Regex> regex;  // Split: the pattern; ByteLevel: the GPT-2 split or null
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement;        // Metaspace
  PrependScheme scheme = PrependScheme::Always;
  bool split = true;              // Metaspace: split before each replacement character
};

// One normalizer step: Prepend(text) to a non-empty segment, or Replace(pattern, text).
struct NormStep {
  enum class Kind { Prepend, Replace } kind = Kind::Prepend;
  std::unique_ptr<Regex> pattern;  // Replace
  std::string content;
};

// One decoder step (tokenizers' decoders), applied to the list of token strings.
struct DecodeStep {
  enum class Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace } kind;
  std::string from = {}, to = {};  // Replace: literal from -> to; Strip: `from` is the character
  size_t start = 0, stop = 0;  // Strip
  PrependScheme scheme = PrependScheme::Always;  // Metaspace
};

// SentencePiece piece types (sentencepiece_model.proto; GGUF token_type uses the same ids).
enum SpPieceType : uint8_t {
  kSpNormal = 1, kSpUnknown = 2, kSpControl = 3, kSpUserDefined = 4, kSpUnused = 5, kSpByte = 6
};

// A SentencePiece BPE model (score-based merges), as sentencepiece's bpe_model.cc.
struct SpModel {
  std::vector<float> scores;       // by id
  std::vector<uint8_t> types;      // by id (SpPieceType)
  StringMap pieces;                // NORMAL, USER_DEFINED and UNUSED pieces: merge targets
  StringMap reserved;              // CONTROL, UNKNOWN and BYTE pieces
  int32_t unk_id = -1;
  bool byte_fallback = false;
  std::array<int32_t, 256> byte_ids;  // <0xNN> piece per byte, -1 when absent
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
  AddedTrie user_defined;          // user-defined pieces: matched whole, never merged
};

// Normalizes one segment as sentencepiece's normalizer.cc with an identity charsmap:
// optional removal of extra spaces, the dummy "▁" prefix, ' ' -> "▁".
std::string sp_normalize(const SpModel& m, std::string_view text);
// Encodes normalized text: highest-score merge first (ties: leftmost), unused pieces split
// back, unknown pieces as <0xNN> bytes (byte_fallback) or one fused unk id.
void sp_encode(const SpModel& m, std::string_view normalized, std::vector<int32_t>& ids);

// What a tokenizer.model or GGUF "llama" metadata holds, before validation.
struct SpPiece {
  std::string piece;
  float score = 0;
  uint8_t type = kSpNormal;
};
struct SpSpec {
  std::vector<SpPiece> pieces;  // by id
  bool byte_fallback = false;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
  std::optional<int32_t> bos, eos;
  std::string where_pieces;  // how errors name the piece list ("pieces", "tokenizer.ggml.tokens")
};
// Validates (as sentencepiece's model_interface.cc) and builds the tokenizer; errors are
// prefixed by the caller's context (the file).
std::shared_ptr<Tokenizer::Impl> make_sentencepiece(SpSpec spec, const std::string& source);

// A parsed tokenizer.json (or the equivalent built from GGUF metadata); errors are prefixed
// by the caller's context.
std::shared_ptr<Tokenizer::Impl> tokenizer_from_json(const nlohmann::json& j, const std::string& source);

// GGUF tokenizer metadata (tokenizer_gguf.cpp); errors name the file and the key.
// tokenizer.ggml.model, checked to be "llama" or "gpt2".
std::string gguf_tokenizer_model(const GgufFile& f);
// "llama": the SentencePiece pieces, flags and BOS / EOS (validated by make_sentencepiece).
SpSpec gguf_sentencepiece_spec(const GgufFile& f);
// "gpt2": the tokenizer.json of the model it was converted from (no post-processor).
nlohmann::json gguf_bpe_tokenizer_json(const GgufFile& f);
// A token id metadata key (tokenizer.ggml.bos_token_id, ...), checked against n_tokens.
std::optional<int32_t> gguf_token_id(const GgufFile& f, const std::string& key, size_t n_tokens);

uint64_t fnv1a(std::string_view s, uint64_t seed);
std::string hex_fingerprint(std::string_view text);  // 32 hex digits (two FNV-1a hashes)

}  // namespace tokenizer_detail

struct Tokenizer::Impl {
  std::string source;
  std::vector<std::string> tokens;  // by id
  std::vector<uint8_t> has_token;
  tokenizer_detail::StringMap vocab;
  // Rank-based BPE (tokenizer.json, GGUF "gpt2").
  tokenizer_detail::MergeMap merges;
  bool ignore_merges = false, fuse_unk = false, byte_fallback = false;
  bool byte_level = false;  // the last pre-tokenizer step is ByteLevel
  std::optional<int32_t> unk_id;
  std::array<int32_t, 256> byte_ids;  // "<0xNN>" vocab entries, -1 when absent
  // Score-based SentencePiece BPE instead (tokenizer.model, GGUF "llama").
  std::unique_ptr<tokenizer_detail::SpModel> sp;

  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  tokenizer_detail::AddedTrie raw_trie, normalized_trie;  // normalized=false / true
  std::vector<tokenizer_detail::NormStep> normalizers;
  std::vector<tokenizer_detail::PreStep> steps;
  std::vector<tokenizer_detail::DecodeStep> decoders;
  bool has_decoder = false;  // false: tokens joined with " " (tokenizers without a decoder)
  std::optional<int32_t> bos, eos;
  std::string fingerprint;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  Impl() { byte_ids.fill(-1); }
  void set_token(int32_t id, const std::string& s);
  // Registers an added token (content matched in the input before anything else).
  void add_token(AddedToken tok, std::string& fp);
  // Fills byte_ids from the "<0xNN>" vocab entries.
  void find_byte_tokens();

  // One segment of (added-token index or -1, [begin, end)) per added token and per gap.
  void split_added(std::string_view text, size_t base, const tokenizer_detail::AddedTrie& trie,
                   std::vector<std::tuple<int32_t, size_t, size_t>>& out) const;
  std::string normalize(std::string_view segment) const;
  // `at_start`: the segment starts at offset 0 of the original input (Metaspace "first").
  void pre_tokenize(std::string_view segment, bool at_start,
                    std::vector<std::string>& pieces) const;
  void encode_piece(const std::string& piece, std::vector<int32_t>& ids) const;
  std::string decode_impl(std::span<const int32_t> ids, bool skip_special, bool lossy) const;
};

}  // namespace temper
