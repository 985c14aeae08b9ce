// Byte-level BPE against Hugging Face `tokenizers` (tests/reference/tokenizer_reference.py):
// the script trains three small tokenizers (GPT-2 regex via ByteLevel; a Llama-3-style
// Split(Regex) + ByteLevel with ignore_merges and a BOS template; SmolLM-style Digits +
// ByteLevel(add_prefix_space) with legacy "a b" merges and a non-special added token),
// saves each tokenizer.json and the ids `tokenizers` gives for a varied corpus (many
// scripts, emoji ZWJ sequences, code, whitespace runs, digit runs, contractions, special
// tokens inside text, random mixes). Our Tokenizer must give identical ids, decode them to
// the same text as `tokenizers`, and round-trip every string where no prefix space is added.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "support/test_util.h"

namespace temper {
namespace {

std::string show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

nlohmann::json reference_data() {
  static nlohmann::json data = [] {
    auto dir = test::temp_dir("tokenizer_reference");
    std::string out;
    const int rc = test::run_python("reference/tokenizer_reference.py", {dir.string()}, &out);
    if (rc != 0) throw std::runtime_error("tokenizer_reference.py failed:\n" + out);
    std::ifstream f(dir / "expected.json");
    return nlohmann::json::parse(f);
  }();
  return data;
}

class TokenizerReference : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerReference, MatchesHuggingFaceTokenizers) {
  nlohmann::json data;
  ASSERT_NO_THROW(data = reference_data());
  const nlohmann::json* variant = nullptr;
  for (auto& v : data["variants"])
    if (v["name"] == GetParam()) variant = &v;
  ASSERT_NE(variant, nullptr);

  Tokenizer tok = Tokenizer::from_file((*variant)["tokenizer"].get<std::string>());
  EXPECT_EQ(tok.vocab_size(), (*variant)["vocab_size"].get<int32_t>());
  if ((*variant)["bos"].is_null()) {
    EXPECT_FALSE(tok.bos_id().has_value());
  } else {
    ASSERT_TRUE(tok.bos_id().has_value());
    EXPECT_EQ(*tok.bos_id(), (*variant)["bos"].get<int32_t>());
  }
  const bool prefix_space = GetParam() == "smollm";

  int matched = 0, decoded_ok = 0, total = 0;
  for (auto& c : (*variant)["cases"]) {
    ++total;
    const std::string text = c["text"];
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> ids;
    ASSERT_NO_THROW(ids = tok.encode(text)) << "text: \"" << text << "\"";
    if (ids == expected) ++matched;
    EXPECT_EQ(show(ids), show(expected)) << "text: \"" << text << "\"";
    const std::string decoded = tok.decode(ids);
    if (decoded == c["decoded"].get<std::string>()) ++decoded_ok;
    EXPECT_EQ(decoded, c["decoded"].get<std::string>()) << "text: \"" << text << "\"";
    if (!prefix_space) EXPECT_EQ(decoded, text);
  }
  EXPECT_GT(total, 200);
  std::printf("[ %s ] %d/%d strings give identical ids, %d/%d identical decodes\n",
              GetParam().c_str(), matched, total, decoded_ok, total);

  // The same file loads to the same fingerprint; the variants differ.
  EXPECT_EQ(Tokenizer::from_file((*variant)["tokenizer"].get<std::string>()).fingerprint(),
            tok.fingerprint());
  for (auto& v : data["variants"])
    if (v["name"] != GetParam())
      EXPECT_NE(Tokenizer::from_file(v["tokenizer"].get<std::string>()).fingerprint(),
                tok.fingerprint());
}

INSTANTIATE_TEST_SUITE_P(Variants, TokenizerReference,
                         ::testing::Values("gpt2", "llama3", "smollm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace temper
