// The encode / decode pipeline shared by every tokenizer kind (tokenizers' order): added
// tokens split out of the raw text, the normalizer, added tokens matched in the normalized
// text, the pre-tokenizer, then the model (rank-based BPE per piece, or SentencePiece BPE
// per segment); decoding runs the decoder steps over the token strings.
#include <fmt/format.h>

#include "core/error.h"
#include "data/tokenizer_impl.h"

namespace temper {

using namespace tokenizer_detail;

namespace tokenizer_detail {

uint64_t fnv1a(std::string_view s, uint64_t h) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::string hex_fingerprint(std::string_view text) {
  return fmt::format("{:016x}{:016x}", fnv1a(text, 0xcbf29ce484222325ull),
                     fnv1a(text, 0x84222325cbf29ce4ull));
}

}  // namespace tokenizer_detail

namespace {

uint32_t last_code_point(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (uint8_t(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) --i;
  return utf8_next(s, i);
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Every occurrence of `from` in s replaced by `to`.
std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  size_t i = 0;
  for (size_t p; (p = s.find(from, i)) != std::string_view::npos; i = p + from.size())
    out.append(s.substr(i, p - i)).append(to);
  return out.append(s.substr(i));
}

// The byte a "<0xNN>" token stands for, or -1 (tokenizers' ByteFallback decoder test).
int byte_token_value(std::string_view t) {
  if (t.size() != 6 || !starts_with(t, "<0x") || t[5] != '>') return -1;
  auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                          : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace

// ---- encoding ------------------------------------------------------------------------

void Tokenizer::Impl::split_added(std::string_view text, size_t base, const AddedTrie& trie,
                                  std::vector<std::tuple<int32_t, size_t, size_t>>& out) const {
  static const Regex word_char(R"([\p{L}\p{N}_])", false);
  auto is_word = [&](std::string_view ch) { return !word_char.find_all(ch).empty(); };
  size_t start_offset = 0, i = 0;
  while (!trie.empty() && i < text.size()) {
    auto [tok, len] = trie.longest(text, i);
    if (tok < 0) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + len;
    i = stop;  // leftmost-longest, non-overlapping, as tokenizers' Aho-Corasick scan
    const AddedToken& a = added[tok];
    if (a.single_word) {
      size_t p = start;
      while (p > 0 && (uint8_t(text[p - 1]) & 0xC0) == 0x80) --p;
      const bool before = start > 0 && is_word(text.substr(p - 1, start - p + 1));
      size_t q = stop;
      const bool after = stop < text.size() && (utf8_next(text, q), is_word(text.substr(stop, q - stop)));
      if (before || after) continue;
    }
    if (a.lstrip) {
      size_t s = start;
      while (s > start_offset && is_whitespace(last_code_point(text.substr(0, s)))) {
        --s;
        while (s > 0 && (uint8_t(text[s]) & 0xC0) == 0x80) --s;
      }
      start = s;
    }
    if (a.rstrip) {
      while (stop < text.size()) {
        size_t q = stop;
        if (!is_whitespace(utf8_next(text, q))) break;
        stop = q;
      }
      i = stop;
    }
    if (start_offset < start) out.emplace_back(-1, base + start_offset, base + start);
    out.emplace_back(tok, base + start, base + stop);
    start_offset = stop;
  }
  if (start_offset < text.size()) out.emplace_back(-1, base + start_offset, base + text.size());
}

std::string Tokenizer::Impl::normalize(std::string_view segment) const {
  std::string s(segment);
  for (const NormStep& n : normalizers) {
    if (n.kind == NormStep::Kind::Prepend) {
      if (!s.empty()) s = n.content + s;
      continue;
    }
    std::string out;
    size_t prev = 0;
    for (auto [b, e] : n.pattern->find_all(s)) out.append(s, prev, b - prev).append(n.content), prev = e;
    s = out.append(s, prev);
  }
  return s;
}

void Tokenizer::Impl::pre_tokenize(std::string_view segment, bool at_start,
                                   std::vector<std::string>& out) const {
  // (piece, starts at offset 0 of the original input)
  std::vector<std::pair<std::string, bool>> pieces{{std::string(segment), at_start}}, next;
  for (const PreStep& step : steps) {
    next.clear();
    for (auto& [piece, first] : pieces) {
      if (step.kind == PreStep::Kind::ByteLevel && step.add_prefix_space && piece[0] != ' ')
        piece = " " + piece;
      if (step.kind == PreStep::Kind::Metaspace) {
        piece = replace_all(piece, " ", step.replacement);
        const bool prepend = step.scheme == PrependScheme::Always ||
                             (step.scheme == PrependScheme::First && first);
        if (prepend && !starts_with(piece, step.replacement)) piece = step.replacement + piece;
        if (!step.split) {
          next.emplace_back(std::move(piece), first);
          continue;
        }
      }
      if (!step.regex) {
        next.emplace_back(std::move(piece), first);
        continue;
      }
      const auto behavior = step.kind == PreStep::Kind::Metaspace ? SplitBehavior::MergedWithNext
                                                                  : step.behavior;
      for (auto [b, e] : split_ranges(piece, *step.regex, behavior, step.invert))
        if (e > b) next.emplace_back(piece.substr(b, e - b), first && b == 0);
    }
    std::swap(pieces, next);
  }
  for (auto& p : pieces) out.push_back(std::move(p.first));
}

void Tokenizer::Impl::encode_piece(const std::string& piece, std::vector<int32_t>& ids) const {
  if (ignore_merges) {
    std::string mapped;
    if (byte_level)
      for (unsigned char c : piece) mapped += byte_to_unicode(c);
    if (auto it = vocab.find(byte_level ? mapped : piece); it != vocab.end())
      return ids.push_back(it->second);
  }
  const bool cacheable = piece.size() <= 256;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (auto it = cache.find(piece); it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  // One symbol per character (a byte's character for byte-level models), as tokenizers'
  // BPE::merge_word: unknown characters become <0xNN> tokens (byte_fallback) or unk ids
  // (consecutive ones fused with fuse_unk).
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  int32_t pending_unk = -1;  // an unk id not yet pushed (fused with following unknowns)
  for (size_t i = 0; i < piece.size();) {
    std::string_view ch;
    if (byte_level) {
      ch = byte_to_unicode(uint8_t(piece[i++]));
    } else {
      const size_t begin = i;
      utf8_next(piece, i);
      ch = std::string_view(piece).substr(begin, i - begin);
    }
    if (auto it = vocab.find(ch); it != vocab.end()) {
      if (pending_unk >= 0) symbols.push_back(pending_unk), pending_unk = -1;
      symbols.push_back(it->second);
      continue;
    }
    if (byte_fallback) {
      bool all = true;
      for (unsigned char c : ch) all = all && byte_ids[c] >= 0;
      if (all) {
        for (unsigned char c : ch) symbols.push_back(byte_ids[c]);
        continue;
      }
    }
    if (!unk_id)
      fail("{}: no vocab entry for \"{}\" in piece \"{}\" and no unk_token", source, ch, piece);
    if (pending_unk >= 0 && !fuse_unk) symbols.push_back(pending_unk);
    pending_unk = *unk_id;
  }
  if (pending_unk >= 0) symbols.push_back(pending_unk);
  bpe_merge(symbols, merges);
  ids.insert(ids.end(), symbols.begin(), symbols.end());
  if (!cacheable) return;
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() >= 100000) cache.clear();
  cache.emplace(piece, std::move(symbols));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const Impl& t = *impl_;
  if (size_t bad = utf8_invalid_offset(text); bad != std::string_view::npos)
    fail("{}: input text is not valid UTF-8 at byte {}", t.source, bad);
  std::vector<std::tuple<int32_t, size_t, size_t>> pass1, pass2;
  t.split_added(text, 0, t.raw_trie, pass1);
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  for (auto& [tok, b, e] : pass1) {
    if (tok >= 0) {
      ids.push_back(t.added[tok].id);
      continue;
    }
    const std::string_view segment = text.substr(b, e - b);
    if (t.sp) {  // SentencePiece: the whole segment is one string for the model
      sp_encode(*t.sp, sp_normalize(*t.sp, segment), ids);
      continue;
    }
    const std::string normalized = t.normalize(segment);
    pass2.clear();
    t.split_added(normalized, 0, t.normalized_trie, pass2);
    for (auto& [tok2, b2, e2] : pass2) {
      if (tok2 >= 0) {
        ids.push_back(t.added[tok2].id);
        continue;
      }
      pieces.clear();
      t.pre_tokenize(std::string_view(normalized).substr(b2, e2 - b2), b == 0 && b2 == 0, pieces);
      for (auto& p : pieces) t.encode_piece(p, ids);
    }
  }
  return ids;
}

// ---- decoding and lookups --------------------------------------------------------------

// tokenizers' decoders over the token strings. `lossy`: ByteLevel repairs invalid UTF-8 and
// ByteFallback turns a run of byte tokens that is not valid UTF-8 into one U+FFFD per token,
// as tokenizers does; otherwise both emit the raw bytes.
std::string Tokenizer::Impl::decode_impl(std::span<const int32_t> ids, bool skip_special,
                                         bool lossy) const {
  std::vector<std::string> toks, next;
  for (int32_t id : ids) {
    if (auto a = added_by_id.find(id); a != added_by_id.end()) {
      const AddedToken& tok = added[a->second];
      if (!(skip_special && tok.special)) toks.push_back(tok.content);
      continue;
    }
    if (id < 0 || size_t(id) >= tokens.size() || !has_token[id])
      fail("{}: token id {} is not in the vocabulary (size {})", source, id, tokens.size());
    toks.push_back(tokens[id]);
  }
  using K = DecodeStep::Kind;
  for (const DecodeStep& d : decoders) {
    next.clear();
    switch (d.kind) {
      case K::ByteLevel: {
        std::string bytes;
        for (auto& t : toks) append_byte_level_decoded(bytes, t);
        next.push_back(lossy ? utf8_lossy(bytes) : bytes);
        break;
      }
      case K::Replace:
        for (auto& t : toks) next.push_back(replace_all(t, d.from, d.to));
        break;
      case K::ByteFallback: {
        std::string run;  // pending byte tokens' bytes
        size_t run_tokens = 0;
        auto flush = [&] {
          if (run_tokens == 0) return;
          if (!lossy || utf8_invalid_offset(run) == std::string::npos) next.push_back(run);
          else for (size_t k = 0; k < run_tokens; ++k) next.push_back("\uFFFD");
          run.clear(), run_tokens = 0;
        };
        for (auto& t : toks) {
          const int b = byte_token_value(t);
          if (b >= 0) {
            run += char(b), ++run_tokens;
          } else {
            flush();
            next.push_back(t);
          }
        }
        flush();
        break;
      }
      case K::Fuse: {
        std::string all;
        for (auto& t : toks) all += t;
        next.push_back(std::move(all));
        break;
      }
      case K::Strip:
        for (auto& t : toks) {
          size_t b = 0, e = t.size();
          for (size_t k = 0; k < d.start && starts_with(std::string_view(t).substr(b), d.from); ++k)
            b += d.from.size();
          for (size_t k = 0; k < d.stop && e >= b + d.from.size() &&
                             t.compare(e - d.from.size(), d.from.size(), d.from) == 0; ++k)
            e -= d.from.size();
          next.push_back(t.substr(b, e - b));
        }
        break;
      case K::Metaspace:  // replacement -> ' '; the first token loses them (prepend scheme)
        for (size_t i = 0; i < toks.size(); ++i)
          next.push_back(replace_all(toks[i], d.from,
                                     i == 0 && d.scheme != PrependScheme::Never ? "" : " "));
        break;
    }
    std::swap(toks, next);
  }
  std::string out;
  for (size_t i = 0; i < toks.size(); ++i) out += (i && !has_decoder ? " " : "") + toks[i];
  return out;
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special) const {
  return impl_->decode_impl(ids, skip_special, false);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  return utf8_lossy(impl_->decode_impl(ids, skip_special, true));
}

int32_t Tokenizer::vocab_size() const { return int32_t(impl_->tokens.size()); }

const std::string& Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->tokens.size() || !impl_->has_token[id])
    fail("{}: token id {} is not in the vocabulary (size {})", impl_->source, id, vocab_size());
  return impl_->tokens[id];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (auto& a : impl_->added)
    if (a.content == token) return a.id;
  if (auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<int32_t> Tokenizer::unk_id() const { return impl_->unk_id; }
std::string Tokenizer::model_kind() const { return impl_->sp ? "sentencepiece" : "bpe"; }
const std::string& Tokenizer::fingerprint() const { return impl_->fingerprint; }

}  // namespace temper
