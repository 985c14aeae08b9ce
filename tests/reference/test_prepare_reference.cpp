// `temper prepare` against Hugging Face transformers (tests/reference/prepare_reference.py):
// for the real SmolLM2 GGUF (its tokenizer and chat template), a SentencePiece model
// directory (Mistral's tokenizer.model with the Llama 2 format) and a small tokenizer.json
// directory, every document of the chat, sharegpt, alpaca and text JSONL files must have
// exactly transformers' ids (a conversation: apply_chat_template(tokenize=True), i.e. the
// encoding of the rendered text) and the loss mask derived from transformers' offsets
// (assistant turns and their end-of-turn marker trained, nothing else).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/prepare.h"
#include "support/test_util.h"

namespace temper {
namespace {

const nlohmann::json& reference_data() {
  static nlohmann::json data = [] {
    auto dir = test::temp_dir("prepare_reference");
    std::string out;
    const int rc = test::run_python("reference/prepare_reference.py", {dir.string()}, &out);
    if (rc != 0) throw std::runtime_error("prepare_reference.py failed:\n" + out);
    std::ifstream f(dir / "expected.json");
    return nlohmann::json::parse(f);
  }();
  return data;
}

std::string show(const std::vector<uint32_t>& v) {
  std::string s;
  for (auto x : v) s += std::to_string(x) + " ";
  return s;
}

TEST(PrepareReference, IdsAndMasksEqualTransformers) {
  const nlohmann::json* data = nullptr;
  ASSERT_NO_THROW(data = &reference_data());
  auto dir = test::temp_dir("prepare_reference_out");
  int cases = 0, docs_checked = 0;
  for (const auto& c : (*data)["cases"]) {
    const std::string name = c["name"];
    PrepareOptions o;
    o.inputs = {c["jsonl"].get<std::string>()};
    o.model = c["model"];
    o.format = c["format"];
    o.out = (dir / (name + ".h5")).string();
    o.val_fraction = 0;
    PrepareStats st;
    ASSERT_NO_THROW(st = prepare_jsonl(o)) << name;
    const TokenDataset d = read_token_dataset(o.out);
    const auto& docs = c["docs"];
    ASSERT_EQ(d.documents(), docs.size()) << name;
    EXPECT_EQ(st.documents, int64_t(docs.size())) << name;
    EXPECT_EQ(d.source_format, c["format"].get<std::string>()) << name;
    EXPECT_EQ(d.eos_id, c["eos"].get<int64_t>()) << name;
    EXPECT_EQ(d.tokenizer_fingerprint, load_model_tokenizer(o.model).tokenizer.fingerprint());
    if (c["format"] != "text") EXPECT_FALSE(d.chat_template.empty()) << name;
    if (name.starts_with("smollm2") && c["format"] != "text") EXPECT_EQ(d.chat_template, "smollm2");
    int64_t trained = 0;
    for (size_t i = 0; i < docs.size(); ++i) {
      const auto ids = docs[i]["ids"].get<std::vector<uint32_t>>();
      const auto mask = docs[i]["mask"].get<std::vector<uint8_t>>();
      const std::vector<uint32_t> got(d.tokens.begin() + int64_t(d.doc_offsets[i]),
                                      d.tokens.begin() + int64_t(d.doc_offsets[i + 1]));
      const std::vector<uint8_t> got_mask(d.loss_mask.begin() + int64_t(d.doc_offsets[i]),
                                          d.loss_mask.begin() + int64_t(d.doc_offsets[i + 1]));
      EXPECT_EQ(show(got), show(ids)) << name << " document " << i;
      EXPECT_EQ(got_mask, mask) << name << " document " << i;
      for (auto m : mask) trained += m;
      ++docs_checked;
    }
    EXPECT_EQ(st.trained_tokens, trained) << name;
    ++cases;
  }
  EXPECT_EQ(cases, 7);
  std::printf("[ prepare ] %d files, %d documents: ids and masks equal transformers'\n", cases,
              docs_checked);
}

}  // namespace
}  // namespace temper
