// tokenizer.json loading: model, normalizer, pre-tokenizer, decoder, added tokens and
// post-processor. The encode / decode pipeline is in tokenizer_encode.cpp; internals (byte
// table, UTF-8, PCRE2, the merge loop) in bpe.cpp.
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/limits.h"
#include "data/tokenizer_impl.h"

namespace temper {

using json = nlohmann::json;
using namespace tokenizer_detail;

namespace {

// The GPT-2 split (tokenizers' pre_tokenizers/byte_level.rs).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

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

std::string type_of(const json& j, const std::string& path) {
  return str(field(j, "type", path), path + ".type");
}

// A {"String": s} or {"Regex": r} pattern; `literal` tells which.
std::string pattern_of(const json& p, const std::string& path, bool& literal) {
  const json& pat = field(p, "pattern", path);
  if (pat.contains("Regex")) return literal = false, str(pat["Regex"], path + ".pattern.Regex");
  if (pat.contains("String")) return literal = true, str(pat["String"], path + ".pattern.String");
  fail("{}.pattern: expected {{\"Regex\": ...}} or {{\"String\": ...}}", path);
}

PrependScheme parse_scheme(const json& p, const std::string& path) {
  auto it = p.find("prepend_scheme");
  if (it == p.end() || it->is_null())  // files before tokenizers 0.14: add_prefix_space
    return opt_bool(p, "add_prefix_space", true, path) ? PrependScheme::Always
                                                       : PrependScheme::Never;
  const std::string s = str(*it, path + ".prepend_scheme");
  if (s == "always") return PrependScheme::Always;
  if (s == "first") return PrependScheme::First;
  if (s == "never") return PrependScheme::Never;
  fail("{}.prepend_scheme: unknown value \"{}\" (always, first or never)", path, s);
}

// The Metaspace replacement: one character.
std::string replacement_of(const json& p, const std::string& path) {
  const std::string r = str(field(p, "replacement", path), path + ".replacement");
  if (r.empty() || utf8_invalid_offset(r) != std::string::npos) fail("{}.replacement: expected one character", path);
  size_t i = 0;
  utf8_next(r, i);
  if (i != r.size()) fail("{}.replacement: expected one character, got \"{}\"", path, r);
  return r;
}

// Ids index the token table: one past the largest is the vocabulary size, bounded.
void check_token_id(int64_t id, const std::string& where) {
  if (id >= limits::kMaxVocabSize)
    fail("{}: id {} exceeds the vocabulary size limit of {} tokens", where, id, limits::kMaxVocabSize);
}

void load_model(Tokenizer::Impl& t, const json& model, std::string& fp) {
  const std::string type = type_of(model, "model");
  if (type != "BPE") fail("model.type: unsupported model type \"{}\" (only \"BPE\" is supported)", type);
  const json& vocab = field(model, "vocab", "model");
  if (!vocab.is_object()) fail("model.vocab: expected an object of token -> id");
  for (auto& [tok, idj] : vocab.items()) {
    if (!idj.is_number_integer() || idj.get<int64_t>() < 0)
      fail("model.vocab[\"{}\"]: expected a non-negative integer id", tok);
    check_token_id(idj.get<int64_t>(), fmt::format("model.vocab[\"{}\"]", tok));
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
      fail("model.{}: unsupported (must be null)", key);
  };
  check_empty("continuing_subword_prefix");
  check_empty("end_of_word_suffix");
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number()) fail("model.dropout: expected a number or null");
    if (it->get<double>() != 0.0) fail("model.dropout: must be null or 0 for deterministic ids");
  }
  t.ignore_merges = opt_bool(model, "ignore_merges", false, "model");
  t.fuse_unk = opt_bool(model, "fuse_unk", false, "model");
  t.byte_fallback = opt_bool(model, "byte_fallback", false, "model");
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    const std::string unk = str(*it, "model.unk_token");
    auto u = t.vocab.find(unk);
    if (u == t.vocab.end()) fail("model.unk_token: \"{}\" is not in model.vocab", unk);
    t.unk_id = u->second;
  }
  fp += fmt::format("o{}{}{}\n", t.ignore_merges, t.fuse_unk, t.unk_id.value_or(-1));
  if (t.byte_fallback) {
    t.find_byte_tokens();
    fp += "f1\n";
  }
}

SplitBehavior parse_behavior(const std::string& s, const std::string& path) {
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  fail("{}: unknown split behavior \"{}\"", path, s);
}

void load_normalizer(Tokenizer::Impl& t, const json& n, const std::string& path, std::string& fp) {
  const std::string type = type_of(n, path);
  NormStep step;
  if (type == "Sequence") {
    const json& list = field(n, "normalizers", path);
    if (!list.is_array()) fail("{}.normalizers: expected an array", path);
    for (size_t i = 0; i < list.size(); ++i)
      load_normalizer(t, list[i], fmt::format("{}.normalizers[{}]", path, i), fp);
    return;
  } else if (type == "NFC") {
    fp += "nNFC\n";  // accepted, not applied: input is assumed to be NFC already
    return;
  } else if (type == "Prepend") {
    step.kind = NormStep::Kind::Prepend;
    step.content = str(field(n, "prepend", path), path + ".prepend");
    fp += fmt::format("nP{}:{}\n", step.content.size(), step.content);
  } else if (type == "Replace") {
    step.kind = NormStep::Kind::Replace;
    bool literal = true;
    const std::string pattern = pattern_of(n, path, literal);
    with_context(path + ".pattern", [&] { step.pattern = std::make_unique<Regex>(pattern, literal); });
    step.content = str(field(n, "content", path), path + ".content");
    fp += fmt::format("nR{}:{}:{}:{}:{}\n", literal, pattern.size(), pattern, step.content.size(),
                      step.content);
  } else {
    fail("{}.type: unsupported normalizer \"{}\" (supported: Prepend, Replace, NFC, Sequence)",
         path, type);
  }
  t.normalizers.push_back(std::move(step));
}

void load_pre_step(Tokenizer::Impl& t, const json& p, const std::string& path, std::string& fp) {
  const std::string type = type_of(p, path);
  if (t.byte_level) fail("{}: a {} step after ByteLevel is not supported", path, type);
  PreStep step;
  if (type == "Sequence") {
    const json& list = field(p, "pretokenizers", path);
    if (!list.is_array()) fail("{}.pretokenizers: expected an array", path);
    for (size_t i = 0; i < list.size(); ++i)
      load_pre_step(t, list[i], fmt::format("{}.pretokenizers[{}]", path, i), fp);
    return;
  } else if (type == "Split") {
    bool literal = false;
    const std::string pattern = pattern_of(p, path, literal);
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
    step.kind = PreStep::Kind::ByteLevel;
    step.add_prefix_space = opt_bool(p, "add_prefix_space", true, path);
    if (opt_bool(p, "use_regex", true, path)) step.regex = std::make_unique<Regex>(kGpt2Pattern, false);
    fp += fmt::format("b{}{}\n", step.add_prefix_space, step.regex != nullptr);
    t.byte_level = true;
  } else if (type == "Metaspace") {
    step.kind = PreStep::Kind::Metaspace;
    step.replacement = replacement_of(p, path);
    step.scheme = parse_scheme(p, path);
    step.split = opt_bool(p, "split", true, path);
    step.regex = std::make_unique<Regex>(step.replacement, true);
    fp += fmt::format("M{}:{}:{}\n", step.replacement, int(step.scheme), step.split);
  } else {
    fail("{}.type: unsupported pre-tokenizer \"{}\" (supported: ByteLevel, Split, Digits, "
         "Metaspace, Sequence)", path, type);
  }
  t.steps.push_back(std::move(step));
}

void load_decoder(Tokenizer::Impl& t, const json& d, const std::string& path) {
  const std::string type = type_of(d, path);
  using K = DecodeStep::Kind;
  DecodeStep step{K::Fuse};
  if (type == "Sequence") {
    const json& list = field(d, "decoders", path);
    if (!list.is_array()) fail("{}.decoders: expected an array", path);
    for (size_t i = 0; i < list.size(); ++i)
      load_decoder(t, list[i], fmt::format("{}.decoders[{}]", path, i));
    return;
  } else if (type == "ByteLevel") {
    step.kind = K::ByteLevel;
  } else if (type == "ByteFallback") {
    step.kind = K::ByteFallback;
  } else if (type == "Fuse") {
    step.kind = K::Fuse;
  } else if (type == "Replace") {
    step.kind = K::Replace;
    bool literal = true;
    step.from = pattern_of(d, path, literal);
    if (!literal) fail("{}.pattern: only a String pattern is supported in a Replace decoder", path);
    if (step.from.empty()) fail("{}.pattern.String: empty", path);
    step.to = str(field(d, "content", path), path + ".content");
  } else if (type == "Strip") {
    step.kind = K::Strip;
    step.from = str(field(d, "content", path), path + ".content");
    size_t i = 0;
    if (!step.from.empty() && utf8_invalid_offset(step.from) == std::string::npos)
      utf8_next(step.from, i);
    if (step.from.empty() || i != step.from.size())
      fail("{}.content: expected one character", path);
    for (auto [key, out] : {std::pair{"start", &step.start}, std::pair{"stop", &step.stop}}) {
      const json& v = field(d, key, path);
      if (!v.is_number_unsigned()) fail("{}.{}: expected a non-negative integer", path, key);
      *out = v.get<size_t>();
    }
  } else if (type == "Metaspace") {
    step.kind = K::Metaspace;
    step.from = replacement_of(d, path);
    step.scheme = parse_scheme(d, path);
  } else {
    fail("{}.type: unsupported decoder \"{}\" (supported: ByteLevel, ByteFallback, Fuse, "
         "Replace, Strip, Metaspace, Sequence)", path, type);
  }
  t.decoders.push_back(std::move(step));
}

void load_added(Tokenizer::Impl& t, const json& list, std::string& fp) {
  if (list.is_null()) return;
  if (!list.is_array()) fail("added_tokens: expected an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string path = fmt::format("added_tokens[{}]", i);
    const json& a = list[i];
    AddedToken tok;
    const json& idj = field(a, "id", path);
    if (!idj.is_number_integer() || idj.get<int64_t>() < 0)
      fail("{}.id: expected a non-negative integer", path);
    check_token_id(idj.get<int64_t>(), path + ".id");
    tok.id = idj.get<int32_t>();
    tok.content = str(field(a, "content", path), path + ".content");
    if (tok.content.empty()) fail("{}.content: empty", path);
    tok.special = opt_bool(a, "special", false, path);
    tok.single_word = opt_bool(a, "single_word", false, path);
    tok.lstrip = opt_bool(a, "lstrip", false, path);
    tok.rstrip = opt_bool(a, "rstrip", false, path);
    tok.normalized = opt_bool(a, "normalized", !tok.special, path);
    t.add_token(std::move(tok), fp);
  }
}

// BOS / EOS from a TemplateProcessing "single" template: a leading / trailing SpecialToken.
void load_post_processor(Tokenizer::Impl& t, const json& p) {
  if (p.is_null()) return;
  const std::string type = type_of(p, "post_processor");
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

void Tokenizer::Impl::set_token(int32_t id, const std::string& s) {
  if (size_t(id) >= tokens.size()) tokens.resize(id + 1), has_token.resize(id + 1, 0);
  tokens[id] = s;
  has_token[id] = 1;
}

void Tokenizer::Impl::add_token(AddedToken tok, std::string& fp) {
  fp += fmt::format("a{}:{}{}{}{}{}:{}:{}\n", tok.id, tok.special, tok.single_word, tok.lstrip,
                    tok.rstrip, tok.normalized, tok.content.size(), tok.content);
  added_by_id[tok.id] = added.size();
  (tok.normalized ? normalized_trie : raw_trie).insert(tok.content, int32_t(added.size()));
  if (size_t(tok.id) >= tokens.size() || !has_token[tok.id]) set_token(tok.id, tok.content);
  added.push_back(std::move(tok));
}

void Tokenizer::Impl::find_byte_tokens() {
  for (int b = 0; b < 256; ++b)
    if (auto it = vocab.find(byte_token_name(uint8_t(b))); it != vocab.end()) byte_ids[b] = it->second;
}

std::shared_ptr<Tokenizer::Impl> tokenizer_detail::tokenizer_from_json(const json& j,
                                                                       const std::string& source) {
  auto impl = std::make_shared<Tokenizer::Impl>();
  impl->source = source;
  if (!j.is_object()) fail("expected a JSON object at top level");
  std::string fp = "temper-bpe-1\n";
  load_model(*impl, field(j, "model", "tokenizer"), fp);
  if (auto n = j.find("normalizer"); n != j.end() && !n->is_null())
    load_normalizer(*impl, *n, "normalizer", fp);
  if (const json& pre = field(j, "pre_tokenizer", "tokenizer"); !pre.is_null())
    load_pre_step(*impl, pre, "pre_tokenizer", fp);
  if (!impl->byte_level && !impl->byte_fallback && !impl->unk_id)
    fail("pre_tokenizer: no ByteLevel step, and the model has neither byte_fallback nor an "
         "unk_token: characters outside the vocab could not be encoded");
  if (auto d = j.find("decoder"); d != j.end() && !d->is_null()) {
    load_decoder(*impl, *d, "decoder");
    impl->has_decoder = true;
  } else if (impl->byte_level) {  // decode byte-level tokens as bytes
    impl->decoders.push_back({DecodeStep::Kind::ByteLevel});
    impl->has_decoder = true;
  }
  if (auto a = j.find("added_tokens"); a != j.end()) load_added(*impl, *a, fp);
  if (auto p = j.find("post_processor"); p != j.end()) load_post_processor(*impl, *p);
  impl->fingerprint = hex_fingerprint(fp);
  return impl;
}

Tokenizer Tokenizer::from_json_string(std::string_view json_text, const std::string& source) {
  return with_context(source, [&] {
    json j;
    try {
      j = json::parse(json_text);
    } catch (const json::exception& e) {
      fail("invalid JSON: {}", e.what());
    }
    return Tokenizer(tokenizer_from_json(j, source));
  });
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot open tokenizer file", path.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json_string(ss.str(), path.string());
}

}  // namespace temper
