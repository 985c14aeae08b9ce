// Token datasets in HDF5 (docs/architecture.md, "Data and batches"): `tokens` uint32 [n], `loss_mask` uint8 [n] (1 where
// the token is predicted, i.e. trained on), `doc_offsets` uint64 [docs + 1], `split` uint8
// [docs] (0 train, 1 validation); attributes vocab_size, eos_id, tokenizer_fingerprint,
// source_format, chat_template, creator_version.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset_writer.h"
#include "data/loader.h"

namespace temper {

struct TokenDataset {
  std::vector<uint32_t> tokens;
  std::vector<uint8_t> loss_mask;
  std::vector<uint64_t> doc_offsets = {0};
  std::vector<uint8_t> split;
  int64_t vocab_size = 0;
  int64_t eos_id = -1;
  std::string tokenizer_fingerprint, source_format, chat_template, creator_version;

  // Appends one document; mask[i] = 1 when token i is a training target.
  void add(const std::vector<uint32_t>& doc, const std::vector<uint8_t>& mask, bool validation);
  size_t documents() const { return split.size(); }
  // The documents of one split as loader documents: target[i] = tokens[i+1] when that
  // token is masked in, else -100.
  std::vector<Document> documents_of(bool validation) const;
  DatasetInfo info() const;  // the attributes
};

// Whether documents of this source_format are conversations (alpaca, chat, sharegpt:
// rendered through a chat template), which are never split mid-turn when batched.
bool is_conversation_format(const std::string& source_format);

// Writes to `path` through a temporary file and a rename, so a crash never leaves a
// half-written dataset under the final name; with shard_tokens > 0, as shards and an
// index (data/dataset_writer.h). Returns the files written, the index last.
std::vector<std::string> write_token_dataset(const std::string& path, const TokenDataset& data, int64_t shard_tokens = 0);
// Reads and validates (offsets, split values, ids below vocab_size); every problem is a
// temper::Error naming the file and the dataset or attribute. A JSON Lines file given
// instead is an error that says to run `temper prepare` on it. A shard index reads as the
// concatenation of its shards; a missing or damaged shard is an error naming it.
TokenDataset read_token_dataset(const std::string& path);

// A dataset's documents by split, for training: a sharded dataset's are read from the
// shards when a batch takes them (the index, offsets and splits are checked up front; a
// token id outside the vocabulary is an error when its document is read); one file's
// are read whole. `meta` holds the attributes.
struct DatasetDocuments {
  TokenDataset meta;
  std::shared_ptr<const DocumentSource> train, val;
};
DatasetDocuments open_token_dataset(const std::string& path);

}  // namespace temper
