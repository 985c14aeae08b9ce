#include "data/loader.h"

#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/backend.h"

namespace temper {

Document causal_document(std::vector<int32_t> tokens) {
  Document d;
  d.targets.assign(tokens.size(), kIgnoreIndex);
  for (size_t i = 0; i + 1 < tokens.size(); ++i) d.targets[i] = tokens[i + 1];
  d.tokens = std::move(tokens);
  return d;
}

DocumentLoader::DocumentLoader(std::shared_ptr<const DocumentSource> docs, uint64_t seed,
                               bool shuffle, bool packing, int32_t pad_id, bool whole_documents)
    : docs_(std::move(docs)), seed_(seed), shuffle_(shuffle), packing_(packing),
      whole_documents_(whole_documents), pad_id_(pad_id) {
  if (docs_->size() == 0) fail("data loader: no documents");
  order_ = order_for(0);
}

std::vector<uint32_t> DocumentLoader::order_for(uint64_t epoch) const {
  std::vector<uint32_t> order(docs_->size());
  std::iota(order.begin(), order.end(), 0u);
  if (!shuffle_) return order;
  // Fisher-Yates driven by the (seed, data, epoch) Philox stream.
  Rng rng(rng_stream(seed_, RngPurpose::Data, uint32_t(epoch)));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  return order;
}

void DocumentLoader::set_position(LoaderPosition p) {
  if (p.index > docs_->size())
    fail("data loader: saved position (epoch {}, document {}) is past the {} documents of this "
         "dataset: the checkpoint was made with other data",
         p.epoch, p.index, docs_->size());
  pos_ = p;
  order_ = order_for(p.epoch);
}

std::vector<MicroBatch> DocumentLoader::next_share(int64_t count, int dp_size, int dp_rank,
                                                   int64_t rows, int64_t seq_len) {
  TEMPER_CHECK(dp_size > 0 && dp_rank >= 0 && dp_rank < dp_size, "dp rank {} of {}", dp_rank,
               dp_size);
  std::vector<MicroBatch> mine;
  for (int64_t i = 0; i < count; ++i) {
    const bool is_mine = i % dp_size == dp_rank;
    MicroBatch b = next_batch(rows, seq_len, is_mine);
    if (is_mine) mine.push_back(std::move(b));
  }
  return mine;
}

void DocumentLoader::append(BatchBuilder& b, size_t doc, int64_t n) const {
  if (!b.records()) {
    b.add_length(n);
    return;
  }
  Document scratch;
  const Document& d = docs_->get(doc, scratch);
  b.add_document(std::span<const int32_t>(d.tokens).first(size_t(n)),
                 std::span<const int32_t>(d.targets).first(size_t(n)));
}

bool DocumentLoader::place(BatchBuilder& b, size_t doc, int64_t seq_len) const {
  const int64_t n = docs_->length(doc);
  if (!packing_) {
    // Padding mode: one document per row, truncated to the row.
    append(b, doc, std::min(n, seq_len));
    if (!b.full()) b.finish_row();
    return true;
  }
  if (whole_documents_) {
    // Not split over rows: a document that does not fit in the row starts the next one,
    // or the next batch from the last row.
    TEMPER_CHECK(n <= seq_len, "a whole document of {} tokens is longer than a row ({})", n,
                 seq_len);
    if (b.row_started() && n > b.row_room()) {
      if (b.in_last_row()) return false;
      b.finish_row();
    }
  } else if (!b.empty() && n > b.room()) {
    // Split over rows inside the batch, but not over batches: a document that does not
    // fit in the room left starts the next batch (one longer than a batch is cut).
    return false;
  }
  append(b, doc, n);
  return true;
}

MicroBatch DocumentLoader::next(int64_t rows, int64_t seq_len) { return next_batch(rows, seq_len, true); }

MicroBatch DocumentLoader::next_batch(int64_t rows, int64_t seq_len, bool record) {
  BatchBuilder builder(rows, seq_len, pad_id_, record);
  while (!builder.full()) {
    if (pos_.index >= order_.size()) {
      pos_.index = 0;
      ++pos_.epoch;
      order_ = order_for(pos_.epoch);
    }
    if (!place(builder, order_[pos_.index], seq_len)) break;
    ++pos_.index;
  }
  return builder.finish();
}

int64_t DocumentLoader::batches_per_epoch(int64_t rows, int64_t seq_len) const {
  const std::vector<uint32_t> order = order_for(0);
  int64_t batches = 0;
  for (size_t i = 0; i < order.size(); ++batches) {
    BatchBuilder counter(rows, seq_len, pad_id_, false);
    while (!counter.full() && i < order.size() && place(counter, order[i], seq_len)) ++i;
  }
  return batches;
}

}  // namespace temper
