// The KV-cache inference path (generate/cached_decoder) against the training forward
// (Transformer::logits on the whole sequence, no cache): the same logits at every position
// whether tokens arrive as one prefill, one at a time, or in chunks after a prefill; for
// MHA and GQA, tied and untied heads, q/k/v biases and a sliding window shorter than the
// sequence. Then the generation loop: greedy equals re-running the full forward and taking
// the argmax each step; stop tokens, token limits and a full context end it.
#include <gtest/gtest.h>

#include "core/error.h"
#include "generate/generate.h"
#include "model/transformer.h"
#include "support/test_util.h"

namespace temper {
namespace {

// Same fp32 ops, but GEMMs and attention rows of other shapes (one token vs a whole
// sequence) sum in another order: the norm-wise relative error stays at rounding level.
constexpr double kCacheBound = 2e-6;

ModelConfig small_config(int64_t kv_heads, bool tied, bool bias, int64_t window) {
  ModelConfig c;
  c.vocab_size = 61;
  c.hidden_size = 48;
  c.intermediate_size = 80;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 6;
  c.num_key_value_heads = kv_heads;
  c.max_position_embeddings = 64;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  c.sliding_window = window;
  return c;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  Rng rng(rng_stream(seed, RngPurpose::Test, 3));
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng.below(uint64_t(vocab)));
  return t;
}

// One document holding all of `tokens`.
MicroBatch one_document(const std::vector<int32_t>& tokens) {
  MicroBatch b;
  b.rows = 1;
  b.seq_len = int64_t(tokens.size());
  b.ids = tokens;
  b.targets.assign(tokens.size(), kIgnoreIndex);
  for (size_t i = 0; i < tokens.size(); ++i) b.positions.push_back(int32_t(i));
  b.cu_seqlens = {0, int32_t(tokens.size())};
  return b;
}

std::vector<float> rows(const std::vector<float>& all, int64_t begin, int64_t end, int64_t V) {
  return std::vector<float>(all.begin() + begin * V, all.begin() + end * V);
}

struct Model {
  std::unique_ptr<Backend> cpu = make_backend("cpu");
  std::unique_ptr<Transformer> m;
  explicit Model(const ModelConfig& c) {
    m = std::make_unique<Transformer>(c, *cpu, DType::F32);
    // Matrices N(0, 0.2), norm weights 1 + N(0, 0.1), biases N(0, 0.1): every path matters.
    test::randomize_parameters(m->params(), *cpu, 17, 0.2f, 0.1f, 0.1f);
  }
};

// Feeds 23 tokens as: a prefill of 7, eight single tokens, a chunk of 5, three singles;
// every position's logits must match the full forward's.
void check_cache_matches_full_forward(const std::string& name, const ModelConfig& config) {
  Model model(config);
  const int64_t V = config.vocab_size, n = 23;
  const std::vector<int32_t> tokens = random_tokens(n, V, 5);
  const std::vector<float> full = model.m->logits(one_document(tokens));

  CachedDecoder dec(*model.m, 40);
  std::vector<int64_t> cuts = {0, 7};
  for (int i = 0; i < 8; ++i) cuts.push_back(cuts.back() + 1);
  cuts.push_back(cuts.back() + 5);
  for (int i = 0; i < 3; ++i) cuts.push_back(cuts.back() + 1);
  ASSERT_EQ(cuts.back(), n);
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    const int64_t a = cuts[i], b = cuts[i + 1];
    std::span<const int32_t> chunk(tokens.data() + a, size_t(b - a));
    const std::vector<float> got = dec.forward(chunk, /*all_positions=*/true);
    ASSERT_EQ(got.size(), size_t((b - a) * V)) << name;
    for (int64_t t = a; t < b; ++t) {
      const double err = test::rel_error(rows(got, t - a, t - a + 1, V), rows(full, t, t + 1, V));
      EXPECT_LE(err, kCacheBound) << name << ": position " << t << " (chunk " << a << ".." << b << ")";
    }
    EXPECT_EQ(dec.length(), b) << name;
  }
  // A second sequence after clear() starts at position 0 again.
  dec.clear();
  const std::vector<float> last = dec.forward(std::span<const int32_t>(tokens.data(), 9));
  EXPECT_LE(test::rel_error(last, rows(full, 8, 9, V)), kCacheBound) << name << " after clear";
}

TEST(CachedDecoder, GqaTiedMatchesFullForward) {
  check_cache_matches_full_forward("gqa_tied", small_config(2, true, false, 0));
}
TEST(CachedDecoder, MhaUntiedMatchesFullForward) {
  check_cache_matches_full_forward("mha_untied", small_config(6, false, false, 0));
}
TEST(CachedDecoder, MqaWithBiasesMatchesFullForward) {
  check_cache_matches_full_forward("mqa_bias", small_config(1, false, true, 0));
}
TEST(CachedDecoder, SlidingWindowMatchesFullForward) {
  // A window of 4 over 23 tokens: the cache must hide keys older than the window.
  check_cache_matches_full_forward("window", small_config(2, true, false, 4));
}

TEST(CachedDecoder, BadInputIsAnError) {
  Model model(small_config(2, true, false, 0));
  EXPECT_THROW(CachedDecoder(*model.m, 65), Error);  // beyond max_position_embeddings
  CachedDecoder dec(*model.m, 8);
  const std::vector<int32_t> bad = {3, 61};
  try {
    dec.forward(bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
  }
  EXPECT_EQ(dec.length(), 0);
  const std::vector<int32_t> nine = random_tokens(9, 61, 1);
  EXPECT_THROW(dec.forward(nine), Error);  // more than the capacity of 8
}

// Greedy generation equals the naive loop: run the full forward on the whole sequence so
// far and append the argmax of its last row.
TEST(Generate, GreedyEqualsArgmaxOfFullForward) {
  Model model(small_config(2, false, false, 0));
  const int64_t V = 61;
  const std::vector<int32_t> prompt = random_tokens(6, V, 9);
  std::vector<int32_t> seq = prompt;
  for (int step = 0; step < 12; ++step) {
    const std::vector<float> all = model.m->logits(one_document(seq));
    const std::vector<float> last = rows(all, int64_t(seq.size()) - 1, int64_t(seq.size()), V);
    seq.push_back(int32_t(std::max_element(last.begin(), last.end()) - last.begin()));
  }
  const std::vector<int32_t> expected(seq.begin() + 6, seq.end());

  CachedDecoder dec(*model.m, 32);
  GenerateOptions o;
  o.max_new_tokens = 12;
  std::vector<int32_t> streamed;
  GenerateResult r = generate(dec, prompt, o, [&](int32_t t) { streamed.push_back(t); });
  EXPECT_EQ(r.tokens, expected);
  EXPECT_EQ(streamed, expected);
  EXPECT_EQ(r.reason, StopReason::MaxNewTokens);
  EXPECT_EQ(dec.length(), 6 + 11);  // the last token is never run

  // A stop token ends generation right after it is produced (and is returned).
  o.stop_tokens = {expected[4]};
  r = generate(dec, prompt, o);
  const auto first = std::find(expected.begin(), expected.end(), expected[4]);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(expected.begin(), first + 1));
  EXPECT_EQ(r.reason, StopReason::StopToken);

  // The context ends it: capacity 10 holds the prompt and 4 generated tokens, the fifth is
  // chosen from the last logits but never run.
  CachedDecoder small(*model.m, 10);
  o.stop_tokens.clear();
  r = generate(small, prompt, o);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 5));
  EXPECT_EQ(r.reason, StopReason::ContextFull);

  // vocab_limit: only ids below it are picked; the first is the argmax over them.
  o.vocab_limit = 10;
  r = generate(dec, prompt, o);
  ASSERT_FALSE(r.tokens.empty());
  for (int32_t t : r.tokens) EXPECT_LT(t, 10);
  const std::vector<float> row = rows(model.m->logits(one_document(prompt)), 5, 6, V);
  EXPECT_EQ(r.tokens[0], int32_t(std::max_element(row.begin(), row.begin() + 10) - row.begin()));
  o.vocab_limit = 0;

  o.max_new_tokens = 0;
  EXPECT_TRUE(generate(dec, prompt, o).tokens.empty());
  EXPECT_THROW(generate(dec, std::vector<int32_t>{}, o), Error);
}

// A seed reproduces a sampled continuation; another seed gives another one.
TEST(Generate, SeedReproducesSampledTokens) {
  Model model(small_config(2, true, false, 0));
  const std::vector<int32_t> prompt = random_tokens(4, 61, 2);
  CachedDecoder dec(*model.m, 40);
  GenerateOptions o;
  o.max_new_tokens = 30;
  o.sampling.temperature = 1.5f;
  o.sampling.seed = 7;
  const auto a = generate(dec, prompt, o).tokens;
  const auto b = generate(dec, prompt, o).tokens;
  o.sampling.seed = 8;
  const auto c = generate(dec, prompt, o).tokens;
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

}  // namespace
}  // namespace temper
