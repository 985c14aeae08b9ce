// Tokenizers of Hugging Face, SentencePiece and GGUF models, matching the reference
// libraries' ids exactly. Three model kinds share one pipeline (added tokens, normalizer,
// pre-tokenizer, model, decoder):
//
// 1. tokenizer.json (Tokenizer::from_file), matching the `tokenizers` library:
//   model: type "BPE" with vocab (token -> id), merges ("a b" strings or [a, b] pairs;
//     rank = list order), ignore_merges, unk_token/fuse_unk, byte_fallback ("<0xNN>" tokens
//     for characters not in the vocab); no dropout, continuing_subword_prefix or
//     end_of_word_suffix.
//   normalizer: null, Prepend, Replace (String or Regex pattern), Sequence of these;
//     "NFC" is accepted but not applied (input is assumed to be NFC).
//   pre_tokenizer: null; ByteLevel (add_prefix_space, use_regex = the GPT-2 split);
//     Split (Regex or String pattern, any behavior, invert); Digits; Metaspace
//     (replacement, prepend_scheme always/first/never, split); a Sequence of these.
//     ByteLevel must be the last step: it makes a byte-level model (GPT-2, Llama 3, Qwen2,
//     SmolLM2); without it pieces are looked up as UTF-8 text (Llama 2 / Mistral style).
//   decoder: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence; null joins
//     tokens with " " as `tokenizers` does (a byte-level model decodes as ByteLevel).
//   post_processor: ByteLevel / TemplateProcessing / Sequence; TemplateProcessing's leading /
//     trailing special tokens give bos_id() / eos_id().
//   added_tokens: matched literally (leftmost-longest) before pre-tokenization, never split;
//     normalized=false ones in the raw input, normalized=true ones in the normalized text;
//     lstrip / rstrip / single_word honoured.
// 2. SentencePiece tokenizer.model (from_sentencepiece_file), matching the `sentencepiece`
//   library: BPE model_type only, identity normalizer (add_dummy_prefix,
//   remove_extra_whitespaces, escape_whitespaces), score-based merges, byte fallback,
//   user-defined pieces matched whole. Control and unknown pieces ("<s>", "[INST]") are
//   special added tokens matched in the text, as in transformers' conversion; each text
//   segment between them is encoded as sentencepiece encodes a whole string.
// 3. GGUF metadata (from_gguf): tokenizer.ggml.model "llama" (SentencePiece as in 2, from
//   tokens / scores / token_type) or "gpt2" (byte-level BPE from tokens / merges with the
//   split of tokenizer.ggml.pre: gpt2, smollm, llama-bpe, qwen2); control and user-defined
//   token types become added tokens.
//
// encode() adds no BOS/EOS: prepend bos_id() where the model expects one (model_tokenizer.h
// says whether). The input must be valid UTF-8. decode() follows the decoder steps and
// repairs invalid UTF-8 as `tokenizers` does (U+FFFD).
//
// Not supported: Unigram / WordPiece models, normalizers that change text beyond
// Prepend / Replace (NFKC, Lowercase, SentencePiece precompiled charsmaps), chat templates
// (see chat_template.h).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace temper {

struct GgufFile;

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class Tokenizer {
 public:
  // Reads and validates a tokenizer.json; every error names the file and the field.
  static Tokenizer from_file(const std::filesystem::path& path);
  // Same from JSON text; `source` names it in errors.
  static Tokenizer from_json_string(std::string_view json_text,
                                    const std::string& source = "<tokenizer json>");
  // A SentencePiece tokenizer.model (protobuf ModelProto); errors name the file and field.
  static Tokenizer from_sentencepiece_file(const std::filesystem::path& path);
  static Tokenizer from_sentencepiece_string(std::string_view model_proto,
                                             const std::string& source);
  // The tokenizer.ggml.* metadata of a GGUF file; errors name the file and key.
  static Tokenizer from_gguf(const GgufFile& file);

  std::vector<int32_t> encode(std::string_view text) const;
  // skip_special drops added tokens marked special (like skip_special_tokens=True).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // Raw decoded bytes, without UTF-8 repair (for streaming: may end mid-character).
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special = false) const;

  // One past the largest id in the vocab or the added tokens.
  int32_t vocab_size() const;
  // Token string as stored (byte-level form, e.g. "Ġthe"); throws for an unknown id.
  const std::string& id_to_token(int32_t id) const;
  // Looks up a vocab entry or added-token content.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  bool is_special(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;

  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  std::optional<int32_t> unk_id() const;
  // "bpe" (rank-based merges, byte-level or with byte fallback) or "sentencepiece".
  std::string model_kind() const;

  // Stable hex hash of vocab, merges, added tokens, pre-tokenizer steps and model
  // options: equal fingerprints mean equal encodings. Use it to key tokenized datasets.
  const std::string& fingerprint() const;

  struct Impl;
  // Internal: wraps a loaded Impl (data/tokenizer_impl.h).
  static Tokenizer from_impl(std::shared_ptr<Impl> impl) { return Tokenizer(std::move(impl)); }

 private:
  explicit Tokenizer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;  // immutable after load (apart from a locked cache)
};

// Internals shared by tokenizer.cpp and bpe.cpp (exposed for tests).
namespace tokenizer_detail {

// The GPT-2 byte-to-unicode table: the UTF-8 of the character each byte maps to.
const std::string& byte_to_unicode(uint8_t byte);
// The byte a code point stands for in that table, or -1.
int unicode_to_byte(uint32_t code_point);
// Offset of the first invalid UTF-8 byte, or npos when valid (no overlongs, surrogates
// or code points above U+10FFFF).
size_t utf8_invalid_offset(std::string_view s);
// Decodes one code point at s[i] (s must be valid UTF-8); advances i.
uint32_t utf8_next(std::string_view s, size_t& i);
// Replaces each maximal invalid subsequence with U+FFFD (Rust's from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);

// A compiled PCRE2 pattern (UTF + UCP; JIT when available).
class Regex {
 public:
  Regex(const std::string& pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-overlapping matches [begin, end) in `subject` (valid UTF-8), left to right;
  // empty matches are skipped.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view subject) const;

 private:
  void* code_ = nullptr;
};

// "<0xNN>" (upper-case hex): the byte-fallback token of a byte.
std::string byte_token_name(uint8_t byte);
void append_utf8(std::string& out, uint32_t code_point);

// Appends a byte-level token's bytes (each character mapped back through the table); a
// token with a character outside the table is appended as is, as tokenizers does.
void append_byte_level_decoded(std::string& out, std::string_view token);

// Byte trie of added-token contents for leftmost-longest matching.
class AddedTrie {
 public:
  void insert(const std::string& content, int32_t token);
  // Longest token starting at s[i]: (token, length in bytes), or (-1, 0).
  std::pair<int32_t, size_t> longest(std::string_view s, size_t i) const;
  bool empty() const { return nodes_.size() == 1; }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // (byte, child), unsorted
    int32_t token = -1;
  };
  std::vector<Node> nodes_{1};
};

// tokenizers' SplitDelimiterBehavior.
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
// The non-empty [begin, end) pieces `regex` splits `piece` into (tokenizers' split()).
std::vector<std::pair<size_t, size_t>> split_ranges(std::string_view piece, const Regex& regex,
                                                    SplitBehavior behavior, bool invert);
// Rust char::is_whitespace (the Unicode White_Space property).
bool is_whitespace(uint32_t code_point);

// (left id, right id) -> (rank, merged id).
using MergeMap = std::unordered_map<uint64_t, std::pair<int32_t, int32_t>>;
inline uint64_t merge_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}
// Applies merges to `symbols` in place: lowest rank first, ties to the leftmost pair.
void bpe_merge(std::vector<int32_t>& symbols, const MergeMap& merges);

}  // namespace tokenizer_detail
}  // namespace temper
