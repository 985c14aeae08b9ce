// save_hf_tokenizer_files on real GGUF files, checked live against Hugging Face
// (tests/reference/tokenizer_export_reference.py): the SmolLM2 GGUF (gpt2 / smollm) and a
// llama-type GGUF written from Mistral's v3 SentencePiece model. For each, the directory we
// write must
//   (a) give our load_model_tokenizer the same ids, BOS / EOS / add_bos and chat template as
//       the GGUF itself, on a varied corpus (for Mistral, text right after a user-defined
//       piece may differ: the converted form gives it its own dummy prefix, as transformers'
//       conversion does);
//   (b) give tokenizers.Tokenizer.from_file and transformers' AutoTokenizer the same ids as
//       ours, AutoTokenizer the same BOS handling, and apply_chat_template the same text as
//       transformers' own tokenizer built from the GGUF;
// and for Mistral the tokenizer.json must be what transformers' LlamaConverter makes of the
// .model file (merges in the same order). A model directory's files are copied as they are;
// errors name the path.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "data/model_tokenizer.h"
#include "data/tokenizer_export.h"
#include "support/test_util.h"

namespace temper {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct Reference {
  std::string error;
  fs::path dir;
  json inputs, expected;
};

std::string show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// prepare (GGUFs and corpus) -> our export of each GGUF -> check (Hugging Face on the exports).
const Reference& reference() {
  static const Reference r = [] {
    Reference r;
    r.dir = test::temp_dir("tokenizer_export_reference");
    std::string log;
    if (test::run_python("reference/tokenizer_export_reference.py", {"prepare", r.dir.string()}, &log) != 0)
      return r.error = "tokenizer_export_reference.py prepare failed:\n" + log, r;
    r.inputs = json::parse(read_all(r.dir / "inputs.json"));
    for (auto& [name, path] : r.inputs["ggufs"].items())
      save_hf_tokenizer_files(path.get<std::string>(), r.dir / (name + "_hf"));
    if (test::run_python("reference/tokenizer_export_reference.py", {"check", r.dir.string()}, &log) != 0)
      return r.error = "tokenizer_export_reference.py check failed:\n" + log, r;
    r.expected = json::parse(read_all(r.dir / "expected.json"));
    return r;
  }();
  return r;
}

class TokenizerExport : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ASSERT_EQ(reference().error, ""); }
  const json& expected() const { return reference().expected[GetParam()]; }
  fs::path gguf() const { return reference().inputs["ggufs"][GetParam()].get<std::string>(); }
  fs::path out() const { return reference().dir / (GetParam() + "_hf"); }
  std::vector<std::string> cases() const { return reference().inputs["cases"].get<std::vector<std::string>>(); }
};

TEST_P(TokenizerExport, DirectoryGivesTheGgufIds) {
  const ModelTokenizer g = load_model_tokenizer(gguf()), d = load_model_tokenizer(out());
  EXPECT_EQ(d.bos_id, g.bos_id);
  EXPECT_EQ(d.eos_id, g.eos_id);
  EXPECT_EQ(d.add_bos, g.add_bos);
  EXPECT_FALSE(g.chat_template.empty());
  EXPECT_EQ(d.chat_template, g.chat_template);
  EXPECT_EQ(d.tokenizer.vocab_size(), g.tokenizer.vocab_size());
  // Byte-level vocabularies are written as the GGUF loader reads them: same fingerprint.
  if (GetParam() == "smollm") EXPECT_EQ(d.tokenizer.fingerprint(), g.tokenizer.fingerprint());
  std::vector<std::string> user_defined;  // non-special added tokens (SentencePiece user pieces)
  for (auto& a : d.tokenizer.added_tokens())
    if (!a.special) user_defined.push_back(a.content);
  int same = 0, differ = 0;
  for (const std::string& text : cases()) {
    const auto ids = d.tokenizer.encode(text), want = g.tokenizer.encode(text);
    if (ids == want) {
      ++same;
      continue;
    }
    ++differ;
    bool after_user_piece = false;
    for (auto& u : user_defined) after_user_piece = after_user_piece || text.find(u) != std::string::npos;
    EXPECT_TRUE(after_user_piece) << GetParam() << " text \"" << text << "\": " << show(ids)
                                  << " vs the GGUF's " << show(want);
  }
  EXPECT_GT(same, 250);
  EXPECT_LE(differ, 3);
  std::printf("[ %s ] %d strings with the GGUF's ids, %d differ after a user-defined piece\n",
              GetParam().c_str(), same, differ);
}

TEST_P(TokenizerExport, HuggingFaceGivesOurIds) {
  const json& e = expected();
  const ModelTokenizer d = load_model_tokenizer(out());
  const auto texts = cases();
  ASSERT_EQ(e["tokenizers_ids"].size(), texts.size());
  int matched = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto ids = d.tokenizer.encode(texts[i]);
    const auto tk = e["tokenizers_ids"][i].get<std::vector<int32_t>>();
    const auto tf = e["transformers_ids"][i].get<std::vector<int32_t>>();
    matched += ids == tk && ids == tf;
    EXPECT_EQ(show(ids), show(tk)) << GetParam() << " (tokenizers) text \"" << texts[i] << "\"";
    EXPECT_EQ(show(ids), show(tf)) << GetParam() << " (transformers) text \"" << texts[i] << "\"";
    EXPECT_EQ(d.tokenizer.decode(tk), e["tokenizers_decoded"][i].get<std::string>()) << texts[i];
  }
  EXPECT_EQ(matched, int(texts.size()));
  std::printf("[ %s ] %d/%zu strings: tokenizers and transformers (%s) give our ids\n",
              GetParam().c_str(), matched, texts.size(), e["tokenizer_class"].get<std::string>().c_str());
  // BOS / EOS and add_special_tokens=True.
  EXPECT_EQ(e["bos"].is_null() ? std::nullopt : std::optional(e["bos"].get<int32_t>()), d.bos_id);
  EXPECT_EQ(e["eos"].is_null() ? std::nullopt : std::optional(e["eos"].get<int32_t>()), d.eos_id);
  std::vector<int32_t> with = d.tokenizer.encode("Hello world");
  if (d.add_bos) with.insert(with.begin(), *d.bos_id);
  EXPECT_EQ(show(with), show(e["with_specials"].get<std::vector<int32_t>>()));
  // The chat template renders as transformers renders the GGUF's own.
  ASSERT_EQ(e["chat_dir"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_FALSE(e["chat_gguf"][i].get<std::string>().empty());
    EXPECT_EQ(e["chat_dir"][i], e["chat_gguf"][i]) << GetParam() << " conversation " << i;
  }
  if (e.contains("converter_differs"))
    EXPECT_EQ(e["converter_differs"], json::array()) << "parts unlike transformers' LlamaConverter";
}

INSTANTIATE_TEST_SUITE_P(Ggufs, TokenizerExport, ::testing::Values("smollm", "mistral_v3"),
                         [](const auto& info) { return info.param; });

TEST(TokenizerExportFiles, DirectoryFilesAreCopied) {
  ASSERT_EQ(reference().error, "");
  const fs::path from = reference().dir / "smollm_hf", to = reference().dir / "copied" / "final";
  const auto written = save_hf_tokenizer_files(from, to);
  EXPECT_EQ(written.size(), 3u);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_EQ(read_all(to / name), read_all(from / name)) << name;
  EXPECT_EQ(load_model_tokenizer(to).tokenizer.fingerprint(), load_model_tokenizer(from).tokenizer.fingerprint());
  EXPECT_TRUE(save_hf_tokenizer_files(from, from).empty());  // into itself: nothing to do
}

TEST(TokenizerExportFiles, ErrorsNameThePath) {
  ASSERT_EQ(reference().error, "");
  auto expect_error = [](const std::function<void()>& fn, const std::vector<std::string>& parts) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning " << parts[0];
    } catch (const Error& e) {
      for (auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  const fs::path file = reference().dir / "a_file";
  std::ofstream(file) << "x";
  const fs::path smollm = reference().inputs["ggufs"]["smollm"].get<std::string>();
  expect_error([&] { save_hf_tokenizer_files(smollm, file / "out"); }, {(file / "out").string()});
  expect_error([&] { save_hf_tokenizer_files(smollm, file); }, {file.string()});
  const std::string no_tok = reference().inputs["no_tokenizer_gguf"];
  const fs::path never = reference().dir / "never_written";
  expect_error([&] { save_hf_tokenizer_files(no_tok, never); }, {no_tok, "tokenizer.ggml.model"});
  EXPECT_FALSE(fs::exists(never));
}

}  // namespace
}  // namespace temper
