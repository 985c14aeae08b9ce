// Token choice and streaming text: greedy is the argmax; temperature, top-k and top-p give
// the distribution their definitions say (checked against a per-token recomputation written
// independently of the implementation), and draws over many seeds follow it; the text
// stream never splits a UTF-8 character and skips special tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "generate/sampler.h"
#include "generate/text_stream.h"

namespace temper {
namespace {

std::vector<float> random_logits(int64_t n, uint64_t seed, float spread) {
  RngStream s = rng_stream(seed, RngPurpose::Test, 11);
  std::vector<float> l(n);
  for (int64_t i = 0; i < n; ++i) l[i] = spread * s.normal(uint64_t(i));
  return l;
}

// The expected probability of every token, straight from the definitions, O(V²):
// p_i ∝ exp(l_i / T); token i survives top-k when fewer than k tokens are strictly more
// likely (or equally likely with a lower id); it survives top-p when the renormalised mass
// of the survivors ranked before it is below p.
std::vector<double> expected_probs(const std::vector<float>& l, double T, int64_t k, double p) {
  const size_t V = l.size();
  auto before = [&](size_t j, size_t i) {  // j ranks before i
    return l[j] > l[i] || (l[j] == l[i] && j < i);
  };
  std::vector<double> w(V);
  for (size_t i = 0; i < V; ++i) w[i] = std::exp(double(l[i]) / T);
  std::vector<bool> keep(V, true);
  if (k > 0)
    for (size_t i = 0; i < V; ++i) {
      int64_t ahead = 0;
      for (size_t j = 0; j < V; ++j) ahead += before(j, i);
      keep[i] = ahead < k;
    }
  double z = 0.0;
  for (size_t i = 0; i < V; ++i) z += keep[i] ? w[i] : 0.0;
  std::vector<bool> keep_p = keep;
  if (p < 1.0)
    for (size_t i = 0; i < V; ++i) {
      if (!keep[i]) continue;
      double mass = 0.0;
      for (size_t j = 0; j < V; ++j)
        if (keep[j] && before(j, i)) mass += w[j] / z;
      keep_p[i] = mass < p;
    }
  double z2 = 0.0;
  for (size_t i = 0; i < V; ++i) z2 += keep_p[i] ? w[i] : 0.0;
  std::vector<double> out(V, 0.0);
  for (size_t i = 0; i < V; ++i) out[i] = keep_p[i] ? w[i] / z2 : 0.0;
  return out;
}

std::vector<double> dense(const std::vector<std::pair<int32_t, double>>& d, size_t V) {
  std::vector<double> out(V, 0.0);
  for (auto [t, p] : d) out[t] += p;
  return out;
}

TEST(Sampler, GreedyIsArgmax) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const auto l = random_logits(97, seed, 3.0f);
    const int32_t best = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    EXPECT_EQ(argmax(l), best);
    Sampler s(SamplingOptions{});
    EXPECT_EQ(s.next(l), best);
    // top-k = 1 is greedy too, at any temperature and seed.
    SamplingOptions k1;
    k1.temperature = 2.0f, k1.top_k = 1, k1.seed = seed;
    EXPECT_EQ(Sampler(k1).next(l), best);
  }
  EXPECT_EQ(argmax(std::vector<float>{1.0f, 3.0f, 3.0f}), 1);  // ties: lowest id
  EXPECT_EQ(argmax(std::vector<float>{NAN, -1.0f, NAN}), 1);
  EXPECT_THROW(argmax(std::vector<float>{NAN}), Error);
}

TEST(Sampler, FilteredDistributionsFollowTheDefinitions) {
  struct Case {
    float T;
    int64_t k;
    float p;
  };
  const std::vector<Case> cases = {{1.0f, 0, 1.0f},  {0.7f, 0, 1.0f},   {1.5f, 10, 1.0f},
                                   {1.0f, 0, 0.8f},  {0.8f, 12, 0.6f},  {1.3f, 5, 0.95f},
                                   {1.0f, 0, 0.05f}, {1.0f, 200, 0.9f}};
  for (uint64_t seed = 0; seed < 5; ++seed) {
    auto l = random_logits(64, 100 + seed, 2.0f);
    l[3] = l[9];  // a tie
    for (const Case& c : cases) {
      SamplingOptions o;
      o.temperature = c.T, o.top_k = c.k, o.top_p = c.p;
      const auto got = dense(sampling_distribution(l, o), l.size());
      const auto want = expected_probs(l, c.T, c.k, c.p);
      for (size_t i = 0; i < l.size(); ++i) {
        ASSERT_EQ(got[i] > 0.0, want[i] > 0.0)
            << "token " << i << " kept differently; T=" << c.T << " k=" << c.k << " p=" << c.p;
        EXPECT_NEAR(got[i], want[i], 1e-12) << "token " << i << " T=" << c.T << " k=" << c.k;
      }
    }
  }
}

// 40000 single draws, each from a fresh Sampler with its own seed: every token's frequency
// is within 5 standard deviations of its probability, and filtered-out tokens never occur.
TEST(Sampler, DrawsOverManySeedsFollowTheDistribution) {
  const auto l = random_logits(24, 7, 0.8f);
  SamplingOptions o;
  o.temperature = 0.9f, o.top_k = 10, o.top_p = 0.7f;
  const auto want = expected_probs(l, o.temperature, o.top_k, o.top_p);
  const int n = 40000;
  std::vector<int> count(l.size(), 0);
  for (int s = 0; s < n; ++s) {
    o.seed = uint64_t(s);
    ++count[Sampler(o).next(l)];
  }
  int kept = 0;
  for (size_t i = 0; i < l.size(); ++i) {
    const double f = double(count[i]) / n, sd = std::sqrt(want[i] * (1 - want[i]) / n);
    if (want[i] == 0.0) {
      EXPECT_EQ(count[i], 0) << "token " << i << " was filtered out but drawn";
    } else {
      ++kept;
      EXPECT_NEAR(f, want[i], 5 * sd + 1e-4) << "token " << i;
    }
  }
  EXPECT_GT(kept, 2) << "the case should keep several tokens";
  EXPECT_LT(kept, 10) << "the case should make top-p cut below top-k";
}

TEST(Sampler, OneSeedReproducesASequence) {
  const auto l = random_logits(50, 3, 1.0f);
  SamplingOptions o;
  o.temperature = 1.0f, o.seed = 42;
  Sampler a(o), b(o);
  std::vector<int32_t> x, y;
  for (int i = 0; i < 50; ++i) x.push_back(a.next(l)), y.push_back(b.next(l));
  EXPECT_EQ(x, y);
  EXPECT_GT(std::set<int32_t>(x.begin(), x.end()).size(), 5u) << "draws should vary";
}

TEST(Sampler, BadOptionsAreErrorsNamingTheOption) {
  auto message = [](SamplingOptions o) {
    try {
      Sampler s(o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  SamplingOptions o;
  o.temperature = -1.0f;
  EXPECT_NE(message(o).find("--temperature"), std::string::npos);
  o = {};
  o.top_k = -3;
  EXPECT_NE(message(o).find("--top-k"), std::string::npos);
  o = {};
  o.top_p = 0.0f;
  EXPECT_NE(message(o).find("--top-p"), std::string::npos);
  o.top_p = 1.5f;
  EXPECT_NE(message(o).find("--top-p"), std::string::npos);
}

TEST(TextStream, Utf8CompletePrefix) {
  EXPECT_EQ(utf8_complete_prefix(""), 0u);
  EXPECT_EQ(utf8_complete_prefix("ab"), 2u);
  EXPECT_EQ(utf8_complete_prefix("a\xC3"), 1u);              // é missing its second byte
  EXPECT_EQ(utf8_complete_prefix("a\xC3\xA9"), 3u);
  EXPECT_EQ(utf8_complete_prefix("\xE6\x97"), 0u);           // 日 missing one byte
  EXPECT_EQ(utf8_complete_prefix("x\xF0\x9F\x98"), 1u);      // 😀 missing one byte
  EXPECT_EQ(utf8_complete_prefix("x\xF0\x9F\x98\x80"), 5u);
  EXPECT_EQ(utf8_complete_prefix("x\x80"), 2u);              // stray continuation: invalid
  EXPECT_EQ(utf8_complete_prefix("x\xFF"), 2u);              // never valid
}

// A byte-level tokenizer with one token per byte (so every multi-byte character arrives
// split) and a special end-of-turn token.
Tokenizer byte_tokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer_detail::byte_to_unicode(uint8_t(b))] = b;
  nlohmann::json j;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}};
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["added_tokens"] = nlohmann::json::array(
      {{{"id", 256}, {"content", "<|end|>"}, {"special", true}, {"normalized", false}}});
  return Tokenizer::from_json_string(j.dump(), "byte tokenizer");
}

TEST(TextStream, HoldsBackSplitCharactersAndSkipsSpecialTokens) {
  const Tokenizer tok = byte_tokenizer();
  const std::string text = "héllo 日本 😀!";
  std::vector<int32_t> ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size()) << "one token per byte";
  ids.push_back(256);
  TextStream stream(tok);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string piece = stream.push(ids[i]);
    EXPECT_EQ(tokenizer_detail::utf8_invalid_offset(piece), std::string::npos)
        << "piece after token " << i << " is not valid UTF-8";
    if (i == 1) EXPECT_EQ(piece, "") << "first byte of é must be held back";
    if (i == 2) EXPECT_EQ(piece, "é");
    out += piece;
  }
  out += stream.finish();
  EXPECT_EQ(out, text);

  // A sequence ending inside a character: finish() gives the rest as U+FFFD.
  TextStream cut(tok);
  std::vector<int32_t> part = tok.encode("a日");
  part.pop_back();
  std::string s;
  for (int32_t t : part) s += cut.push(t);
  EXPECT_EQ(s, "a");
  EXPECT_EQ(cut.finish(), "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace temper
