// Byte-level BPE tokenizer (data/tokenizer.h): the byte table, UTF-8 helpers, split
// behaviors, the merge order, added tokens, and load errors that name file and field.
// Exact agreement with Hugging Face `tokenizers` is tests/reference/test_tokenizer_reference.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizer.h"
#include "support/test_util.h"

namespace temper {
namespace {

using json = nlohmann::json;
using namespace tokenizer_detail;

// Vocab: the 256 byte characters (id = byte value) plus ll, he, hell, hello; one special
// added token; GPT-2 regex via ByteLevel.
json tiny_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_to_unicode(uint8_t(b))] = b;
  vocab["ll"] = 256, vocab["he"] = 257, vocab["hell"] = 258, vocab["hello"] = 259;
  json j;
  j["version"] = "1.0";
  j["normalizer"] = nullptr;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"dropout", nullptr},
                {"merges", json::array({json::array({"l", "l"}), "h e", json::array({"he", "ll"}),
                                        json::array({"hell", "o"})})}};
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["added_tokens"] = json::array({{{"id", 260}, {"content", "<|eot|>"}, {"special", true},
                                    {"normalized", false}}});
  return j;
}

std::string write_json(const std::string& name, const std::string& text) {
  auto path = test::temp_dir("tokenizer_" + name) / "tokenizer.json";
  std::ofstream(path) << text;
  return path.string();
}

// Loading `text` fails with a message containing the file path and every `parts` string.
void expect_load_error(const std::string& name, const std::string& text,
                       std::vector<std::string> parts) {
  const std::string path = write_json(name, text);
  try {
    Tokenizer::from_file(path);
    FAIL() << name << ": expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << name << ": " << msg;
    for (auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << name << ": " << msg;
  }
}

TEST(Tokenizer, ByteTable) {
  EXPECT_EQ(byte_to_unicode(' '), "Ġ");
  EXPECT_EQ(byte_to_unicode('\n'), "Ċ");
  EXPECT_EQ(byte_to_unicode('\t'), "ĉ");
  EXPECT_EQ(byte_to_unicode(0), "Ā");
  EXPECT_EQ(byte_to_unicode('a'), "a");
  EXPECT_EQ(byte_to_unicode(0xAD), "Ń");  // the 68th remapped byte: U+0100 + 67
  for (int b = 0; b < 256; ++b) {
    const std::string& s = byte_to_unicode(uint8_t(b));
    size_t i = 0;
    EXPECT_EQ(unicode_to_byte(utf8_next(s, i)), b);
    EXPECT_EQ(i, s.size());
  }
  EXPECT_EQ(unicode_to_byte(' '), -1);
  EXPECT_EQ(unicode_to_byte(0x144), -1);
}

TEST(Tokenizer, Utf8) {
  EXPECT_EQ(utf8_invalid_offset("abc Größe 😀"), std::string_view::npos);
  EXPECT_EQ(utf8_invalid_offset("ab\xC3"), 2u);           // truncated
  EXPECT_EQ(utf8_invalid_offset("\xC0\x80"), 0u);         // overlong
  EXPECT_EQ(utf8_invalid_offset("x\xED\xA0\x80"), 1u);    // surrogate
  EXPECT_EQ(utf8_invalid_offset("\xF4\x90\x80\x80"), 0u); // above U+10FFFF
  // Maximal invalid subparts become one U+FFFD each (Rust's from_utf8_lossy).
  EXPECT_EQ(utf8_lossy("a\xF0\x9F\x98"), "a\uFFFD");
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98\x80\x80"), "😀\uFFFD");
  EXPECT_EQ(utf8_lossy("\xE0\x80\x80"), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(utf8_lossy("\xFFok"), "\uFFFDok");
}

TEST(Tokenizer, RegexIsUnicodeAware) {
  // \s covers Unicode White_Space as Oniguruma's does (NEL, NBSP, ideographic space, LS).
  Regex ws(R"(\s+)", false);
  auto m = ws.find_all("a\u0085\u00a0\u3000\u2028b");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], std::make_pair(size_t(1), size_t(1 + 2 + 2 + 3 + 3)));
  Regex letters(R"(\p{L}+)", false);
  EXPECT_EQ(letters.find_all("Größe 我们 Ёлка").size(), 3u);
  Regex literal("a.b", true);
  EXPECT_EQ(literal.find_all("axb a.b").size(), 1u);
  EXPECT_THROW(Regex("(unclosed", false), Error);
}

TEST(Tokenizer, SplitBehaviors) {
  // tokenizers' documented example: "the-final--countdown" split on "-".
  const std::string s = "the-final--countdown";
  Regex dash("-", true);
  auto pieces = [&](SplitBehavior b, bool invert = false) {
    std::vector<std::string> out;
    for (auto [x, y] : split_ranges(s, dash, b, invert)) out.push_back(s.substr(x, y - x));
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(SplitBehavior::Removed), (V{"the", "final", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::Isolated), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::MergedWithPrevious), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::MergedWithNext), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::Contiguous), (V{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::Removed, true), (V{"-", "-", "-"}));
}

TEST(Tokenizer, MergeOrderLowestRankThenLeftmost) {
  MergeMap merges;
  merges[merge_key(1, 1)] = {0, 10};   // a a -> A (rank 0)
  merges[merge_key(10, 2)] = {1, 11};  // A b -> X
  merges[merge_key(1, 2)] = {2, 12};   // a b -> Y (never reached for "aab")
  std::vector<int32_t> ids{1, 1, 2};
  bpe_merge(ids, merges);
  EXPECT_EQ(ids, (std::vector<int32_t>{11}));
  ids = {1, 1, 1};  // ties go left: (a a) a
  bpe_merge(ids, merges);
  EXPECT_EQ(ids, (std::vector<int32_t>{10, 1}));
  ids = {7};
  bpe_merge(ids, merges);
  EXPECT_EQ(ids, (std::vector<int32_t>{7}));
}

TEST(Tokenizer, EncodeDecodeTiny) {
  Tokenizer tok = Tokenizer::from_json_string(tiny_json().dump(), "tiny");
  EXPECT_EQ(tok.vocab_size(), 261);
  EXPECT_EQ(tok.encode("hello hello<|eot|>"), (std::vector<int32_t>{259, ' ', 259, 260}));
  EXPECT_EQ(tok.encode("hell"), (std::vector<int32_t>{258}));
  EXPECT_EQ(tok.encode(""), (std::vector<int32_t>{}));
  EXPECT_EQ(tok.encode("<|eot|><|eot"), (std::vector<int32_t>{260, '<', '|', 'e', 'o', 't'}));
  const std::string text = "héllo\twörld 😀 <|eot|>\n\n  x";
  const auto ids = tok.encode(text);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.decode(tok.encode("a<|eot|>b"), /*skip_special=*/true), "ab");
  EXPECT_TRUE(tok.is_special(260));
  EXPECT_FALSE(tok.is_special(259));
  EXPECT_EQ(tok.id_to_token(32), "Ġ");
  EXPECT_EQ(tok.token_to_id("hello"), 259);
  EXPECT_EQ(tok.token_to_id("<|eot|>"), 260);
  EXPECT_FALSE(tok.token_to_id("nope").has_value());
  EXPECT_FALSE(tok.bos_id().has_value());
  // A split emoji decodes lossily; the raw bytes are kept by decode_bytes.
  const auto emoji = tok.encode("😀");
  ASSERT_EQ(emoji.size(), 4u);
  EXPECT_EQ(tok.decode(std::vector<int32_t>(emoji.begin(), emoji.begin() + 2)), "\uFFFD");
  EXPECT_EQ(tok.decode_bytes(std::vector<int32_t>(emoji.begin(), emoji.begin() + 2)), "\xF0\x9F");
  EXPECT_THROW(tok.decode(std::vector<int32_t>{999}), Error);
  EXPECT_THROW(tok.encode("bad \xC3("), Error);
}

TEST(Tokenizer, AddedTokenOptions) {
  json j = tiny_json();
  j["added_tokens"].push_back({{"id", 261}, {"content", "<s>"}, {"special", true},
                               {"lstrip", true}, {"rstrip", true}});
  j["added_tokens"].push_back({{"id", 262}, {"content", "ab"}, {"single_word", true}});
  Tokenizer tok = Tokenizer::from_json_string(j.dump(), "opts");
  EXPECT_EQ(tok.encode("x  <s>  y"), (std::vector<int32_t>{'x', 261, 'y'}));
  EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{262}));
  EXPECT_EQ(tok.encode("cab"), (std::vector<int32_t>{'c', 'a', 'b'}));
}

TEST(Tokenizer, BosEosFromTemplate) {
  json j = tiny_json();
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<|eot|>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"special_tokens", {{"<|eot|>", {{"id", "<|eot|>"}, {"ids", {260}}, {"tokens", {"<|eot|>"}}}}}}};
  Tokenizer tok = Tokenizer::from_json_string(j.dump(), "template");
  EXPECT_EQ(tok.bos_id(), 260);
  EXPECT_FALSE(tok.eos_id().has_value());
}

TEST(Tokenizer, Fingerprint) {
  const std::string a = Tokenizer::from_json_string(tiny_json().dump()).fingerprint();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a, Tokenizer::from_json_string(tiny_json().dump(2)).fingerprint());
  json j = tiny_json();
  j["model"]["merges"].erase(j["model"]["merges"].end() - 1);
  EXPECT_NE(a, Tokenizer::from_json_string(j.dump()).fingerprint());
  j = tiny_json();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_NE(a, Tokenizer::from_json_string(j.dump()).fingerprint());
  j = tiny_json();
  j["added_tokens"][0]["content"] = "<|end|>";
  EXPECT_NE(a, Tokenizer::from_json_string(j.dump()).fingerprint());
}

TEST(Tokenizer, LoadErrorsNameFileAndField) {
  expect_load_error("not_json", "{ nope", {"invalid JSON"});
  expect_load_error("missing_file_ok", "[]", {"top level"});
  json j = tiny_json();
  j["model"]["type"] = "Unigram";
  expect_load_error("unigram", j.dump(), {"model.type", "Unigram"});
  j = tiny_json();
  j["model"].erase("vocab");
  expect_load_error("no_vocab", j.dump(), {"model.vocab", "missing"});
  j = tiny_json();
  j["model"]["vocab"]["zz"] = "seven";
  expect_load_error("bad_id", j.dump(), {"model.vocab[\"zz\"]"});
  j = tiny_json();
  j["model"]["merges"][1] = "h";
  expect_load_error("bad_merge", j.dump(), {"model.merges[1]"});
  j = tiny_json();
  j["model"]["merges"].push_back(json::array({"hello", "hello"}));
  expect_load_error("merge_not_in_vocab", j.dump(), {"model.merges[4]", "not in model.vocab"});
  j = tiny_json();
  j["model"]["byte_fallback"] = "yes";
  expect_load_error("byte_fallback", j.dump(), {"model.byte_fallback"});
  j = tiny_json();
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  expect_load_error("bert", j.dump(), {"pre_tokenizer.type", "BertPreTokenizer"});
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_load_error("metaspace", j.dump(), {"pre_tokenizer.replacement", "missing"});
  j = tiny_json();
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", json::array({{{"type", "Split"},
                                                        {"pattern", {{"Regex", "(oops"}}},
                                                        {"behavior", "Isolated"}}})}};
  expect_load_error("bad_regex", j.dump(), {"pre_tokenizer.pretokenizers[0].pattern"});
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "x";
  expect_load_error("no_byte_level", j.dump(), {"no ByteLevel"});
  j = tiny_json();
  j["added_tokens"][0]["id"] = -3;
  expect_load_error("added_id", j.dump(), {"added_tokens[0].id"});
  j = tiny_json();
  j["decoder"] = {{"type", "CTC"}};
  expect_load_error("decoder", j.dump(), {"decoder.type", "CTC"});
  try {
    Tokenizer::from_file("/nonexistent/tokenizer.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace temper
