// Turning generated tokens into text as they arrive. A token can end in the middle of a
// UTF-8 character (byte-level BPE splits characters into bytes), so the stream holds back
// an incomplete trailing character until the token that completes it arrives; what it
// returns is always valid UTF-8.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace temper {

// Length of the longest prefix of `s` that does not end inside an incomplete (but so far
// valid) UTF-8 sequence. Invalid bytes count as complete: they will never become valid.
size_t utf8_complete_prefix(std::string_view s);

class TextStream {
 public:
  // skip_special: special tokens (end-of-turn, EOS) produce no text.
  explicit TextStream(const Tokenizer& tokenizer, bool skip_special = true)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}
  // Appends a token; returns the text that became complete (possibly empty).
  std::string push(int32_t token);
  // The held-back rest, invalid bytes replaced by U+FFFD.
  std::string finish();
  const std::vector<int32_t>& tokens() const { return tokens_; }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> tokens_;
  size_t emitted_ = 0;  // bytes of decode_bytes(tokens_) already returned
};

}  // namespace temper
