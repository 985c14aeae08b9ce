// SentencePiece BPE: the tokenizer.model reader (the few protobuf fields needed, read from
// the wire format), the normalizer and the score-based merge loop of sentencepiece's
// normalizer.cc / bpe_model.cc / sentencepiece_processor.cc.
#include <charconv>
#include <fmt/format.h>

#include <bit>
#include <cstring>
#include <fstream>
#include <queue>
#include <sstream>

#include "core/error.h"
#include "data/tokenizer_impl.h"

namespace temper {

using namespace tokenizer_detail;

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁"

// A protobuf wire-format reader over one message's bytes. `path` names the message in
// errors ("trainer_spec"); offsets are relative to the file.
struct ProtoReader {
  std::string_view buf;
  size_t pos = 0, base = 0;
  std::string path;

  bool done() const { return pos >= buf.size(); }
  uint64_t varint(const char* what) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= buf.size()) fail("{}: truncated {} at byte {}", path, what, base + pos);
      const uint8_t b = uint8_t(buf[pos++]);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("{}: malformed varint ({}) at byte {}", path, what, base + pos);
  }
  // Reads a tag; returns (field number, wire type).
  std::pair<uint32_t, uint32_t> tag() {
    const uint64_t t = varint("field tag");
    if ((t >> 3) == 0 || (t >> 3) > UINT32_MAX) fail("{}: invalid field tag at byte {}", path, base + pos);
    return {uint32_t(t >> 3), uint32_t(t & 7)};
  }
  std::string_view bytes(size_t n, const char* what) {
    if (n > buf.size() - pos)
      fail("{}: truncated {}: {} bytes at byte {} run past the end of the data (file truncated?)",
           path, what, n, base + pos);
    std::string_view v = buf.substr(pos, n);
    pos += n;
    return v;
  }
  std::string_view length_delimited(const char* what) {
    return bytes(size_t(varint(what)), what);
  }
  ProtoReader sub(const std::string& name) {
    const uint64_t n = varint(name.c_str());
    const size_t at = pos;
    return {bytes(size_t(n), name.c_str()), 0, base + at, name};
  }
  void expect(uint32_t wire, uint32_t want, uint32_t field) {
    if (wire != want)
      fail("{}: field {} has wire type {}, expected {} (not a SentencePiece model?)", path, field,
           wire, want);
  }
  void skip(uint32_t wire, uint32_t field) {
    switch (wire) {
      case 0: varint("skipped field"); return;
      case 1: bytes(8, "skipped field"); return;
      case 2: length_delimited("skipped field"); return;
      case 5: bytes(4, "skipped field"); return;
      default: fail("{}: field {} has unsupported wire type {} at byte {}", path, field, wire, base + pos);
    }
  }
  float f32(uint32_t wire, uint32_t field) {
    expect(wire, 5, field);
    uint32_t u;
    std::memcpy(&u, bytes(4, "float").data(), 4);
    return std::bit_cast<float>(u);
  }
  int64_t int_field(uint32_t wire, uint32_t field) {
    expect(wire, 0, field);
    return int64_t(varint("integer"));
  }
};

SpPiece read_piece(ProtoReader r) {
  SpPiece p;
  bool has_piece = false;
  while (!r.done()) {
    auto [field, wire] = r.tag();
    if (field == 1) {
      r.expect(wire, 2, field);
      p.piece = std::string(r.length_delimited("piece")), has_piece = true;
    } else if (field == 2) {
      p.score = r.f32(wire, field);
    } else if (field == 3) {
      const int64_t t = r.int_field(wire, field);
      if (t < kSpNormal || t > kSpByte) fail("{}.type: unknown piece type {}", r.path, t);
      p.type = uint8_t(t);
    } else {
      r.skip(wire, field);
    }
  }
  if (!has_piece) fail("{}.piece: missing", r.path);
  return p;
}

void read_trainer_spec(ProtoReader r, SpSpec& spec, int64_t& model_type, bool& suffix) {
  int64_t bos = 1, eos = 2;  // proto defaults
  while (!r.done()) {
    auto [field, wire] = r.tag();
    switch (field) {
      case 3: model_type = r.int_field(wire, field); break;
      case 24: suffix = r.int_field(wire, field) != 0; break;
      case 35: spec.byte_fallback = r.int_field(wire, field) != 0; break;
      case 41: bos = int32_t(r.int_field(wire, field)); break;
      case 42: eos = int32_t(r.int_field(wire, field)); break;
      default: r.skip(wire, field);
    }
  }
  if (bos >= 0) spec.bos = int32_t(bos);
  if (eos >= 0) spec.eos = int32_t(eos);
}

void read_normalizer_spec(ProtoReader r, SpSpec& spec) {
  std::string name;
  while (!r.done()) {
    auto [field, wire] = r.tag();
    switch (field) {
      case 1: r.expect(wire, 2, field), name = std::string(r.length_delimited("name")); break;
      case 2:
        r.expect(wire, 2, field);
        if (!r.length_delimited("precompiled_charsmap").empty())
          fail("normalizer_spec.precompiled_charsmap: unsupported (normalizer \"{}\"; only the "
               "identity normalizer is supported)", name);
        break;
      case 3: spec.add_dummy_prefix = r.int_field(wire, field) != 0; break;
      case 4: spec.remove_extra_whitespaces = r.int_field(wire, field) != 0; break;
      case 5: spec.escape_whitespaces = r.int_field(wire, field) != 0; break;
      case 6:
        r.expect(wire, 2, field);
        if (!r.length_delimited("normalization_rule_tsv").empty())
          fail("normalizer_spec.normalization_rule_tsv: custom normalization rules are unsupported");
        break;
      default: r.skip(wire, field);
    }
  }
}

// Leftmost user-defined piece at s[i] (length), else one UTF-8 character.
size_t sp_prefix(const SpModel& m, std::string_view s, size_t i, bool* user_defined) {
  auto [tok, len] = m.user_defined.longest(s, i);
  if (user_defined) *user_defined = tok >= 0;
  if (tok >= 0) return len;
  size_t j = i;
  utf8_next(s, j);
  return j - i;
}

}  // namespace

namespace tokenizer_detail {

std::string sp_normalize(const SpModel& m, std::string_view in) {
  std::string out;
  size_t i = 0;
  auto piece_at = [&](size_t at) { return in.substr(at, sp_prefix(m, in, at, nullptr)); };
  if (m.remove_extra_whitespaces)
    while (i < in.size() && piece_at(i) == " ") ++i;
  if (i >= in.size()) return out;
  const std::string space = m.escape_whitespaces ? std::string(kSpace) : " ";
  if (m.add_dummy_prefix) out += space;
  bool prev_space = m.remove_extra_whitespaces;
  while (i < in.size()) {
    std::string_view p = piece_at(i);
    i += p.size();
    if (prev_space)
      while (!p.empty() && p[0] == ' ') p.remove_prefix(1);
    if (!p.empty()) {
      for (char c : p) c == ' ' && m.escape_whitespaces ? (void)(out += kSpace) : (void)(out += c);
      prev_space = p.back() == ' ';
    }
    if (!m.remove_extra_whitespaces) prev_space = false;
  }
  if (m.remove_extra_whitespaces)
    while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0)
      out.resize(out.size() - space.size());
  return out;
}

void sp_encode(const SpModel& m, std::string_view text, std::vector<int32_t>& ids) {
  struct Symbol {
    std::string_view piece;  // empty once merged into its left neighbour
    int prev, next;
    bool freeze;             // a user-defined piece: never merged
  };
  struct Pair {
    float score;
    int left, right;
    size_t size;
    bool operator<(const Pair& o) const {  // max-heap: highest score, then leftmost
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < text.size();) {
    bool frozen = false;
    const size_t n = sp_prefix(m, text, i, &frozen);
    sym.push_back({text.substr(i, n), int(sym.size()) - 1, -1, frozen});
    i += n;
  }
  if (sym.empty()) return;
  for (size_t k = 0; k + 1 < sym.size(); ++k) sym[k].next = int(k + 1);

  std::priority_queue<Pair> agenda;
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
  auto maybe_add = [&](int l, int r) {
    if (l < 0 || r < 0 || sym[l].freeze || sym[r].freeze) return;
    const std::string_view piece(sym[l].piece.data(), sym[l].piece.size() + sym[r].piece.size());
    auto it = m.pieces.find(piece);
    if (it == m.pieces.end()) return;
    agenda.push({m.scores[it->second], l, r, piece.size()});
    if (m.types[it->second] == kSpUnused) rev_merge[piece] = {sym[l].piece, sym[r].piece};
  };
  for (size_t k = 1; k < sym.size(); ++k) maybe_add(int(k - 1), int(k));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol &l = sym[top.left], &r = sym[top.right];
    if (l.piece.empty() || r.piece.empty() || l.piece.size() + r.piece.size() != top.size)
      continue;  // stale: one side changed since the pair was queued
    l.piece = std::string_view(l.piece.data(), top.size);
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = top.left;
    r.piece = {};
    maybe_add(l.prev, top.left);
    maybe_add(top.left, l.next);
  }

  auto piece_to_id = [&](std::string_view w) -> int32_t {
    if (auto it = m.reserved.find(w); it != m.reserved.end()) return it->second;
    if (auto it = m.pieces.find(w); it != m.pieces.end()) return it->second;
    return m.unk_id;
  };
  bool prev_unk = false;
  auto emit = [&](auto& self, std::string_view w) -> void {
    const int32_t id = piece_to_id(w);
    if (id != m.unk_id && m.types[id] == kSpUnused) {  // split back into what formed it
      if (auto it = rev_merge.find(w); it != rev_merge.end()) {
        self(self, it->second.first);
        self(self, it->second.second);
        return;
      }
    }
    const bool unk = id == m.unk_id;
    if (unk && m.byte_fallback) {
      for (unsigned char c : w) ids.push_back(m.byte_ids[c]);
    } else if (!(unk && prev_unk)) {  // a run of unknown pieces becomes one unk
      ids.push_back(id);
    }
    prev_unk = unk;
  };
  for (int k = 0; k >= 0; k = sym[k].next) emit(emit, sym[k].piece);
}

std::shared_ptr<Tokenizer::Impl> make_sentencepiece(SpSpec spec, const std::string& source) {
  auto impl = std::make_shared<Tokenizer::Impl>();
  impl->source = source;
  auto m = std::make_unique<SpModel>();
  m->byte_ids.fill(-1);
  m->byte_fallback = spec.byte_fallback;
  m->add_dummy_prefix = spec.add_dummy_prefix;
  m->remove_extra_whitespaces = spec.remove_extra_whitespaces;
  m->escape_whitespaces = spec.escape_whitespaces;
  std::string fp = fmt::format("temper-sp-1\nn{}{}{}{}\n", spec.byte_fallback, spec.add_dummy_prefix,
                               spec.remove_extra_whitespaces, spec.escape_whitespaces);
  const std::string& where = spec.where_pieces;
  for (size_t id = 0; id < spec.pieces.size(); ++id) {
    const SpPiece& p = spec.pieces[id];
    if (p.piece.empty()) fail("{}[{}]: empty piece", where, id);
    if (utf8_invalid_offset(p.piece) != std::string::npos) fail("{}[{}]: not valid UTF-8", where, id);
    const bool normal = p.type == kSpNormal || p.type == kSpUserDefined || p.type == kSpUnused;
    if (!(normal ? m->pieces : m->reserved).emplace(p.piece, int32_t(id)).second)
      fail("{}[{}]: piece \"{}\" is defined twice", where, id, p.piece);
    impl->vocab.emplace(p.piece, int32_t(id));
    impl->set_token(int32_t(id), p.piece);
    m->scores.push_back(p.score);
    m->types.push_back(p.type);
    fp += fmt::format("p{}:{}:{:08x}:{}:{}\n", id, p.type, std::bit_cast<uint32_t>(p.score),
                      p.piece.size(), p.piece);
    if (p.type == kSpUnknown) {
      if (m->unk_id >= 0) fail("{}[{}]: a second unknown piece (\"{}\")", where, id, p.piece);
      m->unk_id = int32_t(id);
    } else if (p.type == kSpUserDefined) {
      m->user_defined.insert(p.piece, int32_t(id));
    } else if (p.type == kSpByte) {
      const std::string_view s = p.piece;
      const bool ok = s.size() == 6 && s.substr(0, 3) == "<0x" && s[5] == '>';
      int b = -1;
      if (ok) std::from_chars(s.data() + 3, s.data() + 5, b, 16);  // b stays -1 unless hex
      if (b < 0 || byte_token_name(uint8_t(b)) != s)
        fail("{}[{}]: byte piece \"{}\" is not of the form <0xNN>", where, id, p.piece);
      m->byte_ids[b] = int32_t(id);
    }
    if (p.type == kSpControl || p.type == kSpUnknown)  // matched in the text, as transformers does
      impl->add_token({int32_t(id), p.piece, true, false, false, false, false}, fp);
  }
  if (m->unk_id < 0) fail("{}: no piece of type UNKNOWN (sentencepiece requires one)", where);
  impl->unk_id = m->unk_id;
  if (m->byte_fallback)
    for (int b = 0; b < 256; ++b)
      if (m->byte_ids[b] < 0) fail("{}: byte fallback is on but piece {} is missing", where, byte_token_name(uint8_t(b)));
  for (auto [id, name] : {std::pair{spec.bos, "bos"}, std::pair{spec.eos, "eos"}})
    if (id && (*id < 0 || size_t(*id) >= spec.pieces.size()))
      fail("{} id {} is outside the {} pieces", name, *id, spec.pieces.size());
  impl->bos = spec.bos, impl->eos = spec.eos;
  // transformers' LlamaConverter decoder: "▁" -> " ", <0xNN> -> bytes, joined, and the dummy
  // prefix's space stripped from the front.
  using K = DecodeStep::Kind;
  impl->decoders.push_back({K::Replace, std::string(kSpace), " "});
  impl->decoders.push_back({K::ByteFallback});
  impl->decoders.push_back({K::Fuse});
  if (spec.add_dummy_prefix) impl->decoders.push_back({K::Strip, " ", "", 1, 0});
  impl->has_decoder = true;
  impl->sp = std::move(m);
  impl->fingerprint = hex_fingerprint(fp);
  return impl;
}

}  // namespace tokenizer_detail

Tokenizer Tokenizer::from_sentencepiece_string(std::string_view bytes, const std::string& source) {
  return with_context(source, [&] {
    if (bytes.empty()) fail("empty file, not a SentencePiece model");
    SpSpec spec;
    spec.where_pieces = "pieces";
    int64_t model_type = 1;  // proto default: UNIGRAM
    bool suffix = false, has_trainer = false;
    ProtoReader r{bytes, 0, 0, "ModelProto"};
    while (!r.done()) {
      auto [field, wire] = r.tag();
      if (field == 1) {
        r.expect(wire, 2, field);
        const std::string name = fmt::format("pieces[{}]", spec.pieces.size());
        spec.pieces.push_back(read_piece(r.sub(name)));
      } else if (field == 2) {
        r.expect(wire, 2, field);
        read_trainer_spec(r.sub("trainer_spec"), spec, model_type, suffix);
        has_trainer = true;
      } else if (field == 3) {
        r.expect(wire, 2, field);
        read_normalizer_spec(r.sub("normalizer_spec"), spec);
      } else {
        r.skip(wire, field);
      }
    }
    if (spec.pieces.empty()) fail("pieces: none (not a SentencePiece model?)");
    if (!has_trainer) fail("trainer_spec: missing (truncated file?)");
    if (model_type != 2)
      fail("trainer_spec.model_type: {} is unsupported (only BPE = 2; 1 is UNIGRAM, 3 WORD, 4 CHAR)",
           model_type);
    if (suffix) fail("trainer_spec.treat_whitespace_as_suffix: unsupported");
    return Tokenizer::from_impl(make_sentencepiece(std::move(spec), source));
  });
}

Tokenizer Tokenizer::from_sentencepiece_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot open SentencePiece model file", path.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return from_sentencepiece_string(ss.str(), path.string());
}

}  // namespace temper
