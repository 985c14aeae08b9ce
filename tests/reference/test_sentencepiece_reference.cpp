// SentencePiece-style and GGUF tokenizers against independent implementations, live
// (tests/reference/sentencepiece_reference.py): `sentencepiece` on real Mistral
// tokenizer.model files and edited copies (our tokenizer.model loader), `tokenizers` on the
// tokenizer.json transformers converts from them (legacy Prepend/Replace normalizer and
// Metaspace forms, our tokenizer.json loader), the SmolLM2 GGUF (against tokenizers on the
// tokenizer.json transformers makes from it, with SmolLM2's digit split that transformers
// 4.46 drops put back; transformers' own ids may differ only on strings with digits) and a
// llama-type GGUF written from the Mistral vocab (our GGUF loader). Every string
// of a varied corpus (scripts, emoji, code, whitespace runs, digits, special tokens,
// characters outside the vocab) must give identical ids and decodes; load_model_tokenizer
// must agree with transformers on BOS / EOS / add_bos / chat template; broken files give
// errors naming the file and the key.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/model_tokenizer.h"
#include "data/tokenizer.h"
#include "io/gguf.h"
#include "support/test_util.h"

namespace temper {
namespace {

using json = nlohmann::json;

std::string show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

const json& reference_data() {
  static const json data = [] {
    auto dir = test::temp_dir("sentencepiece_reference");
    std::string out;
    const int rc = test::run_python("reference/sentencepiece_reference.py", {dir.string()}, &out);
    if (rc != 0) throw std::runtime_error("sentencepiece_reference.py failed:\n" + out);
    std::ifstream f(dir / "expected.json");
    return json::parse(f);
  }();
  return data;
}

const json& variant(const std::string& name) {
  for (auto& v : reference_data()["variants"])
    if (v["name"] == name) return v;
  throw std::runtime_error("no reference variant " + name);
}

Tokenizer load(const json& v) {
  const std::string path = v["path"], kind = v["kind"];
  if (kind == "model") return Tokenizer::from_sentencepiece_file(path);
  if (kind == "gguf") return Tokenizer::from_gguf(read_gguf(path, /*read_tensor_data=*/false));
  return Tokenizer::from_file(path);
}

std::optional<int32_t> opt_id(const json& j) {
  if (j.is_null() || j.get<int64_t>() < 0) return std::nullopt;
  return j.get<int32_t>();
}

class SentencePieceReference : public ::testing::TestWithParam<std::string> {};

TEST_P(SentencePieceReference, IdsAndDecodesMatch) {
  const json* vp = nullptr;
  ASSERT_NO_THROW(vp = &variant(GetParam()));
  const json& v = *vp;
  Tokenizer tok = load(v);
  EXPECT_EQ(tok.vocab_size(), v["vocab_size"].get<int32_t>());
  if (v.contains("bos")) EXPECT_EQ(tok.bos_id(), opt_id(v["bos"]));
  if (v.contains("eos")) EXPECT_EQ(tok.eos_id(), opt_id(v["eos"]));
  const bool from_sentencepiece = v.contains("unk");  // decodes compare with sp.decode
  const auto unk = from_sentencepiece ? opt_id(v["unk"]) : std::nullopt;
  std::set<int32_t> added;
  for (auto& a : tok.added_tokens()) added.insert(a.id);
  const tokenizer_detail::Regex number(R"(\p{N})", false);

  int matched = 0, decoded_ok = 0, decodes = 0, roundtrips = 0, total = 0, transformers_differ = 0;
  for (auto& c : v["cases"]) {
    ++total;
    const std::string text = c["text"];
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> ids;
    ASSERT_NO_THROW(ids = tok.encode(text)) << "text: \"" << text << "\"";
    if (ids == expected) ++matched;
    EXPECT_EQ(show(ids), show(expected)) << GetParam() << " text: \"" << text << "\"";
    bool has_added = false, has_unk = false;
    for (int32_t id : expected) {
      has_added = has_added || added.count(id);
      has_unk = has_unk || id == unk;
    }
    // transformers' GGUF tokenizer differs only where SmolLM2's digit split matters.
    if (c.contains("transformers_ids") && c["transformers_ids"] != c["ids"]) {
      ++transformers_differ;
      EXPECT_FALSE(number.find_all(text).empty()) << "text: \"" << text << "\"";
    }
    if (from_sentencepiece) {
      // sentencepiece drops control pieces and writes unknown ones as " ⁇ ".
      if (!has_unk) {
        ++decodes;
        const std::string d = tok.decode(expected, /*skip_special=*/true);
        decoded_ok += d == c["decoded"].get<std::string>();
        EXPECT_EQ(d, c["decoded"].get<std::string>()) << GetParam() << " text: \"" << text << "\"";
      }
    } else {
      ++decodes;
      const std::string d = tok.decode(expected), ds = tok.decode(expected, true);
      decoded_ok += d == c["decoded"].get<std::string>() && ds == c["decoded_skip"].get<std::string>();
      EXPECT_EQ(d, c["decoded"].get<std::string>()) << GetParam() << " text: \"" << text << "\"";
      EXPECT_EQ(ds, c["decoded_skip"].get<std::string>()) << GetParam() << " text: \"" << text << "\"";
    }
    // Encode then decode gives the text back where nothing is lost on the way.
    if (v["roundtrip"].get<bool>() && !has_added && text.find("\u2581") == std::string::npos) {
      ++roundtrips;
      EXPECT_EQ(tok.decode(ids), text) << GetParam();
    }
  }
  EXPECT_GT(total, 250);
  EXPECT_EQ(matched, total);
  EXPECT_GT(decodes, total / 3);
  std::printf("[ %s ] %d/%d identical ids, %d/%d identical decodes, %d round trips\n",
              GetParam().c_str(), matched, total, decoded_ok, decodes, roundtrips);
  if (transformers_differ)
    std::printf("[ %s ] transformers' GGUF tokenizer (no digit split) differs on %d strings, "
                "each with a digit\n", GetParam().c_str(), transformers_differ);
  EXPECT_EQ(load(v).fingerprint(), tok.fingerprint());
}

INSTANTIATE_TEST_SUITE_P(Variants, SentencePieceReference,
                         ::testing::Values("sp_v1", "sp_v3", "sp_v7", "sp_edit_a", "sp_edit_b",
                                           "hf_v1_legacy", "hf_v3_legacy", "hf_v3_metaspace",
                                           "hf_metaspace_split", "hf_metaspace_first",
                                           "gguf_smollm", "hf_smollm_from_gguf", "gguf_mistral_v3"),
                         [](const auto& info) { return info.param; });

TEST(SentencePieceReference, FingerprintsFollowEncodings) {
  ASSERT_NO_THROW(reference_data());
  // The GGUF written from the v3 vocab encodes exactly as the v3 .model: same fingerprint.
  EXPECT_EQ(load(variant("gguf_mistral_v3")).fingerprint(), load(variant("sp_v3")).fingerprint());
  const std::vector<std::string> distinct = {"sp_v1", "sp_v3", "sp_v7", "sp_edit_a", "sp_edit_b",
                                             "hf_v3_legacy", "hf_v3_metaspace", "gguf_smollm"};
  for (size_t i = 0; i < distinct.size(); ++i)
    for (size_t j = i + 1; j < distinct.size(); ++j)
      EXPECT_NE(load(variant(distinct[i])).fingerprint(), load(variant(distinct[j])).fingerprint())
          << distinct[i] << " vs " << distinct[j];
}

TEST(SentencePieceReference, ModelTokenizerOfGguf) {
  ASSERT_NO_THROW(reference_data());
  for (const char* name : {"gguf_smollm", "gguf_mistral_v3"}) {
    const json& v = variant(name);
    ModelTokenizer m = load_model_tokenizer(v["path"].get<std::string>());
    EXPECT_EQ(m.chat_template, v["chat_template"].get<std::string>()) << name;
    EXPECT_EQ(m.bos_id, opt_id(v["bos"])) << name;
    EXPECT_EQ(m.eos_id, opt_id(v["eos"])) << name;
    EXPECT_EQ(m.add_bos, v["add_bos"].get<bool>()) << name;
    EXPECT_EQ(m.tokenizer.fingerprint(), load(v).fingerprint()) << name;
  }
}

TEST(SentencePieceReference, ModelTokenizerOfDirectory) {
  ASSERT_NO_THROW(reference_data());
  for (auto& d : reference_data()["model_dirs"]) {
    const std::string path = d["path"];
    ModelTokenizer m = load_model_tokenizer(path);
    EXPECT_EQ(m.tokenizer.model_kind(), d["kind"] == "model" ? "sentencepiece" : "bpe") << path;
    EXPECT_EQ(m.bos_id, opt_id(d["bos"])) << path;
    EXPECT_EQ(m.eos_id, opt_id(d["eos"])) << path;
    EXPECT_EQ(m.add_bos, d["add_bos"].get<bool>()) << path;
    EXPECT_EQ(m.chat_template, d["chat_template"].get<std::string>()) << path;
    // transformers' ids with add_special_tokens=True: BOS (when add_bos) + the text's ids.
    std::vector<int32_t> ids;
    if (m.add_bos) ids.push_back(*m.bos_id);
    for (int32_t id : m.tokenizer.encode(d["text"].get<std::string>())) ids.push_back(id);
    EXPECT_EQ(show(ids), show(d["ids_with_specials"].get<std::vector<int32_t>>())) << path;
  }
}

void expect_error(const std::function<void()>& fn, std::vector<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning " << parts[0];
  } catch (const Error& e) {
    for (auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(SentencePieceReference, BrokenFilesNameFileAndKey) {
  ASSERT_NO_THROW(reference_data());
  const json& b = reference_data()["broken"];
  const std::string truncated = b["truncated_model"], no_tok = b["no_tokenizer_gguf"];
  expect_error([&] { Tokenizer::from_sentencepiece_file(truncated); }, {truncated, "truncated"});
  expect_error([&] { load_model_tokenizer(no_tok); }, {no_tok, "tokenizer.ggml.model"});
  expect_error([&] { Tokenizer::from_gguf(read_gguf(no_tok, false)); }, {no_tok, "tokenizer.ggml.model"});
}

}  // namespace
}  // namespace temper
