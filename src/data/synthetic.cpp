#include "data/synthetic.h"

#include "core/error.h"
#include "data/dataset.h"
#include "core/rng.h"

namespace temper {
namespace {

const char* kSubjects[] = {"the cat", "a dog", "my friend", "the old man", "a small bird",
                           "the teacher", "our neighbour", "the child", "a fox", "the farmer"};
const char* kVerbs[] = {"sees", "likes", "follows", "finds", "paints", "watches", "feeds", "calls"};
const char* kObjects[] = {"the red ball", "a green tree", "the river", "a quiet house",
                          "the morning sun", "a wooden boat", "the tall hill", "an apple"};
const char* kEndings[] = {".", " today.", " again.", " in the garden.", " every day."};

template <size_t N>
const char* pick(Rng& rng, const char* (&words)[N]) {
  return words[rng.below(N)];
}

std::string sentence(Rng& rng) {
  std::string s = pick(rng, kSubjects);
  s += ' ';
  s += pick(rng, kVerbs);
  s += ' ';
  s += pick(rng, kObjects);
  s += pick(rng, kEndings);
  s[0] = char(s[0] - 'a' + 'A');
  return s;
}

}  // namespace

SyntheticText generate_synthetic_text(const SyntheticTextOptions& o) {
  if (o.num_docs <= 0) fail("data.num_docs must be > 0, got {}", o.num_docs);
  if (o.min_doc_tokens < 2 || o.max_doc_tokens < o.min_doc_tokens)
    fail("data.min_doc_tokens ({}) must be >= 2 and <= data.max_doc_tokens ({})", o.min_doc_tokens,
         o.max_doc_tokens);
  if (o.val_fraction < 0 || o.val_fraction >= 1)
    fail("data.val_fraction must be in [0, 1), got {}", o.val_fraction);
  Rng rng(rng_stream(o.seed, RngPurpose::Data, 0xda7a));
  SyntheticText out;
  for (int64_t d = 0; d < o.num_docs; ++d) {
    const int64_t target_len =
        o.min_doc_tokens + int64_t(rng.below(uint64_t(o.max_doc_tokens - o.min_doc_tokens + 1)));
    std::string text;
    while (int64_t(text.size()) + 1 < target_len) text += (text.empty() ? "" : " ") + sentence(rng);
    text.resize(size_t(target_len - 1));  // leave room for EOS
    std::vector<int32_t> tokens(text.begin(), text.end());
    for (auto& t : tokens) t &= 0xff;
    tokens.push_back(kSyntheticEos);
    // Held out by a draw of its own, so the split does not depend on the document count.
    const bool is_val = rng.uniform() <= o.val_fraction;
    (is_val ? out.val : out.train).push_back(causal_document(std::move(tokens)));
    if (!is_val) out.train_text.push_back(std::move(text));
  }
  if (out.train.empty()) fail("synthetic data: every document went to validation");
  return out;
}

TokenDataset synthetic_token_dataset(const SyntheticTextOptions& options) {
  SyntheticText text = generate_synthetic_text(options);
  TokenDataset d;
  d.vocab_size = kSyntheticMinVocab;
  d.eos_id = kSyntheticEos;
  d.tokenizer_fingerprint = "bytes+eos256";
  d.source_format = "synthetic";
  d.creator_version = TEMPER_VERSION;
  for (bool validation : {false, true})
    for (const Document& doc : validation ? text.val : text.train) {
      std::vector<uint32_t> tokens(doc.tokens.begin(), doc.tokens.end());
      std::vector<uint8_t> mask(tokens.size(), 1);
      mask[0] = 0;  // nothing predicts a document's first token
      d.add(tokens, mask, validation);
    }
  return d;
}

}  // namespace temper
