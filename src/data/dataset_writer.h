// Writes a token dataset (data/dataset.h) while it is produced, in bounded memory: each
// document's tokens and loss mask are appended to chunked HDF5 datasets as they come, so
// memory holds one buffer of tokens whatever the dataset's size (finish() is given the
// split, one byte per document).
//
// With shard_tokens > 0 the documents go into shards of about that many tokens (a document
// never spans two): OUT's stem + "-00000.h5", "-00001.h5", ... beside OUT, each a complete
// token dataset, and OUT becomes the index naming them, with each shard's documents,
// tokens and size in bytes (read_token_dataset reads the whole as one dataset, in shard
// order). Every file is written under a .tmp name and renamed by finish(), the shards
// before the index, so no final name ever holds an incomplete file.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/h5.h"

namespace temper {

// The attributes every token dataset file carries (docs/architecture.md, "Data").
struct DatasetInfo {
  int64_t vocab_size = 0;
  int64_t eos_id = -1;
  std::string tokenizer_fingerprint, source_format, chat_template, creator_version;
};

class TokenDatasetWriter {
 public:
  // shard_tokens 0: one file, OUT itself.
  TokenDatasetWriter(std::string out, int64_t shard_tokens);
  ~TokenDatasetWriter();  // unless finished: removes the .tmp files
  TokenDatasetWriter(const TokenDatasetWriter&) = delete;
  TokenDatasetWriter& operator=(const TokenDatasetWriter&) = delete;

  // Appends one document; mask[i] = 1 when token i is a training target.
  void add(std::span<const uint32_t> tokens, std::span<const uint8_t> mask);
  uint64_t documents() const { return documents_; }
  // Writes the split (one flag per document added, 1 = validation) and the attributes,
  // then renames every file into place. Returns the files written, the index last.
  std::vector<std::string> finish(std::span<const uint8_t> split, const DatasetInfo& info);

 private:
  struct Shard {
    std::string path;  // final name
    uint64_t documents = 0, tokens = 0, bytes = 0;
  };
  void open_shard();
  // Writes the buffers to the open shard: appended to growing (chunked) datasets, or, when
  // `last` comes before any append, as datasets of the exact size (small files stay small).
  void flush(bool last);
  void close_shard();  // flushes and closes it
  std::string tmp(const Shard& s) const { return s.path + ".tmp"; }

  std::string out_;
  int64_t shard_tokens_;
  std::vector<Shard> shards_;
  h5::Id file_, tokens_set_, mask_set_, offsets_set_;  // the open shard
  std::vector<uint32_t> tokens_;                      // buffered, not yet appended
  std::vector<uint8_t> mask_;
  std::vector<uint64_t> offsets_;                     // ends of buffered documents, in-shard
  uint64_t documents_ = 0;
  bool finished_ = false;
};

}  // namespace temper
