// tokenizer.json loading, the added-token / pre-tokenizer / BPE pipeline, and decoding.
// Internals (byte table, UTF-8, PCRE2, the merge loop) are in bpe.cpp.
#include "data/tokenizer.h"

#include <fmt/format.h>

#include <fstream>
#include <map>
#include <tuple>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace temper {

using json = nlohmann::json;
using namespace tokenizer_detail;

namespace {

// The GPT-2 split (tokenizers' pre_tokenizers/byte_level.rs).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct PreStep {
  std::unique_ptr<Regex> regex;  // null: no split in this step
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool byte_level = false;  // the ByteLevel step (ends the sequence)
  bool add_prefix_space = false;
};

uint32_t last_code_point(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (uint8_t(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) --i;
  return utf8_next(s, i);
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

uint64_t fnv1a_seeded(std::string_view s, uint64_t h) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

const json& field(const json& j, const char* key, const std::string& path) {
  if (!j.is_object()) fail("{}: expected an object", path);
  auto it = j.find(key);
  if (it == j.end()) fail("{}.{}: missing", path, key);
  return *it;
}

bool opt_bool(const json& j, const char* key, bool dflt, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) fail("{}.{}: expected a boolean", path, key);
  return it->get<bool>();
}

std::string str(const json& j, const std::string& path) {
  if (!j.is_string()) fail("{}: expected a string, got {}", path, j.type_name());
  return j.get<std::string>();
}

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  std::vector<std::string> tokens;  // by id
  std::vector<uint8_t> has_token;
  std::unordered_map<std::string, int32_t> vocab;
  MergeMap merges;
  bool ignore_merges = false, fuse_unk = false;
  std::optional<int32_t> unk_id;
  std::vector<AddedToken> added;
  std::unordered_map<int32_t, size_t> added_by_id;
  AddedTrie raw_trie, normalized_trie;  // added tokens with normalized=false / true
  std::vector<PreStep> steps;
  std::optional<int32_t> bos, eos;
  std::string fingerprint;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  void set_token(int32_t id, const std::string& s) {
    if (size_t(id) >= tokens.size()) tokens.resize(id + 1), has_token.resize(id + 1, 0);
    tokens[id] = s;
    has_token[id] = 1;
  }

  // One segment of (token index or -1, [begin, end)) per added token and per gap.
  void split_added(std::string_view text, size_t base, const AddedTrie& trie,
                   std::vector<std::tuple<int32_t, size_t, size_t>>& out) const;
  void pre_tokenize(std::string_view segment, std::vector<std::string>& pieces) const;
  void encode_piece(const std::string& piece, std::vector<int32_t>& ids) const;
};

namespace {

void load_model(Tokenizer::Impl& t, const json& model, std::string& fp) {
  const std::string type = str(field(model, "type", "model"), "model.type");
  if (type != "BPE")
    fail("model.type: unsupported model type \"{}\" (only byte-level \"BPE\" is supported)",
         type);
  const json& vocab = field(model, "vocab", "model");
  if (!vocab.is_object()) fail("model.vocab: expected an object of token -> id");
  for (auto& [tok, idj] : vocab.items()) {
    if (!idj.is_number_integer() || idj.get<int64_t>() < 0 || idj.get<int64_t>() > INT32_MAX)
      fail("model.vocab[\"{}\"]: expected a non-negative integer id", tok);
    const int32_t id = idj.get<int32_t>();
    t.vocab[tok] = id;
    t.set_token(id, tok);
  }
  for (size_t id = 0; id < t.tokens.size(); ++id)
    if (t.has_token[id]) fp += fmt::format("v{}:{}:{}\n", id, t.tokens[id].size(), t.tokens[id]);

  const json& merges = field(model, "merges", "model");
  if (!merges.is_array()) fail("model.merges: expected an array");
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    const std::string path = fmt::format("model.merges[{}]", r);
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail("{}: expected \"left right\", got \"{}\"", path, s);
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2) {
      a = str(m[0], path + "[0]"), b = str(m[1], path + "[1]");
    } else {
      fail("{}: expected a \"left right\" string or a [left, right] pair", path);
    }
    auto ia = t.vocab.find(a), ib = t.vocab.find(b), iab = t.vocab.find(a + b);
    if (ia == t.vocab.end() || ib == t.vocab.end() || iab == t.vocab.end())
      fail("{}: \"{}\", \"{}\" or \"{}\" is not in model.vocab", path, a, b, a + b);
    // A repeated pair keeps its last rank, as tokenizers' merge map (a HashMap) does.
    t.merges[merge_key(ia->second, ib->second)] = {int32_t(r), iab->second};
    fp += fmt::format("m{}:{} {}\n", a.size(), a, b);
  }
  auto check_empty = [&](const char* key) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
      fail("model.{}: unsupported (must be null for byte-level BPE)", key);
  };
  check_empty("continuing_subword_prefix");
  check_empty("end_of_word_suffix");
  if (opt_bool(model, "byte_fallback", false, "model"))
    fail("model.byte_fallback: unsupported (SentencePiece-style BPE)");
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number()) fail("model.dropout: expected a number or null");
    if (it->get<double>() != 0.0) fail("model.dropout: must be null or 0 for deterministic ids");
  }
  t.ignore_merges = opt_bool(model, "ignore_merges", false, "model");
  t.fuse_unk = opt_bool(model, "fuse_unk", false, "model");
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    const std::string unk = str(*it, "model.unk_token");
    auto u = t.vocab.find(unk);
    if (u == t.vocab.end()) fail("model.unk_token: \"{}\" is not in model.vocab", unk);
    t.unk_id = u->second;
  }
  fp += fmt::format("o{}{}{}\n", t.ignore_merges, t.fuse_unk, t.unk_id.value_or(-1));
}

SplitBehavior parse_behavior(const std::string& s, const std::string& path) {
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  fail("{}: unknown split behavior \"{}\"", path, s);
}

void load_pre_step(Tokenizer::Impl& t, const json& p, const std::string& path, std::string& fp) {
  const std::string type = str(field(p, "type", path), path + ".type");
  if (!t.steps.empty() && t.steps.back().byte_level)
    fail("{}: a {} step after ByteLevel is not supported", path, type);
  PreStep step;
  if (type == "Sequence") {
    const json& list = field(p, "pretokenizers", path);
    if (!list.is_array()) fail("{}.pretokenizers: expected an array", path);
    for (size_t i = 0; i < list.size(); ++i)
      load_pre_step(t, list[i], fmt::format("{}.pretokenizers[{}]", path, i), fp);
    return;
  } else if (type == "Split") {
    const json& pat = field(p, "pattern", path);
    std::string pattern;
    bool literal;
    if (pat.contains("Regex")) {
      pattern = str(pat["Regex"], path + ".pattern.Regex"), literal = false;
    } else if (pat.contains("String")) {
      pattern = str(pat["String"], path + ".pattern.String"), literal = true;
    } else {
      fail("{}.pattern: expected {{\"Regex\": ...}} or {{\"String\": ...}}", path);
    }
    with_context(path + ".pattern", [&] { step.regex = std::make_unique<Regex>(pattern, literal); });
    const std::string behavior = str(field(p, "behavior", path), path + ".behavior");
    step.behavior = parse_behavior(behavior, path + ".behavior");
    step.invert = opt_bool(p, "invert", false, path);
    fp += fmt::format("s{}:{}:{}:{}:{}\n", literal, behavior, step.invert, pattern.size(), pattern);
  } else if (type == "Digits") {
    const bool individual = opt_bool(p, "individual_digits", false, path);
    step.regex = std::make_unique<Regex>(individual ? R"(\p{N})" : R"(\p{N}+)", false);
    fp += fmt::format("d{}\n", individual);
  } else if (type == "ByteLevel") {
    step.byte_level = true;
    step.add_prefix_space = opt_bool(p, "add_prefix_space", true, path);
    if (opt_bool(p, "use_regex", true, path)) step.regex = std::make_unique<Regex>(kGpt2Pattern, false);
    fp += fmt::format("b{}{}\n", step.add_prefix_space, step.regex != nullptr);
  } else {
    fail("{}.type: unsupported pre-tokenizer \"{}\" (supported: ByteLevel, Split, Digits, "
         "Sequence)", path, type);
  }
  t.steps.push_back(std::move(step));
}

void load_added(Tokenizer::Impl& t, const json& list, std::string& fp) {
  if (list.is_null()) return;
  if (!list.is_array()) fail("added_tokens: expected an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string path = fmt::format("added_tokens[{}]", i);
    const json& a = list[i];
    AddedToken tok;
    const json& idj = field(a, "id", path);
    if (!idj.is_number_integer() || idj.get<int64_t>() < 0 || idj.get<int64_t>() > INT32_MAX)
      fail("{}.id: expected a non-negative integer", path);
    tok.id = idj.get<int32_t>();
    tok.content = str(field(a, "content", path), path + ".content");
    if (tok.content.empty()) fail("{}.content: empty", path);
    tok.special = opt_bool(a, "special", false, path);
    tok.single_word = opt_bool(a, "single_word", false, path);
    tok.lstrip = opt_bool(a, "lstrip", false, path);
    tok.rstrip = opt_bool(a, "rstrip", false, path);
    tok.normalized = opt_bool(a, "normalized", !tok.special, path);
    fp += fmt::format("a{}:{}{}{}{}{}:{}:{}\n", tok.id, tok.special, tok.single_word, tok.lstrip,
                      tok.rstrip, tok.normalized, tok.content.size(), tok.content);
    t.added_by_id[tok.id] = t.added.size();
    (tok.normalized ? t.normalized_trie : t.raw_trie).insert(tok.content, int32_t(t.added.size()));
    if (size_t(tok.id) >= t.tokens.size() || !t.has_token[tok.id]) t.set_token(tok.id, tok.content);
    t.added.push_back(std::move(tok));
  }
}

// BOS / EOS from a TemplateProcessing "single" template: a leading / trailing SpecialToken.
void load_post_processor(Tokenizer::Impl& t, const json& p) {
  if (p.is_null()) return;
  const std::string type = str(field(p, "type", "post_processor"), "post_processor.type");
  if (type == "Sequence") {
    for (auto& q : field(p, "processors", "post_processor")) load_post_processor(t, q);
    return;
  }
  if (type != "TemplateProcessing") return;  // ByteLevel etc. add nothing
  const json& single = field(p, "single", "post_processor");
  if (!single.is_array() || single.empty()) return;
  auto special_id = [&](const json& piece) -> std::optional<int32_t> {
    if (!piece.contains("SpecialToken")) return std::nullopt;
    const std::string name = str(piece["SpecialToken"]["id"], "post_processor.single[].id");
    const json& specials = field(p, "special_tokens", "post_processor");
    if (specials.contains(name) && specials[name].contains("ids") && specials[name]["ids"].size() == 1)
      return specials[name]["ids"][0].get<int32_t>();
    auto it = t.vocab.find(name);
    if (it != t.vocab.end()) return it->second;
    for (auto& a : t.added)
      if (a.content == name) return a.id;
    fail("post_processor.special_tokens: \"{}\" has no id", name);
  };
  t.bos = special_id(single.front());
  if (single.size() > 1) t.eos = special_id(single.back());
}

}  // namespace

Tokenizer Tokenizer::from_json_string(std::string_view json_text, const std::string& source) {
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  with_context(source, [&] {
    json j;
    try {
      j = json::parse(json_text);
    } catch (const json::exception& e) {
      fail("invalid JSON: {}", e.what());
    }
    if (!j.is_object()) fail("expected a JSON object at top level");
    std::string fp = "temper-bpe-1\n";
    load_model(*impl, field(j, "model", "tokenizer"), fp);
    if (auto n = j.find("normalizer"); n != j.end() && !n->is_null()) {
      const std::string type = str(field(*n, "type", "normalizer"), "normalizer.type");
      if (type != "NFC") fail("normalizer.type: unsupported normalizer \"{}\"", type);
      fp += "nNFC\n";  // accepted, not applied: input is assumed to be NFC already
    }
    const json& pre = field(j, "pre_tokenizer", "tokenizer");
    if (pre.is_null()) fail("pre_tokenizer: null; a ByteLevel pre-tokenizer is required");
    load_pre_step(*impl, pre, "pre_tokenizer", fp);
    if (impl->steps.empty() || !impl->steps.back().byte_level)
      fail("pre_tokenizer: no ByteLevel step; only byte-level BPE is supported");
    if (auto d = j.find("decoder"); d != j.end() && !d->is_null()) {
      const std::string type = str(field(*d, "type", "decoder"), "decoder.type");
      if (type != "ByteLevel") fail("decoder.type: unsupported decoder \"{}\"", type);
    }
    if (auto a = j.find("added_tokens"); a != j.end()) load_added(*impl, *a, fp);
    if (auto p = j.find("post_processor"); p != j.end()) load_post_processor(*impl, *p);
    const uint64_t h1 = fnv1a_seeded(fp, 0xcbf29ce484222325ull);
    const uint64_t h2 = fnv1a_seeded(fp, 0x84222325cbf29ce4ull);
    impl->fingerprint = hex64(h1) + hex64(h2);
  });
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot open tokenizer file", path.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json_string(ss.str(), path.string());
}

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

void Tokenizer::Impl::pre_tokenize(std::string_view segment, std::vector<std::string>& out) const {
  std::vector<std::string> pieces{std::string(segment)}, next;
  for (const PreStep& step : steps) {
    next.clear();
    for (std::string& piece : pieces) {
      if (step.add_prefix_space && piece[0] != ' ') piece = " " + piece;
      if (!step.regex) {
        next.push_back(std::move(piece));
        continue;
      }
      const auto ranges = split_ranges(piece, *step.regex, step.behavior, step.invert);
      for (auto [b, e] : ranges)
        if (e > b) next.push_back(piece.substr(b, e - b));
    }
    std::swap(pieces, next);
  }
  for (auto& p : pieces) out.push_back(std::move(p));
}

void Tokenizer::Impl::encode_piece(const std::string& piece, std::vector<int32_t>& ids) const {
  if (ignore_merges) {
    std::string mapped;
    for (unsigned char c : piece) mapped += byte_to_unicode(c);
    if (auto it = vocab.find(mapped); it != vocab.end()) return ids.push_back(it->second);
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (auto it = cache.find(piece); it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  for (unsigned char c : piece) {
    auto it = vocab.find(byte_to_unicode(c));
    if (it != vocab.end()) {
      symbols.push_back(it->second);
    } else if (unk_id) {
      if (!(fuse_unk && !symbols.empty() && symbols.back() == *unk_id)) symbols.push_back(*unk_id);
    } else {
      fail("{}: no vocab entry for byte 0x{:02x} (symbol \"{}\") in piece \"{}\"", source, c,
           byte_to_unicode(c), piece);
    }
  }
  bpe_merge(symbols, merges);
  ids.insert(ids.end(), symbols.begin(), symbols.end());
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() >= 100000) cache.clear();
  cache.emplace(piece, std::move(symbols));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const Impl& t = *impl_;
  if (size_t bad = utf8_invalid_offset(text); bad != std::string_view::npos)
    fail("{}: input text is not valid UTF-8 at byte {}", t.source, bad);
  std::vector<std::tuple<int32_t, size_t, size_t>> pass1, segments;
  t.split_added(text, 0, t.raw_trie, pass1);
  for (auto& [tok, b, e] : pass1) {
    if (tok >= 0) segments.emplace_back(tok, b, e);
    else t.split_added(text.substr(b, e - b), b, t.normalized_trie, segments);
  }
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  for (auto& [tok, b, e] : segments) {
    if (tok >= 0) {
      ids.push_back(t.added[tok].id);
      continue;
    }
    pieces.clear();
    t.pre_tokenize(text.substr(b, e - b), pieces);
    for (auto& p : pieces) t.encode_piece(p, ids);
  }
  return ids;
}

// ---- decoding and lookups --------------------------------------------------------------

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& t = *impl_;
  std::string out;
  for (int32_t id : ids) {
    if (auto a = t.added_by_id.find(id); a != t.added_by_id.end()) {
      const AddedToken& tok = t.added[a->second];
      if (!(skip_special && tok.special)) out += tok.content;
      continue;
    }
    append_byte_level_decoded(out, id_to_token(id));
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  return utf8_lossy(decode_bytes(ids, skip_special));
}

int32_t Tokenizer::vocab_size() const { return int32_t(impl_->tokens.size()); }

const std::string& Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->tokens.size() || !impl_->has_token[id])
    fail("{}: token id {} is not in the vocabulary (size {})", impl_->source, id, vocab_size());
  return impl_->tokens[id];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->vocab.find(std::string(token)); it != impl_->vocab.end()) return it->second;
  for (auto& a : impl_->added)
    if (a.content == token) return a.id;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
const std::string& Tokenizer::fingerprint() const { return impl_->fingerprint; }

}  // namespace temper
