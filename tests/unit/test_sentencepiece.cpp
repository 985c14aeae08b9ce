// SentencePiece-style tokenizers (data/sentencepiece.cpp, the byte-fallback and Metaspace
// parts of tokenizer.json, data/tokenizer_gguf.cpp, data/model_tokenizer.cpp) on tiny
// hand-made models whose ids follow from the rules by hand: highest-score merge first with
// ties to the left, unused pieces split back, user-defined pieces kept whole, byte fallback,
// decoders; and load errors that name the file and field / key. Agreement with sentencepiece,
// tokenizers and transformers on real models is tests/reference/test_sentencepiece_reference.cpp.
#include <gtest/gtest.h>

#include <bit>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/model_tokenizer.h"
#include "data/tokenizer.h"
#include "data/tokenizer_export.h"
#include "io/gguf.h"
#include "support/test_util.h"

namespace temper {
namespace {

using json = nlohmann::json;
using Ids = std::vector<int32_t>;

// A minimal protobuf writer for the ModelProto fields the reader uses.
struct Proto {
  std::string b;
  void varint(uint64_t v) {
    for (; v >= 0x80; v >>= 7) b += char(v | 0x80);
    b += char(v);
  }
  Proto& num(int field, int64_t v) { return varint(uint64_t(field) << 3), varint(uint64_t(v)), *this; }
  Proto& str(int field, const std::string& s) {
    return varint(uint64_t(field) << 3 | 2), varint(s.size()), b += s, *this;
  }
  Proto& f32(int field, float x) {
    varint(uint64_t(field) << 3 | 5);
    const uint32_t u = std::bit_cast<uint32_t>(x);
    for (int k = 0; k < 4; ++k) b += char(u >> (8 * k));
    return *this;
  }
  Proto& msg(int field, const Proto& p) { return str(field, p.b); }
};

enum Type { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER = 4, UNUSED = 5, BYTE = 6 };
constexpr int32_t kByte0 = 3;  // <0x00> .. <0xFF> are ids 3 .. 258
constexpr int32_t kSpace = 259, kA = 260, kB = 261, kC = 262, kAB = 263, kBC = 264, kSpaceA = 265,
                  kABC = 266, kX = 267;

// <unk> <s> </s>, 256 byte pieces, then: ▁ a b c ab bc ▁a abc(unused) <x>(user-defined).
std::string tiny_model(int model_type = 2, bool dummy_prefix = true, bool with_unk = true) {
  Proto m;
  auto piece = [&](const std::string& s, float score, int type) {
    m.msg(1, Proto().str(1, s).f32(2, score).num(3, type));
  };
  piece(with_unk ? "<unk>" : "<unk2>", 0, with_unk ? UNKNOWN : CONTROL);
  piece("<s>", 0, CONTROL);
  piece("</s>", 0, CONTROL);
  for (int b = 0; b < 256; ++b) piece(fmt::format("<0x{:02X}>", b), 0, BYTE);
  piece("\u2581", -1, NORMAL);
  piece("a", -2, NORMAL);
  piece("b", -3, NORMAL);
  piece("c", -4, NORMAL);
  piece("ab", -5, NORMAL);
  piece("bc", -5, NORMAL);  // ties with "ab": the leftmost pair merges first
  piece("\u2581a", -6, NORMAL);
  piece("abc", -7, UNUSED);  // reachable by merging, then split back into ab + c
  piece("<x>", 0, USER);
  m.msg(2, Proto().num(3, model_type).num(35, 1).num(41, 1).num(42, 2));
  m.msg(3, Proto().str(1, "identity").num(3, dummy_prefix).num(4, 0));
  return m.b;
}

template <class Fn>
void expect_error(Fn&& fn, std::vector<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning " << parts[0];
  } catch (const Error& e) {
    for (auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// Found by tests/fuzz/fuzz_sentencepiece.cpp (regression input in its corpus,
// regression-byte-piece-not-hex): a byte piece "<0xzz>" threw std::invalid_argument from
// std::stoi instead of an error naming the piece.
TEST(SentencePiece, ABytePieceThatIsNotHexIsAnErrorNamingIt) {
  for (const std::string bad : {"<0xzz>", "<0x-1>", "<0x 1>", "<0x1G>"}) {
    Proto m;
    m.msg(1, Proto().str(1, "<unk>").f32(2, 0).num(3, UNKNOWN));
    m.msg(1, Proto().str(1, bad).f32(2, 0).num(3, BYTE));
    m.msg(2, Proto().num(3, 2));
    expect_error([&] { Tokenizer::from_sentencepiece_string(m.b, "bad.model"); },
                 {"bad.model", bad, "is not of the form <0xNN>"});
  }
}

TEST(SentencePiece, ScoreOrderUnusedUserDefinedAndByteFallback) {
  Tokenizer t = Tokenizer::from_sentencepiece_string(tiny_model(), "tiny.model");
  EXPECT_EQ(t.model_kind(), "sentencepiece");
  EXPECT_EQ(t.vocab_size(), 268);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.unk_id(), 0);
  // "▁abc": ab and bc tie, ab is left; then ab+c = abc (unused) is split back.
  EXPECT_EQ(t.encode("abc"), (Ids{kSpace, kAB, kC}));
  EXPECT_EQ(t.encode("bc"), (Ids{kSpace, kBC}));
  EXPECT_EQ(t.encode("a"), (Ids{kSpaceA}));
  EXPECT_EQ(t.encode("a a"), (Ids{kSpaceA, kSpaceA}));
  EXPECT_EQ(t.encode(" a"), (Ids{kSpace, kSpaceA}));
  // The user-defined piece stays whole and never merges with its neighbours.
  EXPECT_EQ(t.encode("a<x>b"), (Ids{kSpaceA, kX, kB}));
  // Characters outside the vocab become their UTF-8 bytes.
  EXPECT_EQ(t.encode("\u00e9"), (Ids{kSpace, kByte0 + 0xC3, kByte0 + 0xA9}));
  // Control pieces in the text are special tokens; each segment gets the dummy prefix.
  EXPECT_EQ(t.encode("<s>a</s>"), (Ids{1, kSpaceA, 2}));
  EXPECT_EQ(t.encode(""), Ids{});
  EXPECT_TRUE(t.is_special(1));
  EXPECT_FALSE(t.is_special(kX));
  // Decoding: ▁ -> space, bytes joined, the dummy prefix's space stripped.
  EXPECT_EQ(t.decode(t.encode("ab c\u00e9 <x>")), "ab c\u00e9 <x>");
  EXPECT_EQ(t.decode(Ids{1, kSpaceA, 2}), "<s> a</s>");
  EXPECT_EQ(t.decode(Ids{1, kSpaceA, 2}, /*skip_special=*/true), "a");
  // A byte run that is not valid UTF-8: one U+FFFD per byte token (tokenizers' ByteFallback);
  // decode_bytes keeps the bytes.
  EXPECT_EQ(t.decode(Ids{kA, kByte0 + 0xC3, kByte0 + 0xC3}), "a\uFFFD\uFFFD");
  EXPECT_EQ(t.decode_bytes(Ids{kA, kByte0 + 0xC3}), "a\xC3");
}

TEST(SentencePiece, NoDummyPrefix) {
  Tokenizer t = Tokenizer::from_sentencepiece_string(tiny_model(2, false), "tiny.model");
  EXPECT_EQ(t.encode("abc"), (Ids{kAB, kC}));
  EXPECT_EQ(t.encode(" a"), (Ids{kSpaceA}));
  EXPECT_EQ(t.decode(Ids{kSpaceA}), " a");  // nothing stripped
  EXPECT_NE(t.fingerprint(), Tokenizer::from_sentencepiece_string(tiny_model(), "t").fingerprint());
}

TEST(SentencePiece, LoadErrorsNameFileAndField) {
  const std::string good = tiny_model();
  expect_error([&] { Tokenizer::from_sentencepiece_string(good.substr(0, good.size() - 3), "cut.model"); },
               {"cut.model", "truncated"});
  expect_error([&] { Tokenizer::from_sentencepiece_string(tiny_model(1), "uni.model"); },
               {"uni.model", "trainer_spec.model_type", "UNIGRAM"});
  expect_error([&] { Tokenizer::from_sentencepiece_string(tiny_model(2, true, false), "nounk.model"); },
               {"nounk.model", "UNKNOWN"});
  expect_error([&] { Tokenizer::from_sentencepiece_string("", "empty.model"); }, {"empty.model"});
  expect_error([&] { Tokenizer::from_sentencepiece_string("{\"not\": \"proto\"}", "j.model"); }, {"j.model"});
  Proto dup;
  dup.b = tiny_model();
  dup.msg(1, Proto().str(1, "a").f32(2, -9).num(3, NORMAL));
  expect_error([&] { Tokenizer::from_sentencepiece_string(dup.b, "dup.model"); },
               {"dup.model", "pieces[268]", "defined twice"});
  expect_error([] { Tokenizer::from_sentencepiece_file("/nonexistent/tokenizer.model"); },
               {"/nonexistent/tokenizer.model"});
}

// A tokenizer.json of the Llama-2 kind on a tiny vocab: <unk>, 256 byte tokens, ▁ a b ▁a.
json char_level_json() {
  json vocab = {{"<unk>", 0}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 1 + b;
  vocab["\u2581"] = 257, vocab["a"] = 258, vocab["b"] = 259, vocab["\u2581a"] = 260;
  json j;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"\u2581 a"})},
                {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true}};
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", "\u2581"}},
                                                  {{"type", "Replace"}, {"pattern", {{"String", " "}}},
                                                   {"content", "\u2581"}}})}};
  j["pre_tokenizer"] = nullptr;
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}},
                                             {"content", " "}},
                                            {{"type", "ByteFallback"}},
                                            {{"type", "Fuse"}},
                                            {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  j["added_tokens"] = json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}}});
  return j;
}

TEST(SentencePiece, TokenizerJsonByteFallbackAndLegacyNormalizer) {
  Tokenizer t = Tokenizer::from_json_string(char_level_json().dump(), "llama2.json");
  EXPECT_EQ(t.model_kind(), "bpe");
  EXPECT_EQ(t.encode("a a"), (Ids{260, 260}));
  EXPECT_EQ(t.encode("ab\u00e9"), (Ids{260, 259, 1 + 0xC3, 1 + 0xA9}));
  EXPECT_EQ(t.decode(t.encode("ab\u00e9 a")), "ab\u00e9 a");
  // Without byte_fallback an unknown character is <unk>, consecutive ones fused (fuse_unk).
  json j = char_level_json();
  j["model"]["byte_fallback"] = false;
  Tokenizer u = Tokenizer::from_json_string(j.dump(), "unk.json");
  EXPECT_EQ(u.encode("a\u00e9\u00e9b"), (Ids{260, 0, 259}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(Tokenizer::from_json_string(j.dump(), "nofuse.json").encode("a\u00e9\u00e9"), (Ids{260, 0, 0}));
  EXPECT_NE(u.fingerprint(), t.fingerprint());
}

TEST(SentencePiece, MetaspacePreTokenizerAndDecoder) {
  json j = char_level_json();
  j["normalizer"] = nullptr;
  j["added_tokens"].push_back({{"id", 261}, {"content", "<s>"}, {"special", true}, {"normalized", false}});
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"},
                        {"split", true}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}};
  Tokenizer first = Tokenizer::from_json_string(j.dump(), "first.json");
  EXPECT_EQ(first.encode("a a"), (Ids{260, 260}));
  EXPECT_EQ(first.encode("<s>a"), (Ids{261, 258}));  // not at the start: no prefix
  EXPECT_EQ(first.encode(" a"), (Ids{260}));          // already starts with ▁
  EXPECT_EQ(first.decode(Ids{260, 260}), "a a");
  j["pre_tokenizer"]["prepend_scheme"] = "always";
  Tokenizer always = Tokenizer::from_json_string(j.dump(), "always.json");
  EXPECT_EQ(always.encode("<s>a"), (Ids{261, 260}));
  EXPECT_NE(always.fingerprint(), first.fingerprint());
  j["pre_tokenizer"]["prepend_scheme"] = "never";
  EXPECT_EQ(Tokenizer::from_json_string(j.dump(), "never.json").encode("a"), (Ids{258}));
  j["pre_tokenizer"]["prepend_scheme"] = "sometimes";
  expect_error([&] { Tokenizer::from_json_string(j.dump(), "bad.json"); },
               {"bad.json", "pre_tokenizer.prepend_scheme", "sometimes"});
  j = char_level_json();
  j["normalizer"] = {{"type", "NFKC"}};
  expect_error([&] { Tokenizer::from_json_string(j.dump(), "nfkc.json"); }, {"nfkc.json", "normalizer.type", "NFKC"});
  j = char_level_json();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error([&] { Tokenizer::from_json_string(j.dump(), "wp.json"); }, {"wp.json", "decoder.type", "WordPiece"});
  j = char_level_json();
  j["model"]["byte_fallback"] = false;
  j["model"]["unk_token"] = nullptr;
  expect_error([&] { Tokenizer::from_json_string(j.dump(), "nothing.json"); }, {"nothing.json", "byte_fallback"});
}

// ---- GGUF metadata ---------------------------------------------------------------------

GgufValue gstr(const std::string& s) {
  GgufValue v;
  v.type = GgufValueType::STRING, v.s = s;
  return v;
}
GgufValue gu32(uint64_t u) {
  GgufValue v;
  v.type = GgufValueType::UINT32, v.u = u;
  return v;
}
GgufValue garray(GgufValueType t, std::vector<GgufValue> xs) {
  GgufValue v;
  v.type = GgufValueType::ARRAY, v.elem_type = t, v.array = std::move(xs);
  return v;
}

// A llama (SentencePiece) vocab in GGUF form: the tiny model's pieces.
GgufFile llama_gguf() {
  GgufFile f;
  f.path = "tiny.gguf";
  std::vector<GgufValue> toks, scores, types;
  auto add = [&](const std::string& s, float score, int type) {
    toks.push_back(gstr(s));
    GgufValue sc;
    sc.type = GgufValueType::FLOAT32, sc.f = score;
    scores.push_back(sc);
    GgufValue ty;
    ty.type = GgufValueType::INT32, ty.i = type;
    types.push_back(ty);
  };
  add("<unk>", 0, UNKNOWN), add("<s>", 0, CONTROL), add("</s>", 0, CONTROL);
  for (int b = 0; b < 256; ++b) add(fmt::format("<0x{:02X}>", b), 0, BYTE);
  add("\u2581", -1, NORMAL), add("a", -2, NORMAL), add("b", -3, NORMAL), add("c", -4, NORMAL);
  add("ab", -5, NORMAL), add("bc", -5, NORMAL), add("\u2581a", -6, NORMAL), add("abc", -7, UNUSED);
  add("<x>", 0, USER);
  f.metadata["tokenizer.ggml.model"] = gstr("llama");
  f.metadata["tokenizer.ggml.tokens"] = garray(GgufValueType::STRING, toks);
  f.metadata["tokenizer.ggml.scores"] = garray(GgufValueType::FLOAT32, scores);
  f.metadata["tokenizer.ggml.token_type"] = garray(GgufValueType::INT32, types);
  f.metadata["tokenizer.ggml.bos_token_id"] = gu32(1);
  f.metadata["tokenizer.ggml.eos_token_id"] = gu32(2);
  return f;
}

TEST(SentencePiece, GgufLlamaVocabMatchesTheModelFile) {
  const GgufFile f = llama_gguf();
  Tokenizer g = Tokenizer::from_gguf(f);
  Tokenizer m = Tokenizer::from_sentencepiece_string(tiny_model(), "tiny.model");
  for (const char* s : {"abc", "bc a<x>b", "\u00e9 <s>x</s>", "  a  "}) EXPECT_EQ(g.encode(s), m.encode(s)) << s;
  EXPECT_EQ(g.fingerprint(), m.fingerprint());
  EXPECT_EQ(g.bos_id(), 1);
  GgufFile bad = f;
  bad.metadata.erase("tokenizer.ggml.scores");
  expect_error([&] { Tokenizer::from_gguf(bad); }, {"tiny.gguf", "tokenizer.ggml.scores"});
  bad = f;
  bad.metadata["tokenizer.ggml.bos_token_id"] = gu32(9999);
  expect_error([&] { Tokenizer::from_gguf(bad); }, {"tiny.gguf", "tokenizer.ggml.bos_token_id"});
  bad = f;
  bad.metadata.erase("tokenizer.ggml.model");
  expect_error([&] { Tokenizer::from_gguf(bad); }, {"tiny.gguf", "tokenizer.ggml.model"});
  bad.metadata["tokenizer.ggml.model"] = gstr("bert");
  expect_error([&] { Tokenizer::from_gguf(bad); }, {"tiny.gguf", "tokenizer.ggml.model", "bert"});
}

// A gpt2 (byte-level BPE) vocab: the 256 byte characters, "he", "hel" and one control token.
GgufFile gpt2_gguf(const std::string& pre) {
  GgufFile f;
  f.path = "bpe.gguf";
  std::vector<GgufValue> toks, types;
  for (int b = 0; b < 256; ++b) toks.push_back(gstr(tokenizer_detail::byte_to_unicode(uint8_t(b))));
  toks.push_back(gstr("he")), toks.push_back(gstr("hel")), toks.push_back(gstr("<|end|>"));
  for (size_t i = 0; i < toks.size(); ++i) {
    GgufValue ty;
    ty.type = GgufValueType::INT32, ty.i = i == 258 ? CONTROL : NORMAL;
    types.push_back(ty);
  }
  f.metadata["tokenizer.ggml.model"] = gstr("gpt2");
  f.metadata["tokenizer.ggml.pre"] = gstr(pre);
  f.metadata["tokenizer.ggml.tokens"] = garray(GgufValueType::STRING, toks);
  f.metadata["tokenizer.ggml.token_type"] = garray(GgufValueType::INT32, types);
  f.metadata["tokenizer.ggml.merges"] =
      garray(GgufValueType::STRING, {gstr("h e"), gstr("he l")});
  f.metadata["tokenizer.ggml.eos_token_id"] = gu32(258);
  return f;
}

TEST(SentencePiece, GgufGpt2VocabAndPreTokenizers) {
  Tokenizer t = Tokenizer::from_gguf(gpt2_gguf("smollm"));
  EXPECT_EQ(t.encode("hel12<|end|>"), (Ids{257, '1', '2', 258}));
  EXPECT_TRUE(t.is_special(258));
  EXPECT_EQ(t.eos_id(), 258);
  EXPECT_EQ(t.decode(t.encode("hello 42 <|end|>")), "hello 42 <|end|>");
  std::set<std::string> fps;
  for (const char* pre : {"gpt2", "smollm", "llama-bpe", "qwen2"})
    fps.insert(Tokenizer::from_gguf(gpt2_gguf(pre)).fingerprint());
  EXPECT_EQ(fps.size(), 4u);  // each split is part of the fingerprint
  expect_error([] { Tokenizer::from_gguf(gpt2_gguf("falcon")); }, {"bpe.gguf", "tokenizer.ggml.pre", "falcon"});
  GgufFile bad = gpt2_gguf("gpt2");
  bad.metadata["tokenizer.ggml.merges"] = garray(GgufValueType::STRING, {gstr("h e"), gstr("x yz")});
  expect_error([&] { Tokenizer::from_gguf(bad); }, {"bpe.gguf", "tokenizer.ggml.merges'[1]"});
  bad.metadata.erase("tokenizer.ggml.pre");
  expect_error([&] { Tokenizer::from_gguf(bad); }, {"bpe.gguf", "tokenizer.ggml.pre"});
}

// ---- load_model_tokenizer ----------------------------------------------------------------

TEST(SentencePiece, ModelTokenizerDirectory) {
  const auto dir = test::temp_dir("model_tokenizer_dir");
  expect_error([&] { load_model_tokenizer(dir); }, {dir.string(), "tokenizer.json or tokenizer.model"});
  std::ofstream(dir / "tokenizer.model", std::ios::binary) << tiny_model();
  ModelTokenizer m = load_model_tokenizer(dir);  // no tokenizer_config.json: LlamaTokenizer's defaults
  EXPECT_EQ(m.tokenizer.model_kind(), "sentencepiece");
  EXPECT_EQ(m.bos_id, 1);
  EXPECT_EQ(m.eos_id, 2);
  EXPECT_TRUE(m.add_bos);
  EXPECT_EQ(m.chat_template, "");
  json cfg = {{"add_bos_token", false}, {"eos_token", {{"content", "<s>"}}},
              {"chat_template", json::array({{{"name", "tool_use"}, {"template", "T"}},
                                             {{"name", "default"}, {"template", "D"}}})}};
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump();
  m = load_model_tokenizer(dir);
  EXPECT_FALSE(m.add_bos);
  EXPECT_EQ(m.eos_id, 1);
  EXPECT_EQ(m.chat_template, "D");
  cfg["eos_token"] = "<nope>";
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump();
  expect_error([&] { load_model_tokenizer(dir); }, {"tokenizer_config.json", "eos_token", "<nope>"});
  std::ofstream(dir / "tokenizer_config.json") << "{ broken";
  expect_error([&] { load_model_tokenizer(dir); }, {"tokenizer_config.json", "invalid JSON"});
  expect_error([&] { load_model_tokenizer(dir / "missing.gguf"); }, {"missing.gguf"});
}

// save_hf_tokenizer_files from a model directory copies the tokenizer files there (from a
// GGUF: tests/reference/test_tokenizer_export_reference.cpp, against Hugging Face).
TEST(SentencePiece, ExportCopiesDirectoryTokenizerFiles) {
  const auto dir = test::temp_dir("tokenizer_export_dir");
  const auto model = dir / "model", out = dir / "out" / "final";
  std::filesystem::create_directories(model);
  std::ofstream(model / "tokenizer.model", std::ios::binary) << tiny_model();
  std::ofstream(model / "tokenizer_config.json") << R"({"add_bos_token": false, "chat_template": "T"})";
  std::ofstream(model / "config.json") << "{}";  // not a tokenizer file: not copied
  const auto written = save_hf_tokenizer_files(model, out);
  EXPECT_EQ(written.size(), 2u);
  EXPECT_FALSE(std::filesystem::exists(out / "config.json"));
  const ModelTokenizer a = load_model_tokenizer(model), b = load_model_tokenizer(out);
  EXPECT_EQ(b.tokenizer.fingerprint(), a.tokenizer.fingerprint());
  EXPECT_FALSE(b.add_bos);
  EXPECT_EQ(b.chat_template, "T");
  std::ofstream(dir / "file") << "x";
  expect_error([&] { save_hf_tokenizer_files(model, dir / "file" / "sub"); }, {(dir / "file" / "sub").string()});
  expect_error([&] { save_hf_tokenizer_files(dir / "none.gguf", out); }, {"none.gguf"});
  expect_error([&] { save_hf_tokenizer_files(dir / "file", out); }, {(dir / "file").string()});
}

}  // namespace
}  // namespace temper
