// HDF5 token datasets: write then read gives the same tokens, masks, documents and
// attributes; documents become loader documents with targets only where the mask says;
// a truncated or inconsistent file is an error naming the file and what is wrong.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <filesystem>
#include <hdf5.h>

#include "core/error.h"
#include "data/dataset.h"
#include "kernels/backend.h"
#include "support/test_util.h"

namespace temper {
namespace {

TokenDataset sample() {
  TokenDataset d;
  d.vocab_size = 100;
  d.eos_id = 99;
  d.tokenizer_fingerprint = "fp-123";
  d.source_format = "chat";
  d.chat_template = "{{ messages }}";
  d.creator_version = "test";
  d.add({5, 6, 7, 99}, {0, 0, 1, 1}, false);  // a prompt (5, 6) and an answer (7, EOS)
  d.add({8, 9}, {0, 1}, true);
  d.add({10, 11, 12}, {0, 1, 1}, false);
  return d;
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

TEST(Dataset, WriteThenReadIsIdentical) {
  auto path = (test::temp_dir("dataset_roundtrip") / "d.h5").string();
  const TokenDataset d = sample();
  write_token_dataset(path, d);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const TokenDataset r = read_token_dataset(path);
  EXPECT_EQ(r.tokens, d.tokens);
  EXPECT_EQ(r.loss_mask, d.loss_mask);
  EXPECT_EQ(r.doc_offsets, d.doc_offsets);
  EXPECT_EQ(r.split, d.split);
  EXPECT_EQ(r.vocab_size, 100);
  EXPECT_EQ(r.eos_id, 99);
  EXPECT_EQ(r.tokenizer_fingerprint, "fp-123");
  EXPECT_EQ(r.chat_template, "{{ messages }}");
}

TEST(Dataset, MaskedTokensAreTheOnlyTargets) {
  const TokenDataset d = sample();
  auto train = d.documents_of(false), val = d.documents_of(true);
  ASSERT_EQ(train.size(), 2u);
  ASSERT_EQ(val.size(), 1u);
  // Token i predicts token i+1 only where the mask marks i+1: the answer 7 and the EOS.
  EXPECT_EQ(train[0].targets, (std::vector<int32_t>{kIgnoreIndex, 7, 99, kIgnoreIndex}));
  EXPECT_EQ(val[0].targets, (std::vector<int32_t>{9, kIgnoreIndex}));
  EXPECT_EQ(train[1].tokens, (std::vector<int32_t>{10, 11, 12}));
}

TEST(Dataset, BadFilesAreNamedErrors) {
  auto dir = test::temp_dir("dataset_bad");
  const std::string path = (dir / "d.h5").string();
  write_token_dataset(path, sample());
  // Truncated.
  const std::string cut = (dir / "cut.h5").string();
  std::filesystem::copy_file(path, cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(cut) / 3);
  expect_error([&] { read_token_dataset(cut); }, {cut});
  // Not there.
  expect_error([&] { read_token_dataset((dir / "none.h5").string()); }, {"none.h5", "does not exist"});
  // Offsets that do not cover the tokens.
  TokenDataset bad = sample();
  bad.doc_offsets.back() -= 1;
  const std::string off = (dir / "offsets.h5").string();
  write_token_dataset(off, sample());
  {  // the writer derives offsets from the documents: overwrite them in the file
    const hid_t f = H5Fopen(off.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t set = H5Dopen2(f, "doc_offsets", H5P_DEFAULT);
    ASSERT_GE(H5Dwrite(set, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, bad.doc_offsets.data()), 0);
    H5Dclose(set);
    H5Fclose(f);
  }
  expect_error([&] { read_token_dataset(off); }, {off, "doc_offsets"});
  // An id the dataset's own vocabulary does not have.
  TokenDataset big = sample();
  big.tokens[2] = 150;
  const std::string ids = (dir / "ids.h5").string();
  write_token_dataset(ids, big);
  expect_error([&] { read_token_dataset(ids); }, {ids, "token 2", "150"});
}

// Past the writer's 1M-token buffer: growing chunked datasets, and shards that each pass
// it too; both read back as the dataset written.
TEST(Dataset, LargeDatasetsStreamThroughChunksAndShards) {
  TokenDataset d = sample();
  d.tokens.clear(), d.loss_mask.clear(), d.doc_offsets = {0}, d.split.clear();
  uint32_t x = 1;
  while (d.tokens.size() < 2'600'000) {
    x = x * 1103515245u + 12345u;
    const size_t n = 1 + (x >> 8) % 3000;
    std::vector<uint32_t> doc(n);
    std::vector<uint8_t> mask(n);
    for (size_t i = 0; i < n; ++i) doc[i] = uint32_t((x >> 4) % 97 + i % 3), mask[i] = (i + x) % 2;
    d.add(doc, mask, x % 10 == 0);
  }
  const auto dir = test::temp_dir("dataset_large");
  for (int64_t shard : {int64_t(0), int64_t(1'100'000)}) {
    SCOPED_TRACE(shard);
    const std::string path = (dir / fmt::format("d{}.h5", shard)).string();
    const std::vector<std::string> files = write_token_dataset(path, d, shard);
    EXPECT_EQ(files.size(), shard ? 4u : 1u);  // 2.6M tokens in shards of up to 1.1M: 3
    const TokenDataset r = read_token_dataset(path);
    EXPECT_TRUE(r.tokens == d.tokens);
    EXPECT_TRUE(r.loss_mask == d.loss_mask);
    EXPECT_TRUE(r.doc_offsets == d.doc_offsets);
    EXPECT_TRUE(r.split == d.split);
  }
}

// A writer dropped before finish() (an error while preparing) leaves no file behind.
TEST(Dataset, AnUnfinishedWriterLeavesNoFiles) {
  const auto dir = test::temp_dir("dataset_unfinished");
  {
    TokenDatasetWriter w((dir / "d.h5").string(), 3);
    const std::vector<uint32_t> t = {1, 2};
    const std::vector<uint8_t> m = {0, 1};
    for (int i = 0; i < 5; ++i) w.add(t, m);
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

}  // namespace
}  // namespace temper
