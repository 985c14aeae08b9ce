#include "data/batch.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/backend.h"

namespace temper {

int64_t MicroBatch::target_count() const {
  int64_t n = 0;
  for (int32_t t : targets) n += t != kIgnoreIndex;
  return n;
}

void MicroBatch::validate(int64_t vocab_size, int64_t max_positions) const {
  const size_t T = size_t(tokens());
  if (ids.size() != T || targets.size() != T || positions.size() != T)
    fail("micro-batch: ids/targets/positions sizes {}/{}/{} but rows×seq_len = {}", ids.size(),
         targets.size(), positions.size(), T);
  if (cu_seqlens.size() < 2 || cu_seqlens.front() != 0 || size_t(cu_seqlens.back()) != T)
    fail("micro-batch: cu_seqlens must run from 0 to {}", T);
  for (size_t d = 0; d + 1 < cu_seqlens.size(); ++d) {
    if (cu_seqlens[d + 1] <= cu_seqlens[d]) fail("micro-batch: empty document {}", d);
    for (int32_t t = cu_seqlens[d]; t < cu_seqlens[d + 1]; ++t)
      if (positions[t] != t - cu_seqlens[d])
        fail("micro-batch: position of token {} is {}, expected {}", t, positions[t],
             t - cu_seqlens[d]);
  }
  for (size_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab_size)
      fail("micro-batch: token {} has id {} outside the vocabulary [0, {})", t, ids[t], vocab_size);
    if (targets[t] != kIgnoreIndex && (targets[t] < 0 || targets[t] >= vocab_size))
      fail("micro-batch: target {} is {} outside the vocabulary", t, targets[t]);
    if (positions[t] >= max_positions)
      fail("micro-batch: position {} at token {} exceeds max_position_embeddings {}", positions[t],
           t, max_positions);
  }
}

BatchBuilder::BatchBuilder(int64_t rows, int64_t seq_len, int32_t pad_id, bool record)
    : rows_(rows), seq_len_(seq_len), pad_id_(pad_id), record_(record) {
  b_.rows = rows;
  b_.seq_len = seq_len;
  b_.cu_seqlens.push_back(0);
}

void BatchBuilder::close_row() {
  // Pad the rest of the row as one ignored document, so rows never share a document.
  if (record_ && col_ > 0 && col_ < seq_len_) {
    for (int64_t c = col_; c < seq_len_; ++c) {
      b_.ids.push_back(pad_id_);
      b_.targets.push_back(kIgnoreIndex);
      b_.positions.push_back(int32_t(c - col_));
    }
    b_.cu_seqlens.push_back(int32_t(b_.ids.size()));
  }
  ++row_;
  col_ = 0;
}

bool BatchBuilder::add_document(std::span<const int32_t> tokens,
                                std::span<const int32_t> targets) {
  TEMPER_CHECK(tokens.size() == targets.size(), "tokens {} vs targets {}", tokens.size(),
               targets.size());
  return advance(int64_t(tokens.size()), tokens.data(), targets.data());
}

bool BatchBuilder::add_length(int64_t n) {
  TEMPER_CHECK(!record_, "add_length on a BatchBuilder that records tokens");
  return advance(n, nullptr, nullptr);
}

bool BatchBuilder::advance(int64_t len, const int32_t* tokens, const int32_t* targets) {
  if (full() || len == 0) return false;
  int64_t i = 0;
  while (i < len && !full()) {
    const int64_t n = std::min<int64_t>(seq_len_ - col_, len - i);
    for (int64_t j = 0; record_ && j < n; ++j) {
      b_.ids.push_back(tokens[i + j]);
      // The last token of a split piece predicts the next piece's first token: that
      // target stays, since both are in the same document.
      b_.targets.push_back(targets[i + j]);
      b_.positions.push_back(int32_t(j));
    }
    if (record_) b_.cu_seqlens.push_back(int32_t(b_.ids.size()));
    i += n;
    col_ += n;
    if (col_ == seq_len_) close_row();
  }
  return true;
}

MicroBatch BatchBuilder::finish() {
  while (!full()) {
    if (col_ == 0) {  // an empty row: one padding document
      for (int64_t c = 0; record_ && c < seq_len_; ++c) {
        b_.ids.push_back(pad_id_);
        b_.targets.push_back(kIgnoreIndex);
        b_.positions.push_back(int32_t(c));
      }
      if (record_) b_.cu_seqlens.push_back(int32_t(b_.ids.size()));
      ++row_;
    } else {
      close_row();
    }
  }
  return std::move(b_);
}

}  // namespace temper
