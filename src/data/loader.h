// Turns documents into micro-batches: packing (documents back to back, attention kept
// inside each; a document that does not fit in what is left of the batch waits for the
// next batch, so no tokens are dropped unless a document is longer than a whole batch)
// or padding (one document per row, cut to the row). With `whole_documents` (chat data) a
// packed document is never split over two rows either: one that does not fit in what is
// left of the row starts the next row (the caller keeps documents longer than a row out).
// Order is a Philox shuffle per epoch, so a (seed, epoch, index) position reproduces the
// stream exactly.
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
                 int32_t pad_id, bool whole_documents = false);
  MicroBatch next(int64_t rows, int64_t seq_len);
  // How many micro-batches one pass over the documents makes (in epoch 0's order; later
  // epochs may differ by a batch or so); the loader's position does not move.
  int64_t batches_per_epoch(int64_t rows, int64_t seq_len) const;
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
  std::vector<uint32_t> order_for(uint64_t epoch) const;
  // Puts `d` into `b` as the mode says; false (nothing placed) when it waits for the next
  // batch.
  bool place(BatchBuilder& b, const Document& d, int64_t seq_len) const;
  std::vector<Document> docs_;
  std::vector<uint32_t> order_;
  uint64_t seed_;
  bool shuffle_, packing_, whole_documents_;
  int32_t pad_id_;
  LoaderPosition pos_;
};

}  // namespace temper
