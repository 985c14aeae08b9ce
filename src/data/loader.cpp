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

DocumentLoader::DocumentLoader(std::vector<Document> docs, uint64_t seed, bool shuffle,
                               bool packing, int32_t pad_id)
    : docs_(std::move(docs)), seed_(seed), shuffle_(shuffle), packing_(packing), pad_id_(pad_id) {
  if (docs_.empty()) fail("data loader: no documents");
  make_order();
}

void DocumentLoader::make_order() {
  order_.resize(docs_.size());
  std::iota(order_.begin(), order_.end(), 0u);
  if (!shuffle_) return;
  // Fisher-Yates driven by the (seed, data, epoch) Philox stream.
  Rng rng(rng_stream(seed_, RngPurpose::Data, uint32_t(pos_.epoch)));
  for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.below(i)]);
}

void DocumentLoader::set_position(LoaderPosition p) {
  if (p.index > docs_.size())
    fail("data loader: saved position (epoch {}, document {}) is past the {} documents of this "
         "dataset: the checkpoint was made with other data",
         p.epoch, p.index, docs_.size());
  pos_ = p;
  make_order();
}

std::vector<MicroBatch> DocumentLoader::next_share(int64_t count, int dp_size, int dp_rank,
                                                   int64_t rows, int64_t seq_len) {
  TEMPER_CHECK(dp_size > 0 && dp_rank >= 0 && dp_rank < dp_size, "dp rank {} of {}", dp_rank,
               dp_size);
  std::vector<MicroBatch> mine;
  for (int64_t i = 0; i < count; ++i) {
    MicroBatch b = next(rows, seq_len);
    if (i % dp_size == dp_rank) mine.push_back(std::move(b));
  }
  return mine;
}

MicroBatch DocumentLoader::next(int64_t rows, int64_t seq_len) {
  BatchBuilder builder(rows, seq_len, pad_id_);
  while (!builder.full()) {
    if (pos_.index >= order_.size()) {
      pos_.index = 0;
      ++pos_.epoch;
      make_order();
    }
    const Document& d = docs_[order_[pos_.index]];
    if (packing_) {
      // Split over rows inside the batch, but not over batches: a document that does not
      // fit in the room left starts the next batch (one longer than a batch is cut).
      if (!builder.empty() && int64_t(d.tokens.size()) > builder.room()) break;
      ++pos_.index;
      builder.add_document(d.tokens, d.targets);
    } else {
      ++pos_.index;
      // Padding mode: one document per row, truncated to the row.
      size_t n = std::min<size_t>(d.tokens.size(), size_t(seq_len));
      builder.add_document({d.tokens.begin(), d.tokens.begin() + n},
                           {d.targets.begin(), d.targets.begin() + n});
      if (!builder.full()) builder.finish_row();
    }
  }
  return builder.finish();
}

}  // namespace temper
