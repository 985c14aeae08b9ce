// `temper prepare` without an outside reference (ids and masks against transformers are in
// reference/test_prepare_reference.cpp): bad lines name file:line and the reason or are
// skipped and counted, the format is told from the keys, the split is deterministic in the
// seed, text documents get EOS (and BOS when the tokenizer adds one), --max-tokens cuts.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/dataset.h"
#include "data/jsonl_examples.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "support/test_util.h"

namespace temper {
namespace {

namespace fs = std::filesystem;

// A model directory with a byte-level tokenizer (every byte a token, no merges), ChatML
// special tokens and a ChatML chat template.
fs::path byte_model(const std::string& name, bool add_bos) {
  const fs::path dir = test::temp_dir(name);
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer_detail::byte_to_unicode(uint8_t(b))] = b;
  nlohmann::json added = nlohmann::json::array();
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", 256 + i}, {"content", specials[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  nlohmann::json tok = {
      {"version", "1.0"}, {"added_tokens", added}, {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                         {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                   {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                 {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                 {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
                 {"merges", nlohmann::json::array()}}}};
  std::ofstream(dir / "tokenizer.json") << tok.dump();
  nlohmann::json cfg = {
      {"eos_token", "<|im_end|>"}, {"bos_token", "<|endoftext|>"}, {"add_bos_token", add_bos},
      {"chat_template", "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + "
                        "m['content'] + '<|im_end|>\\n'}}{% endfor %}"}};
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump();
  return dir;
}

using test::error_of;

// Found by tests/fuzz/fuzz_jsonl.cpp (regression input regression-number-overflow): a
// number too large for a double made nlohmann::json throw out_of_range, which escaped as
// an exception that was not a temper::Error (only parse errors were caught).
TEST(JsonlExamples, ANumberTooLargeIsInvalidJsonNotACrash) {
  const std::string line = "555000000000000000000000006116787900000000000000e55000000000146116";
  for (const std::string& text : {line, R"({"text": )" + line + "}"}) {
    const std::string e = error_of([&] { guess_jsonl_format(text); });
    EXPECT_NE(e.find("invalid JSON: number overflow"), std::string::npos) << e;
    EXPECT_NE(error_of([&] { parse_example(text, JsonlFormat::Text); }).find("invalid JSON"), std::string::npos);
  }
}

TEST(JsonlExamples, EveryKindOfBadLineHasAReason) {
  struct Case {
    JsonlFormat format;
    const char* line;
    const char* reason;
  };
  const Case cases[] = {
      {JsonlFormat::Text, R"({"text": "a")", "invalid JSON"},
      {JsonlFormat::Text, R"([1, 2])", "expected a JSON object, got array"},
      {JsonlFormat::Text, R"({"txt": "a"})", "missing \"text\""},
      {JsonlFormat::Text, R"({"text": 5})", "\"text\" must be a string, got number"},
      {JsonlFormat::Text, R"({"text": ""})", "\"text\" is empty"},
      {JsonlFormat::Alpaca, R"({"instruction": "a"})", "missing \"output\""},
      {JsonlFormat::Alpaca, R"({"instruction": "a", "input": 3, "output": "b"})",
       "\"input\" must be a string"},
      {JsonlFormat::Chat, R"({"messages": []})", "\"messages\" is empty"},
      {JsonlFormat::Chat, R"({"messages": {"role": "user"}})", "\"messages\" must be an array"},
      {JsonlFormat::Chat, R"({"messages": [{"role": "robot", "content": "x"}]})",
       "messages[0]: unknown role 'robot'"},
      {JsonlFormat::Chat, R"({"messages": [{"role": "user", "content": null}]})",
       "messages[0]: \"content\" must be a string, got null"},
      {JsonlFormat::Chat, R"({"messages": [{"role": "user", "content": "hi"}]})",
       "no assistant turn"},
      {JsonlFormat::Chat, R"({"messages": ["hi"]})", "messages[0]: expected an object"},
      {JsonlFormat::ShareGPT, R"({"conversations": [{"from": "human", "value": "a"},
        {"from": "bot", "value": "b"}]})", "conversations[1]: unknown from 'bot'"},
  };
  for (const Case& c : cases) {
    const std::string e = error_of([&] { parse_example(c.line, c.format); });
    EXPECT_NE(e.find(c.reason), std::string::npos) << c.line << " -> " << e;
  }
  // Good lines of each format, and their conversations.
  Example a = parse_example(R"({"instruction": "Sum", "input": "1 2", "output": "3"})",
                            JsonlFormat::Alpaca);
  ASSERT_EQ(a.messages.size(), 2u);
  EXPECT_EQ(a.messages[0].content, "Sum\n\n1 2");
  EXPECT_EQ(a.messages[1].role, "assistant");
  Example s = parse_example(R"({"conversations": [{"from": "system", "value": "s"},
      {"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}], "id": 1})",
                            JsonlFormat::ShareGPT);
  ASSERT_EQ(s.messages.size(), 3u);
  EXPECT_EQ(s.messages[1].role, "user");
  EXPECT_EQ(s.messages[2].role, "assistant");
  EXPECT_EQ(guess_jsonl_format(R"({"messages": []})"), JsonlFormat::Chat);
  EXPECT_EQ(guess_jsonl_format(R"({"conversations": []})"), JsonlFormat::ShareGPT);
  EXPECT_EQ(guess_jsonl_format(R"({"instruction": "", "output": ""})"), JsonlFormat::Alpaca);
  EXPECT_EQ(guess_jsonl_format(R"({"text": ""})"), JsonlFormat::Text);
  EXPECT_NE(error_of([] { guess_jsonl_format(R"({"prompt": ""})"); }).find("--format"),
            std::string::npos);
}

TEST(Prepare, BadLinesStopWithFileAndLineOrAreSkippedAndCounted) {
  const fs::path model = byte_model("prepare_bad_model", false);
  const fs::path dir = test::temp_dir("prepare_bad");
  const std::string jsonl = (dir / "chat.jsonl").string();
  std::ofstream(jsonl) << R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})"
                       << "\n\n"  // a blank line: ignored, but counted for line numbers
                       << R"({"messages": [{"role": "user", "content": "hi"})" << "\n"
                       << R"({"messages": [{"role": "wizard", "content": "x"}]})" << "\n"
                       << R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})"
                       << "\n";
  PrepareOptions o;
  o.inputs = {jsonl};
  o.model = model.string();
  o.out = (dir / "out.h5").string();
  std::string e = error_of([&] { prepare_jsonl(o); });
  EXPECT_NE(e.find(jsonl + ":3: invalid JSON"), std::string::npos) << e;
  EXPECT_NE(e.find("--skip-bad"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(o.out));

  o.skip_bad = true;
  PrepareStats st = prepare_jsonl(o);
  EXPECT_EQ(st.bad_lines, 2);
  EXPECT_EQ(st.documents, 2);
  EXPECT_EQ(st.lines, 4);
  EXPECT_EQ(st.format, "chat");
  EXPECT_EQ(st.chat_template, "chatml");
  EXPECT_NE(st.first_bad.find(jsonl + ":3:"), std::string::npos) << st.first_bad;
  EXPECT_EQ(read_token_dataset(o.out).documents(), 2u);

  // A model without a recognisable template: the error names it and the option.
  o.chat_template = "";
  std::ofstream(model / "tokenizer_config.json") << R"({"eos_token": "<|im_end|>",
      "chat_template": "{{ messages }}"})";
  e = error_of([&] { prepare_jsonl(o); });
  EXPECT_NE(e.find(model.string()), std::string::npos) << e;
  EXPECT_NE(e.find("--chat-template"), std::string::npos) << e;
  o.chat_template = "qwen2";  // by name instead
  EXPECT_EQ(prepare_jsonl(o).chat_template, "qwen2");

  o.inputs = {(dir / "missing.jsonl").string()};
  e = error_of([&] { prepare_jsonl(o); });
  EXPECT_NE(e.find("missing.jsonl"), std::string::npos) << e;
}

// A line longer than --max-line-bytes is a bad line named by file:line, refused before it
// is read whole: a 10 GB line (a sparse file without a newline) fails at the default
// 256 MiB limit; with --skip-bad a long line is counted and the next line still read.
TEST(Prepare, ALineLongerThanTheLimitIsRefusedBeforeItIsReadWhole) {
  const fs::path model = byte_model("prepare_long_model", false);
  const fs::path dir = test::temp_dir("prepare_long");
  const std::string jsonl = (dir / "long.jsonl").string();
  std::ofstream(jsonl) << R"({"text": "short"})" << "\n{\"text\": \"" << std::string(3000, 'x')
                       << "\"}\n" << R"({"text": "after"})" << "\n";
  PrepareOptions o;
  o.inputs = {jsonl};
  o.model = model.string();
  o.out = (dir / "out.h5").string();
  o.val_fraction = 0;
  o.max_line_bytes = 1000;
  std::string e = error_of([&] { prepare_jsonl(o); });
  EXPECT_NE(e.find(jsonl + ":2: a line longer than 1000 bytes (--max-line-bytes"), std::string::npos) << e;
  o.skip_bad = true;
  const PrepareStats st = prepare_jsonl(o);
  EXPECT_EQ(st.bad_lines, 1);
  EXPECT_EQ(st.documents, 2);
  o.max_line_bytes = 4000;  // raised: the line is a document
  EXPECT_EQ(prepare_jsonl(o).documents, 3);

  const std::string huge = (dir / "huge.jsonl").string();
  { std::ofstream(huge) << "{\"text\": \""; }
  fs::resize_file(huge, uint64_t(10) << 30);  // 10 GiB of zero bytes, no newline, sparse
  PrepareOptions h;
  h.inputs = {huge};
  h.model = model.string();
  h.out = (dir / "huge.h5").string();
  e = error_of([&] { prepare_jsonl(h); });
  EXPECT_NE(e.find(huge + ":1: a line longer than 268435456 bytes"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(h.out));
}

TEST(Prepare, TextDocumentsEndWithEosAndStartWithBosWhenTheTokenizerAddsOne) {
  const fs::path dir = test::temp_dir("prepare_text");
  const std::string jsonl = (dir / "text.jsonl").string();
  std::ofstream(jsonl) << R"({"text": "abc"})" << "\n" << R"({"text": "hello world"})" << "\n";
  for (bool bos : {false, true}) {
    const fs::path model = byte_model(bos ? "prepare_text_bos" : "prepare_text_nobos", bos);
    const Tokenizer tok = Tokenizer::from_file(model / "tokenizer.json");
    PrepareOptions o;
    o.inputs = {jsonl};
    o.model = model.string();
    o.out = (dir / (bos ? "bos.h5" : "nobos.h5")).string();
    o.val_fraction = 0;
    PrepareStats st = prepare_jsonl(o);
    EXPECT_EQ(st.format, "text");  // from the keys
    const TokenDataset d = read_token_dataset(o.out);
    ASSERT_EQ(d.documents(), 2u);
    std::vector<uint32_t> want;
    if (bos) want.push_back(uint32_t(*tok.token_to_id("<|endoftext|>")));
    for (int32_t id : tok.encode("abc")) want.push_back(uint32_t(id));
    want.push_back(uint32_t(*tok.token_to_id("<|im_end|>")));
    EXPECT_EQ(std::vector<uint32_t>(d.tokens.begin(), d.tokens.begin() + int64_t(d.doc_offsets[1])), want);
    EXPECT_EQ(d.eos_id, *tok.token_to_id("<|im_end|>"));
    EXPECT_EQ(d.tokenizer_fingerprint, tok.fingerprint());
    EXPECT_EQ(d.source_format, "text");
    EXPECT_EQ(d.chat_template, "");
    // Every token but a document's first is trained.
    for (size_t i = 0; i < d.tokens.size(); ++i) {
      const bool first = std::find(d.doc_offsets.begin(), d.doc_offsets.end(), i) != d.doc_offsets.end();
      EXPECT_EQ(d.loss_mask[i], first ? 0 : 1) << i;
    }
    EXPECT_EQ(st.trained_tokens, int64_t(d.tokens.size()) - 2);
  }
}

// --max-tokens: text documents are cut to it; conversations longer than it are left out
// (cut, a reply would lose its end or all of it), counted. The split is a function of the
// seed.
TEST(Prepare, SplitIsDeterministicInTheSeedAndMaxTokensCutsTextDropsConversations) {
  const fs::path model = byte_model("prepare_split_model", false);
  const fs::path dir = test::temp_dir("prepare_split");
  const std::string alpaca = (dir / "alpaca.jsonl").string(), text = (dir / "text.jsonl").string();
  {
    std::ofstream f(alpaca), t(text);
    for (int i = 0; i < 200; ++i) {
      f << nlohmann::json({{"instruction", "Count to " + std::to_string(i)}, {"input", ""},
                           {"output", std::string(size_t(i % 50), 'x')}}).dump() << "\n";
      t << nlohmann::json({{"text", "Count to " + std::string(size_t(i % 80), 'y')}}).dump() << "\n";
    }
  }
  // Lengths without a cut, to know which documents --max-tokens 60 must cut or drop.
  auto lengths_of = [&](const std::string& input) {
    PrepareOptions full;
    full.inputs = {input};
    full.model = model.string();
    full.out = input + ".full.h5";
    prepare_jsonl(full);
    const TokenDataset d = read_token_dataset(full.out);
    std::vector<uint64_t> n;
    for (size_t i = 0; i + 1 < d.doc_offsets.size(); ++i) n.push_back(d.doc_offsets[i + 1] - d.doc_offsets[i]);
    return n;
  };
  auto prepared = [&](const std::string& input, uint64_t seed, const std::string& name, PrepareStats* st) {
    PrepareOptions o;
    o.inputs = {input};
    o.model = model.string();
    o.out = (dir / name).string();
    o.seed = seed;
    o.val_fraction = 0.1;
    o.max_tokens = 60;
    *st = prepare_jsonl(o);
    return read_token_dataset(o.out);
  };
  const std::vector<uint64_t> chat_n = lengths_of(alpaca), text_n = lengths_of(text);
  std::vector<uint64_t> kept;  // the conversations of at most 60 tokens, in order
  for (uint64_t n : chat_n)
    if (n <= 60) kept.push_back(n);
  ASSERT_GT(chat_n.size() - kept.size(), 50u);
  const int64_t cut = std::count_if(text_n.begin(), text_n.end(), [](uint64_t n) { return n > 60; });
  ASSERT_GT(cut, 30);

  std::vector<std::vector<uint8_t>> splits;
  for (const auto& [seed, name] : {std::pair{1, "a.h5"}, std::pair{1, "b.h5"}, std::pair{2, "c.h5"}}) {
    PrepareStats st;
    const TokenDataset d = prepared(alpaca, uint64_t(seed), name, &st);
    EXPECT_EQ(st.format, "alpaca");
    EXPECT_EQ(st.truncated, 0);
    EXPECT_EQ(st.dropped_long, int64_t(chat_n.size() - kept.size()));
    ASSERT_EQ(d.documents(), kept.size());
    EXPECT_EQ(st.validation_documents, int64_t(std::llround(double(kept.size()) * 0.1)));
    for (size_t i = 0; i < kept.size(); ++i)
      EXPECT_EQ(d.doc_offsets[i + 1] - d.doc_offsets[i], kept[i]) << i;
    splits.push_back(d.split);
  }
  EXPECT_EQ(splits[0], splits[1]);
  EXPECT_NE(splits[0], splits[2]);

  PrepareStats st;
  const TokenDataset t = prepared(text, 1, "text.h5", &st);
  EXPECT_EQ(st.truncated, cut);
  EXPECT_EQ(st.dropped_long, 0);
  ASSERT_EQ(t.documents(), text_n.size());
  for (size_t i = 0; i < text_n.size(); ++i)
    EXPECT_EQ(t.doc_offsets[i + 1] - t.doc_offsets[i], std::min<uint64_t>(text_n[i], 60)) << i;
}

}  // namespace
}  // namespace temper
