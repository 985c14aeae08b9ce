// Byte-level BPE internals: the GPT-2 byte-to-unicode table, UTF-8 helpers, the PCRE2
// regex wrapper and the merge loop (same order as tokenizers' models/bpe/word.rs).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <queue>

#include "core/error.h"
#include "data/tokenizer.h"

namespace temper::tokenizer_detail {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string byte_token_name(uint8_t byte) {
  static const char* hex = "0123456789ABCDEF";
  return std::string("<0x") + hex[byte >> 4] + hex[byte & 15] + ">";
}

namespace {

struct ByteTable {
  std::array<std::string, 256> to_unicode;
  std::array<uint32_t, 256> code_point{};
  ByteTable() {
    // Printable bytes keep their value; the other 68 map to U+0100 + n in byte order.
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      code_point[b] = keep ? b : 0x100 + n++;
      append_utf8(to_unicode[b], code_point[b]);
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

// Length of the valid UTF-8 sequence at s[i], or 0 with *bad set to the number of bytes
// that form the maximal invalid subpart (at least 1).
size_t utf8_sequence(std::string_view s, size_t i, size_t* bad) {
  const auto u = [&](size_t k) { return uint8_t(s[k]); };
  const uint8_t b = u(i);
  if (b < 0x80) return 1;
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    const bool ok = i + k < s.size() && u(i + k) >= (k == 1 ? lo : 0x80) &&
                    u(i + k) <= (k == 1 ? hi : 0xBF);
    if (!ok) {
      *bad = k;
      return 0;
    }
  }
  return need + 1;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t byte) { return byte_table().to_unicode[byte]; }

int unicode_to_byte(uint32_t cp) {
  if (cp >= 0x21 && cp <= 0xFF && cp != 0x7F && !(cp >= 0x80 && cp <= 0xA0) && cp != 0xAD)
    return int(cp);
  if (cp >= 0x100 && cp < 0x100 + 68) {
    static const std::array<int, 68> inverse = [] {
      std::array<int, 68> inv{};
      for (int b = 0; b < 256; ++b) {
        const uint32_t c = byte_table().code_point[b];
        if (c >= 0x100) inv[c - 0x100] = b;
      }
      return inv;
    }();
    return inverse[cp - 0x100];
  }
  return -1;
}

size_t utf8_invalid_offset(std::string_view s) {
  size_t i = 0, bad = 0;
  while (i < s.size()) {
    const size_t n = utf8_sequence(s, i, &bad);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

uint32_t utf8_next(std::string_view s, size_t& i) {
  const uint8_t b = uint8_t(s[i]);
  size_t n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  uint32_t cp = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
  for (size_t k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0, bad = 0;
  while (i < bytes.size()) {
    const size_t n = utf8_sequence(bytes, i, &bad);
    if (n > 0) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += bad;
    }
  }
  return out;
}

Regex::Regex(const std::string& pattern, bool literal) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()),
                                   pattern.size(), options, &err, &err_offset, nullptr);
  if (!code) {
    std::array<PCRE2_UCHAR, 256> msg{};
    pcre2_get_error_message(err, msg.data(), msg.size());
    fail("invalid regex at offset {}: {} (pattern: {})", err_offset,
         reinterpret_cast<const char*>(msg.data()), pattern);
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: falls back to interpreting
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view subject) const {
  auto* code = static_cast<pcre2_code*>(code_);
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  if (!md) fail("out of memory creating PCRE2 match data");
  const auto* data = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t pos = 0;
  while (pos <= subject.size()) {
    // The caller validated the UTF-8 once; re-checking per call would be quadratic.
    const int rc = pcre2_match(code, data, subject.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      std::array<PCRE2_UCHAR, 256> msg{};
      pcre2_get_error_message(rc, msg.data(), msg.size());
      pcre2_match_data_free(md);
      fail("regex match failed at byte {}: {}", pos, reinterpret_cast<const char*>(msg.data()));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    if (end > begin) {
      out.emplace_back(begin, end);
      pos = end;
    } else {  // empty match: step over one character
      if (begin >= subject.size()) break;
      size_t next = begin;
      utf8_next(subject, next);
      pos = next;
    }
  }
  pcre2_match_data_free(md);
  return out;
}

void bpe_merge(std::vector<int32_t>& ids, const MergeMap& merges) {
  if (ids.size() < 2) return;
  struct Symbol {
    int32_t id;
    int64_t prev, next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int64_t pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const {  // max-heap: lowest rank, then leftmost
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const int64_t n = int64_t(ids.size());
  std::vector<Symbol> sym(n);
  for (int64_t i = 0; i < n; ++i) sym[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  std::priority_queue<Candidate> queue;
  const auto push = [&](int64_t pos) {
    const int64_t next = sym[pos].next;
    if (next < 0) return;
    auto it = merges.find(merge_key(sym[pos].id, sym[next].id));
    if (it != merges.end()) queue.push({it->second.first, pos, it->second.second});
  };
  for (int64_t i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    const int64_t right_pos = left.next;
    // Stale entry: the pair at pos changed since it was queued.
    auto it = merges.find(merge_key(left.id, sym[right_pos].id));
    if (it == merges.end() || it->second.second != top.new_id) continue;
    left.id = top.new_id;
    left.next = sym[right_pos].next;
    sym[right_pos].alive = false;
    if (left.next >= 0) sym[left.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    push(top.pos);
  }
  ids.clear();
  for (int64_t i = 0; i >= 0; i = sym[i].next) ids.push_back(sym[i].id);
}

}  // namespace temper::tokenizer_detail

namespace temper::tokenizer_detail {

bool is_whitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::vector<std::pair<size_t, size_t>> split_ranges(std::string_view piece, const Regex& regex,
                                                    SplitBehavior behavior, bool invert) {
  // (begin, end, is_match) covering the piece, as tokenizers' find_matches.
  std::vector<std::tuple<size_t, size_t, bool>> parts;
  size_t prev = 0;
  for (auto [b, e] : regex.find_all(piece)) {
    if (prev != b) parts.emplace_back(prev, b, false);
    parts.emplace_back(b, e, true);
    prev = e;
  }
  if (prev != piece.size()) parts.emplace_back(prev, piece.size(), false);
  if (invert)
    for (auto& p : parts) std::get<2>(p) = !std::get<2>(p);
  std::vector<std::pair<size_t, size_t>> ranges;
  bool prev_match = false;
  switch (behavior) {
    case SplitBehavior::Removed:
      for (auto& [b, e, m] : parts)
        if (!m) ranges.emplace_back(b, e);
      break;
    case SplitBehavior::Isolated:
      for (auto& [b, e, m] : parts) ranges.emplace_back(b, e);
      break;
    case SplitBehavior::MergedWithPrevious:
      for (auto& [b, e, m] : parts) {
        if (m && !prev_match && !ranges.empty()) ranges.back().second = e;
        else ranges.emplace_back(b, e);
        prev_match = m;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        auto& [b, e, m] = *it;
        if (m && !prev_match && !ranges.empty()) ranges.back().first = b;
        else ranges.emplace_back(b, e);
        prev_match = m;
      }
      std::reverse(ranges.begin(), ranges.end());
      break;
    case SplitBehavior::Contiguous:
      for (auto& [b, e, m] : parts) {
        if (m && prev_match && !ranges.empty()) ranges.back().second = e;
        else ranges.emplace_back(b, e);
        prev_match = m;
      }
      break;
  }
  std::erase_if(ranges, [](auto& r) { return r.second <= r.first; });
  return ranges;
}

}  // namespace temper::tokenizer_detail

namespace temper::tokenizer_detail {

void append_byte_level_decoded(std::string& out, std::string_view token) {
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    const int b = unicode_to_byte(utf8_next(token, i));
    if (b < 0) {
      out += token;
      return;
    }
    bytes += char(b);
  }
  out += bytes;
}

void AddedTrie::insert(const std::string& content, int32_t token) {
  int32_t n = 0;
  for (uint8_t c : content) {
    int32_t child = -1;
    for (auto& [byte, node] : nodes_[n].next)
      if (byte == c) child = node;
    if (child < 0) {
      child = int32_t(nodes_.size());
      nodes_[n].next.emplace_back(c, child);
      nodes_.emplace_back();
    }
    n = child;
  }
  nodes_[n].token = token;
}

std::pair<int32_t, size_t> AddedTrie::longest(std::string_view s, size_t i) const {
  int32_t n = 0, best = -1;
  size_t best_len = 0;
  for (size_t k = i; k < s.size(); ++k) {
    int32_t child = -1;
    for (auto& [byte, node] : nodes_[n].next)
      if (byte == uint8_t(s[k])) child = node;
    if (child < 0) break;
    n = child;
    if (nodes_[n].token >= 0) best = nodes_[n].token, best_len = k + 1 - i;
  }
  return {best, best_len};
}

}  // namespace temper::tokenizer_detail
