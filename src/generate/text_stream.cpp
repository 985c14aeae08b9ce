#include "generate/text_stream.h"

namespace temper {

size_t utf8_complete_prefix(std::string_view s) {
  // Look back over at most 3 continuation bytes for the lead byte of the last character.
  const size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const uint8_t b = uint8_t(s[n - back]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte
    const size_t need = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 && b < 0xF0 ? 3
                        : b >= 0xC2 && b < 0xE0 ? 2 : 1;
    return need > back ? n - back : n;  // lead waiting for more bytes: hold it back
  }
  return n;
}

std::string TextStream::push(int32_t token) {
  tokens_.push_back(token);
  // Decoding the whole sequence (not the token alone) keeps decoders that treat the first
  // token specially (SentencePiece's leading space) consistent.
  const std::string bytes = tokenizer_.decode_bytes(tokens_, skip_special_);
  const size_t end = utf8_complete_prefix(bytes);
  if (end <= emitted_) return {};
  std::string out =
      tokenizer_detail::utf8_lossy(std::string_view(bytes).substr(emitted_, end - emitted_));
  emitted_ = end;
  return out;
}

std::string TextStream::finish() {
  const std::string bytes = tokenizer_.decode_bytes(tokens_, skip_special_);
  if (bytes.size() <= emitted_) return {};
  std::string out = tokenizer_detail::utf8_lossy(std::string_view(bytes).substr(emitted_));
  emitted_ = bytes.size();
  return out;
}

}  // namespace temper
