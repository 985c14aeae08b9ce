// Turns documents into micro-batches: packing (documents back to back, attention kept
// inside each; a document that does not fit in what is left of the batch waits for the
// next batch, so no tokens are dropped unless a document is longer than a whole batch)
// or padding (one document per row, cut to the row). Order is a Philox shuffle per epoch,
// so a (seed, epoch, index) position reproduces the stream exactly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/batch.h"

namespace temper {

struct Document {
  std::vector<int32_t> tokens;   // inputs
  std::vector<int32_t> targets;  // same length: next token or -100
};

// Document whose loss covers every next token: targets[i] = tokens[i+1], last = -100.
Document causal_document(std::vector<int32_t> tokens);

struct LoaderPosition {
  uint64_t epoch = 0;
  uint64_t index = 0;  // next document within the epoch's order
};

class DocumentLoader {
 public:
  DocumentLoader(std::vector<Document> docs, uint64_t seed, bool shuffle, bool packing,
                 int32_t pad_id);
  MicroBatch next(int64_t rows, int64_t seq_len);
  // Data parallelism: every rank walks the same global stream and keeps micro-batch i of
  // the next `count` when i % dp_size == dp_rank, so the ranks' shares are disjoint, their
  // union is the one-process stream, and every rank's position stays the same.
  std::vector<MicroBatch> next_share(int64_t count, int dp_size, int dp_rank, int64_t rows,
                                     int64_t seq_len);
  LoaderPosition position() const { return pos_; }
  // Resumes at a saved position; one past this dataset's documents is an error.
  void set_position(LoaderPosition p);
  size_t size() const { return docs_.size(); }

 private:
  void make_order();
  std::vector<Document> docs_;
  std::vector<uint32_t> order_;
  uint64_t seed_;
  bool shuffle_, packing_;
  int32_t pad_id_;
  LoaderPosition pos_;
};

}  // namespace temper
