// A micro-batch on the host: `rows` sequences of `seq_len` tokens, flattened to
// T = rows × seq_len. Documents are packed; cu_seqlens marks where each starts, positions
// restart at 0 in each, and attention never crosses a boundary.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace temper {

struct MicroBatch {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> ids;         // [T] input token ids
  std::vector<int32_t> targets;     // [T] next token in the same document, or -100
  std::vector<int32_t> positions;   // [T] position within the document
  std::vector<int32_t> cu_seqlens;  // [N+1] document starts, 0 ... T

  int64_t tokens() const { return rows * seq_len; }
  int64_t target_count() const;
  // Throws temper::Error when the fields disagree (sizes, boundaries, positions, ids >= vocab).
  void validate(int64_t vocab_size, int64_t max_positions) const;
};

// Builds a micro-batch from whole documents (each a token list whose targets are given
// per token: -100 where no loss is wanted). A document longer than seq_len is split.
// Rows are filled greedily in order; `pad_id` fills the tail of each row as its own
// document with target -100.
class BatchBuilder {
 public:
  // record false: only the row / column bookkeeping runs (no tokens are stored; finish()
  // returns an empty batch), for counting how many batches a stream of documents makes.
  BatchBuilder(int64_t rows, int64_t seq_len, int32_t pad_id, bool record = true);
  // Appends a document with its targets (same length). A document longer than the room
  // left continues on the next row (as its own attention segment); what does not fit in
  // the batch is dropped. Returns false (appending nothing) when the batch is full.
  bool add_document(std::span<const int32_t> tokens, std::span<const int32_t> targets);
  // The bookkeeping of add_document for a document of n tokens (record false only).
  bool add_length(int64_t n);
  bool records() const { return record_; }
  bool full() const { return row_ >= rows_; }
  bool empty() const { return row_ == 0 && col_ == 0; }
  // Tokens that still fit in the batch, and in the current row.
  int64_t room() const { return (rows_ - row_) * seq_len_ - col_; }
  int64_t row_room() const { return seq_len_ - col_; }
  bool in_last_row() const { return row_ + 1 >= rows_; }
  bool row_started() const { return col_ > 0; }
  // Pads the current row (if started) so the next document begins a new row.
  void finish_row() {
    if (col_ > 0) close_row();
  }
  // Pads the remaining rows and returns the batch.
  MicroBatch finish();

 private:
  void close_row();
  bool advance(int64_t len, const int32_t* tokens, const int32_t* targets);
  int64_t rows_, seq_len_;
  int32_t pad_id_;
  bool record_;
  int64_t row_ = 0, col_ = 0;
  MicroBatch b_;
};

}  // namespace temper
