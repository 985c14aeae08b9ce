// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (GPT-2, Llama 3,
// Qwen2, SmolLM2 style), matching the `tokenizers` library's ids exactly.
//
// Supported file contents:
//   model: type "BPE" with vocab (token -> id), merges ("a b" strings or [a, b] pairs;
//     rank = list order), ignore_merges, unk_token/fuse_unk; no dropout, no
//     continuing_subword_prefix / end_of_word_suffix, no byte_fallback.
//   pre_tokenizer: ByteLevel (add_prefix_space, use_regex = the GPT-2 split), alone or in
//     a Sequence after Split (Regex or String pattern, any behavior, invert) and Digits
//     steps. ByteLevel must be the last step (it maps bytes to characters).
//   normalizer: null; "NFC" is accepted but not applied (input is assumed to be NFC).
//   decoder: ByteLevel (or null). post_processor: ByteLevel / TemplateProcessing /
//     Sequence of them; TemplateProcessing's leading / trailing special tokens give
//     bos_id() / eos_id().
//   added_tokens: matched literally (leftmost-longest) in the raw input before
//     pre-tokenization and never split; lstrip / rstrip / single_word honoured.
//
// encode(): added tokens split out; each remaining chunk is split by the pre-tokenizer
// regexes (PCRE2, UTF-8 + UCP, JIT when available); each piece's bytes are mapped through
// the GPT-2 byte-to-unicode table; BPE merges are applied lowest rank first (ties: leftmost),
// with a per-piece cache. The input must be valid UTF-8. No BOS/EOS is added: prepend
// bos_id() yourself where the model expects one.
// decode(): token strings joined, characters mapped back to bytes, added tokens emitted as
// their content, invalid UTF-8 replaced by U+FFFD as `tokenizers` does.
//
// Not supported: SentencePiece/Metaspace models, byte_fallback, normalizers other than
// NFC (not applied), GGUF tokenizer metadata, chat templates.
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

  // Stable hex hash of vocab, merges, added tokens, pre-tokenizer steps and model
  // options: equal fingerprints mean equal encodings. Use it to key tokenized datasets.
  const std::string& fingerprint() const;

  struct Impl;

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
