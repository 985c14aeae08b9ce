// Generated text for demos and tests until real datasets are wired in: short English
// sentences from a small grammar, as byte tokens (0..255) with EOS = 256 after each
// document. Deterministic in the seed; a fixed fraction of documents is held out.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"

namespace temper {

constexpr int32_t kSyntheticEos = 256;
constexpr int64_t kSyntheticMinVocab = 257;

struct SyntheticTextOptions {
  uint64_t seed = 1234;
  int64_t num_docs = 2000;
  int64_t min_doc_tokens = 8;
  int64_t max_doc_tokens = 200;
  double val_fraction = 0.05;
};

struct SyntheticText {
  std::vector<Document> train, val;
  std::vector<std::string> train_text;  // the raw text of the training documents
};

SyntheticText generate_synthetic_text(const SyntheticTextOptions& options);

struct TokenDataset;
// The same corpus as an HDF5-ready token dataset (every token after the first of a
// document is a target; vocabulary 257 = bytes + EOS).
TokenDataset synthetic_token_dataset(const SyntheticTextOptions& options);

}  // namespace temper
