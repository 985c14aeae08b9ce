// The document loader: packed and padded batches of the same documents train alike, the
// shuffle is a deterministic function of (seed, epoch), data-parallel ranks share one
// stream, and a saved position resumes the stream exactly.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "core/error.h"
#include "core/rng.h"
#include "data/loader.h"
#include "model/transformer.h"
#include "support/test_util.h"

namespace temper {
namespace {

// Documents of the given lengths with random tokens below `vocab`; document d starts with
// token d (so a batch shows which documents it holds).
std::vector<Document> random_docs(const std::vector<int>& lengths, int32_t vocab, uint64_t seed) {
  Rng rng(rng_stream(seed, RngPurpose::Test, 3));
  std::vector<Document> docs;
  for (size_t d = 0; d < lengths.size(); ++d) {
    std::vector<int32_t> t(static_cast<size_t>(lengths[d]));
    for (auto& x : t) x = int32_t(rng.below(uint64_t(vocab)));
    t[0] = int32_t(d);
    docs.push_back(causal_document(t));
  }
  return docs;
}

std::vector<Document> numbered_docs(int n) {
  std::vector<int> lengths;
  for (int i = 0; i < n; ++i) lengths.push_back(3 + i % 5);
  return random_docs(lengths, 1000, 5);
}

// The documents of a batch in order, by their first token (padding, id 999, left out).
std::vector<int32_t> docs_in(const MicroBatch& b) {
  std::vector<int32_t> out;
  for (size_t d = 0; d + 1 < b.cu_seqlens.size(); ++d)
    if (b.ids[size_t(b.cu_seqlens[d])] != 999) out.push_back(b.ids[size_t(b.cu_seqlens[d])]);
  return out;
}

bool same_batch(const MicroBatch& a, const MicroBatch& b) {
  return a.ids == b.ids && a.targets == b.targets && a.positions == b.positions &&
         a.cu_seqlens == b.cu_seqlens;
}

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 48;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  return c;
}

// The same seven documents packed four to a row (lengths chosen to fill rows exactly, so
// no document is split) and padded one per row: equal loss and equal gradients.
TEST(Loader, PackedAndPaddedBatchesGiveTheSameLossAndGradients) {
  const std::vector<int> lengths = {5, 11, 16, 7, 9, 3, 13};
  const auto docs = random_docs(lengths, 48, 21);
  const int32_t pad = 47;
  DocumentLoader packed(docs, 1, false, true, pad), padded(docs, 1, false, false, pad);
  const MicroBatch p = packed.next(4, 16), q = padded.next(7, 16);
  ASSERT_EQ(p.target_count(), q.target_count());
  ASSERT_EQ(packed.position().index, 7u);  // both batches hold exactly the seven documents
  ASSERT_EQ(padded.position().index, 7u);
  EXPECT_EQ(p.cu_seqlens.size(), 8u);       // seven documents, no padding segment
  EXPECT_EQ(q.cu_seqlens.size(), 14u);      // seven documents, six padding tails

  auto cpu = make_backend("cpu");
  Transformer m(tiny_config(), *cpu, DType::F32);
  test::randomize_parameters(m.params(), *cpu, 3, 0.3f, 0.2f, 0.2f);
  auto run = [&](const MicroBatch& b, double* loss) {
    m.params().zero_grads();
    LossSum s = m.forward_backward(b, 1.0f / float(b.target_count()));
    *loss = s.loss / double(s.tokens);
    return test::to_host(*cpu, m.params().flat_grads());
  };
  double loss_p = 0, loss_q = 0;
  const std::vector<float> gp = run(p, &loss_p), gq = run(q, &loss_q);
  EXPECT_NEAR(loss_p, loss_q, 1e-6 * loss_q);
  EXPECT_LE(test::rel_error(gp, gq), 1e-5);
  EXPECT_GT(loss_p, 1.0);  // a real loss, not an empty batch
}

// Packing drops nothing: a document is never cut at the end of a batch (it waits for the
// next one), so every batch ends with a document's last token, and over an epoch every
// target of every document is seen once.
TEST(Loader, PackingNeverCutsADocumentAtTheEndOfABatch) {
  std::vector<int> lengths;
  Rng rng(rng_stream(4, RngPurpose::Test, 0));
  for (int i = 0; i < 60; ++i) lengths.push_back(3 + int(rng.below(30)));
  const auto docs = random_docs(lengths, 900, 8);
  int64_t doc_targets = 0;
  for (const auto& d : docs)
    for (int32_t t : d.targets) doc_targets += t != kIgnoreIndex;
  DocumentLoader l(docs, 3, true, true, 999);
  int64_t seen = 0;
  while (l.position().epoch == 0) {
    const MicroBatch b = l.next(2, 16);
    int64_t last = int64_t(b.ids.size()) - 1;
    while (last >= 0 && b.ids[size_t(last)] == 999) --last;  // skip the padding tail
    ASSERT_GE(last, 0);
    EXPECT_EQ(b.targets[size_t(last)], kIgnoreIndex) << "a document was cut at the batch end";
    if (l.position().epoch == 0 || l.position().index == 0) seen += b.target_count();
  }
  EXPECT_EQ(l.position().index, 0u);  // no batch straddles the epoch end here
  EXPECT_EQ(seen, doc_targets);
}

// Each epoch is a permutation of all documents; the order is a function of the seed and
// the epoch alone.
TEST(Loader, ShuffleIsDeterministicPerSeedAndDiffersAcrossSeedsAndEpochs) {
  const auto docs = numbered_docs(40);
  auto epochs = [&](uint64_t seed) {
    DocumentLoader l(docs, seed, true, false, 999);
    std::vector<std::vector<int32_t>> out(3);
    for (auto& e : out)
      for (int i = 0; i < 40; ++i) e.push_back(docs_in(l.next(1, 8))[0]);
    return out;
  };
  const auto a = epochs(7), b = epochs(7), c = epochs(8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a[0], c[0]);
  EXPECT_NE(a[0], a[1]);
  for (const auto& e : a) EXPECT_EQ(std::set<int32_t>(e.begin(), e.end()).size(), 40u);
  // No shuffle: file order.
  DocumentLoader plain(docs, 7, false, false, 999);
  for (int32_t i = 0; i < 40; ++i) EXPECT_EQ(docs_in(plain.next(1, 8))[0], i);
}

// dp ranks: disjoint shares whose interleaving is the one-process stream, with packing
// (documents split over batch ends) and across epoch ends.
TEST(Loader, DataParallelRanksShareTheSingleProcessStream) {
  const auto docs = numbered_docs(23);
  const int dp = 3, accum = 2, steps = 6;
  DocumentLoader single(docs, 11, true, true, 999);
  std::vector<MicroBatch> stream;
  for (int s = 0; s < steps; ++s)
    for (int i = 0; i < accum * dp; ++i) stream.push_back(single.next(2, 12));

  std::vector<std::vector<MicroBatch>> per_rank(dp);
  for (int r = 0; r < dp; ++r) {
    DocumentLoader l(docs, 11, true, true, 999);
    for (int s = 0; s < steps; ++s)
      for (auto& b : l.next_share(accum * dp, dp, r, 2, 12)) per_rank[r].push_back(std::move(b));
    EXPECT_EQ(l.position().epoch, single.position().epoch);
    EXPECT_EQ(l.position().index, single.position().index);
  }
  for (size_t i = 0; i < stream.size(); ++i) {
    const int r = int(i % dp);
    const size_t k = (i / size_t(accum * dp)) * size_t(accum) + (i % size_t(accum * dp)) / size_t(dp);
    ASSERT_LT(k, per_rank[r].size());
    EXPECT_TRUE(same_batch(per_rank[r][k], stream[i])) << "micro-batch " << i;
  }
  size_t total = 0;
  for (auto& v : per_rank) total += v.size();
  EXPECT_EQ(total, stream.size());
  EXPECT_GE(single.position().epoch, 1u);  // the test crossed an epoch end
}

// An in-memory source that records which documents were read.
class CountingSource final : public DocumentSource {
 public:
  explicit CountingSource(std::vector<Document> docs) : docs_(std::move(docs)) {}
  size_t size() const override { return docs_.size(); }
  int64_t length(size_t i) const override { return int64_t(docs_[i].tokens.size()); }
  const Document& get(size_t i, Document&) const override {
    read.insert(int32_t(i));
    return docs_[i];
  }
  mutable std::set<int32_t> read;

 private:
  std::vector<Document> docs_;
};

// A data-parallel rank reads only the documents of its own micro-batches (the others' are
// planned from lengths), and still gets the same batches as with every document in memory.
// Padding mode (one document a row) keeps the shares disjoint; packed, a document split
// over a batch end is read by both ranks that hold a piece.
TEST(Loader, ARankReadsOnlyTheDocumentsOfItsShare) {
  const auto docs = numbered_docs(40);
  const int dp = 2;
  std::set<int32_t> all;
  for (int r = 0; r < dp; ++r) {
    auto source = std::make_shared<CountingSource>(docs);
    DocumentLoader lazy(source, 3, true, false, 999);
    DocumentLoader whole(docs, 3, true, false, 999);
    std::set<int32_t> in_batches;
    for (int step = 0; step < 4; ++step) {
      const auto mine = lazy.next_share(4, dp, r, 2, 6);
      const auto ref = whole.next_share(4, dp, r, 2, 6);
      ASSERT_EQ(mine.size(), ref.size());
      for (size_t i = 0; i < mine.size(); ++i) {
        EXPECT_TRUE(same_batch(mine[i], ref[i])) << "rank " << r << " step " << step;
        for (int32_t d : docs_in(mine[i])) in_batches.insert(d);
      }
    }
    EXPECT_EQ(source->read, in_batches) << "rank " << r << " read documents outside its share";
    for (int32_t d : source->read) EXPECT_TRUE(all.insert(d).second) << "document " << d << " read by two ranks";
  }
  EXPECT_EQ(all.size(), 32u);  // 4 steps × 4 micro-batches × 2 rows, one document a row
}

// A position saved mid-epoch (inside a shuffled, packed stream) resumes exactly; a position
// past the dataset's end is refused.
TEST(Loader, SavedPositionResumesExactlyTheSameBatches) {
  const auto docs = numbered_docs(31);
  for (bool packing : {true, false}) {
    DocumentLoader a(docs, 5, true, packing, 999);
    for (int i = 0; i < 9; ++i) a.next(2, 10);
    const LoaderPosition saved = a.position();
    ASSERT_GT(saved.index, 0u);
    std::vector<MicroBatch> after;
    for (int i = 0; i < 12; ++i) after.push_back(a.next(2, 10));  // crosses into epoch 2

    DocumentLoader b(docs, 5, true, packing, 999);
    b.next(3, 7);  // somewhere else entirely
    b.set_position(saved);
    for (int i = 0; i < 12; ++i) EXPECT_TRUE(same_batch(b.next(2, 10), after[size_t(i)])) << i;
    EXPECT_EQ(b.position().epoch, a.position().epoch);
    EXPECT_EQ(b.position().index, a.position().index);
  }
  DocumentLoader c(docs, 5, true, true, 999);
  try {
    c.set_position({0, 32});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("31 documents"), std::string::npos) << e.what();
  }
}

// Conversations (whole_documents) are never split over two rows: a document that does not
// fit in what is left of a row starts the next row, so every document is one attention
// segment of its own length, and an epoch holds each exactly once. The same documents
// packed as text do get split (what the flag prevents).
TEST(Loader, WholeDocumentsAreNeverSplitOverRows) {
  std::vector<int> lengths;
  Rng rng(rng_stream(6, RngPurpose::Test, 0));
  for (int i = 0; i < 50; ++i) lengths.push_back(3 + int(rng.below(14)));  // 3..16 <= seq_len
  const auto docs = random_docs(lengths, 900, 9);
  auto segments = [&](bool whole) {
    DocumentLoader l(docs, 3, true, true, 999, whole);
    std::vector<std::pair<int32_t, int>> out;  // (first token, length) of each document segment
    while (l.position().epoch == 0) {
      const MicroBatch b = l.next(3, 16);
      for (size_t d = 0; d + 1 < b.cu_seqlens.size(); ++d) {
        const int32_t first = b.ids[size_t(b.cu_seqlens[d])];
        if (first != 999) out.push_back({first, b.cu_seqlens[d + 1] - b.cu_seqlens[d]});
      }
    }
    return out;
  };
  const auto whole = segments(true);
  std::set<int32_t> seen;
  for (const auto& [first, length] : whole) {
    ASSERT_LT(first, 50) << "a segment that is not a document's start: a split document";
    EXPECT_EQ(length, lengths[size_t(first)]) << "document " << first;
    seen.insert(first);
  }
  EXPECT_EQ(seen.size(), 50u);
  EXPECT_GE(whole.size(), 50u);  // the last batch may run into the next epoch
  int split = 0;
  for (const auto& [first, length] : segments(false))
    split += first >= 50 || length != lengths[size_t(first)];
  EXPECT_GT(split, 0) << "text packing split no document: the test shows nothing";
}

// batches_per_epoch counts, without moving the loader, the micro-batches that next() takes
// to pass over every document of epoch 0 once, in every mode.
TEST(Loader, BatchesPerEpochIsWhatNextTakes) {
  std::vector<int> lengths;
  Rng rng(rng_stream(7, RngPurpose::Test, 0));
  for (int i = 0; i < 70; ++i) lengths.push_back(3 + int(rng.below(20)));
  const auto docs = random_docs(lengths, 900, 10);
  for (bool packing : {true, false})
    for (bool whole : {true, false}) {
      DocumentLoader l(docs, 5, true, packing, 999, whole);
      const int64_t counted = l.batches_per_epoch(3, 24);
      EXPECT_EQ(l.position().index, 0u);
      int64_t taken = 0;
      while (l.position().epoch == 0 && l.position().index < docs.size()) {
        l.next(3, 24);
        ++taken;
      }
      EXPECT_EQ(counted, taken) << "packing " << packing << ", whole " << whole;
      EXPECT_GT(counted, 1);
    }
}

}  // namespace
}  // namespace temper
