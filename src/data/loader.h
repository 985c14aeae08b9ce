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
#include <memory>
#include <vector>

#include "data/batch.h"

namespace temper {

struct Document {
  std::vector<int32_t> tokens;   // inputs
  std::vector<int32_t> targets;  // same length: next token or -100
};

// Document whose loss covers every next token: targets[i] = tokens[i+1], last = -100.
Document causal_document(std::vector<int32_t> tokens);

// Where a loader's documents come from: every document's length up front, its tokens only
// when a batch takes it. A sharded dataset reads them from disk then, so a data-parallel
// rank reads only the documents of its own micro-batches.
class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  virtual size_t size() const = 0;
  virtual int64_t length(size_t i) const = 0;
  // Document i: a reference into the source, or `scratch` filled with it.
  virtual const Document& get(size_t i, Document& scratch) const = 0;
};

// Documents held in memory.
class InMemoryDocuments final : public DocumentSource {
 public:
  explicit InMemoryDocuments(std::vector<Document> docs) : docs_(std::move(docs)) {}
  size_t size() const override { return docs_.size(); }
  int64_t length(size_t i) const override { return int64_t(docs_[i].tokens.size()); }
  const Document& get(size_t i, Document&) const override { return docs_[i]; }

 private:
  std::vector<Document> docs_;
};

// Some documents of another source, in its order (conversations too long for a row left out).
class DocumentSubset final : public DocumentSource {
 public:
  DocumentSubset(std::shared_ptr<const DocumentSource> base, std::vector<uint64_t> keep)
      : base_(std::move(base)), keep_(std::move(keep)) {}
  size_t size() const override { return keep_.size(); }
  int64_t length(size_t i) const override { return base_->length(keep_[i]); }
  const Document& get(size_t i, Document& scratch) const override { return base_->get(keep_[i], scratch); }

 private:
  std::shared_ptr<const DocumentSource> base_;
  std::vector<uint64_t> keep_;
};

struct LoaderPosition {
  uint64_t epoch = 0;
  uint64_t index = 0;  // next document within the epoch's order
};

class DocumentLoader {
 public:
  DocumentLoader(std::shared_ptr<const DocumentSource> docs, uint64_t seed, bool shuffle,
                 bool packing, int32_t pad_id, bool whole_documents = false);
  DocumentLoader(std::vector<Document> docs, uint64_t seed, bool shuffle, bool packing,
                 int32_t pad_id, bool whole_documents = false)
      : DocumentLoader(std::make_shared<InMemoryDocuments>(std::move(docs)), seed, shuffle,
                       packing, pad_id, whole_documents) {}
  MicroBatch next(int64_t rows, int64_t seq_len);
  // How many micro-batches one pass over the documents makes (in epoch 0's order; later
  // epochs may differ by a batch or so); the loader's position does not move.
  int64_t batches_per_epoch(int64_t rows, int64_t seq_len) const;
  // Data parallelism: every rank walks the same global stream and keeps micro-batch i of
  // the next `count` when i % dp_size == dp_rank, so the ranks' shares are disjoint, their
  // union is the one-process stream, and every rank's position stays the same. The other
  // ranks' micro-batches are planned from document lengths alone: their tokens are not read.
  std::vector<MicroBatch> next_share(int64_t count, int dp_size, int dp_rank, int64_t rows,
                                     int64_t seq_len);
  LoaderPosition position() const { return pos_; }
  // Resumes at a saved position; one past this dataset's documents is an error.
  void set_position(LoaderPosition p);
  size_t size() const { return docs_->size(); }

 private:
  std::vector<uint32_t> order_for(uint64_t epoch) const;
  // The next micro-batch; record false: only the position moves (no tokens are read).
  MicroBatch next_batch(int64_t rows, int64_t seq_len, bool record);
  // Puts document `doc` into `b` as the mode says; false (nothing placed) when it waits
  // for the next batch.
  bool place(BatchBuilder& b, size_t doc, int64_t seq_len) const;
  // Appends the first n tokens of document `doc` (only its length when `b` does not record).
  void append(BatchBuilder& b, size_t doc, int64_t n) const;
  std::shared_ptr<const DocumentSource> docs_;
  std::vector<uint32_t> order_;
  uint64_t seed_;
  bool shuffle_, packing_, whole_documents_;
  int32_t pad_id_;
  LoaderPosition pos_;
};

}  // namespace temper
