// Sharded token datasets end to end (`temper prepare --shard-size`, several inputs and
// globs; data.path = the index):
//  - the shards of a glob over three JSONL files hold the one-file dataset of the same
//    lines, token for token, as do the three files named one by one;
//  - training on the index gives the one-file dataset's losses bit for bit, and resuming
//    from a checkpoint of the sharded run gives the uninterrupted run's losses and model;
//  - a missing, cut or damaged shard is an error naming it.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>

#include "data/dataset.h"
#include "e2e/checkpoint_test_util.h"
#include "support/test_util.h"

namespace temper {
namespace {

namespace fs = std::filesystem;
using test::CommandResult;

CommandResult temper(const std::string& args) {
  return test::run_command("OMP_NUM_THREADS=1 " + test::temper_bin() + " " + args);
}

#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

void expect_same_dataset(const TokenDataset& a, const TokenDataset& b, const std::string& what) {
  EXPECT_EQ(a.tokens, b.tokens) << what;
  EXPECT_EQ(a.loss_mask, b.loss_mask) << what;
  EXPECT_EQ(a.doc_offsets, b.doc_offsets) << what;
  EXPECT_EQ(a.split, b.split) << what;
  EXPECT_EQ(a.tokenizer_fingerprint, b.tokenizer_fingerprint) << what;
  EXPECT_EQ(a.source_format, b.source_format) << what;
}

size_t shard_count(const fs::path& index) {
  const std::string stem = index.stem().string() + "-";
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(index.parent_path()))
    n += e.path().filename().string().starts_with(stem) && e.path().extension() == ".h5";
  return n;
}

TEST(ShardedData, GlobAndSeveralFilesGiveTheOneFileDataset) {
  const fs::path dir = test::temp_dir("sharded_prepare");
  // A tiny byte-level tokenizer trained by `tokenizers` (as test_prepare_cli.cpp uses).
  std::string out;
  ASSERT_EQ(test::run_python("reference/prepare_reference.py", {dir.string(), "--tiny-only"}, &out), 0) << out;
  const std::string model = (dir / "tiny").string();
  // 600 lines of text, in one file and in three.
  fs::create_directories(dir / "parts");
  {
    std::ofstream one(dir / "all.jsonl");
    std::ofstream part;
    for (int i = 0; i < 600; ++i) {
      if (i % 200 == 0) part = std::ofstream(dir / "parts" / fmt::format("part-{}.jsonl", i / 200));
      const std::string line = fmt::format(
          "{{\"text\": \"Line {} says {} times {} is {}, and the next line goes on.\"}}\n", i, i % 17, i % 5, (i % 17) * (i % 5));
      one << line;
      part << line;
    }
  }
  const std::string common = " --model " + model + " --format text --val-fraction 0.1 --seed 5";
  const CommandResult a = temper("prepare " + (dir / "all.jsonl").string() + common + " --out " + (dir / "one.h5").string());
  ASSERT_EQ(a.status, 0) << a.output;
  const CommandResult g = temper("prepare '" + (dir / "parts" / "part-*.jsonl").string() + "'" + common +
                                 " --shard-size 3K --out " + (dir / "index.h5").string());
  ASSERT_EQ(g.status, 0) << g.output;
  EXPECT_HAS(g.output, "600 documents (60 validation) from 600 lines of 3 files");
  EXPECT_HAS(g.output, "is their index");
  const CommandResult m = temper("prepare " + (dir / "parts" / "part-0.jsonl").string() + " " +
                                 (dir / "parts" / "part-1.jsonl").string() + " " +
                                 (dir / "parts" / "part-2.jsonl").string() + common + " --out " +
                                 (dir / "three.h5").string());
  ASSERT_EQ(m.status, 0) << m.output;

  const TokenDataset ref = read_token_dataset((dir / "one.h5").string());
  ASSERT_GT(ref.tokens.size(), 9000u);  // so that 3K-token shards make several
  EXPECT_GE(shard_count(dir / "index.h5"), 3u);
  expect_same_dataset(read_token_dataset((dir / "index.h5").string()), ref, "glob, sharded");
  expect_same_dataset(read_token_dataset((dir / "three.h5").string()), ref, "three files");

  // A pattern that matches nothing, and a bad line in the second file, are named.
  const CommandResult none = temper("prepare '" + (dir / "parts" / "nope-*.jsonl").string() + "'" + common +
                                    " --out " + (dir / "x.h5").string());
  EXPECT_EQ(none.status, 1);
  EXPECT_HAS(none.output, "nope-*.jsonl: the pattern matches no file");
  std::ofstream(dir / "parts" / "part-1.jsonl", std::ios::app) << "{\"text\": 5}\n";
  const CommandResult bad = temper("prepare '" + (dir / "parts" / "part-*.jsonl").string() + "'" + common +
                                   " --shard-size 3K --out " + (dir / "bad.h5").string());
  EXPECT_EQ(bad.status, 1);
  EXPECT_HAS(bad.output, (dir / "parts" / "part-1.jsonl").string() + ":201:");
  for (const auto& e : fs::directory_iterator(dir))  // nothing left behind under bad*
    EXPECT_FALSE(e.path().filename().string().starts_with("bad")) << e.path();
}

TEST(ShardedData, TrainingOnShardsEqualsOneFileAndResumesExactly) {
  const fs::path dir = test::temp_dir("sharded_train");
  const std::string synthetic = "prepare --synthetic --docs 400 --min-tokens 16 --max-tokens 96 --seed 1234";
  ASSERT_EQ(temper(synthetic + " --out " + (dir / "one.h5").string()).status, 0);
  const CommandResult p = temper(synthetic + " --shard-size 4K --out " + (dir / "index.h5").string());
  ASSERT_EQ(p.status, 0) << p.output;
  ASSERT_GE(shard_count(dir / "index.h5"), 4u);

  const std::string args = "train.steps=8 checkpoint.every=4 checkpoint.keep=5 data.source=hdf5 data.path=";
  const fs::path ref = dir / "run_one", sharded = dir / "run_sharded";
  ASSERT_EQ(temper(test::train_args(ref, args + (dir / "one.h5").string())).status, 0);
  const CommandResult s = temper(test::train_args(sharded, args + (dir / "index.h5").string()));
  ASSERT_EQ(s.status, 0) << s.output;
  ASSERT_EQ(test::step_losses(ref).size(), 8u);
  test::expect_same_losses(test::step_losses(sharded), test::step_losses(ref), 1, 8, "sharded");

  // From the sharded run's step-4 checkpoint: the uninterrupted run's steps 5-8 and model.
  const fs::path resumed = dir / "run_resumed";
  const CommandResult r = temper(test::train_args(
      resumed, args + (dir / "index.h5").string() + " checkpoint.load=" +
                   (sharded / "checkpoints" / "step-00000004.h5").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  test::expect_same_losses(test::step_losses(resumed), test::step_losses(ref), 5, 8, "resumed");
  EXPECT_TRUE(test::file_bytes(resumed / "final" / "model.safetensors") ==
              test::file_bytes(ref / "final" / "model.safetensors"));

  // Damaged shards: cut, overwritten, missing. Each is named.
  const fs::path shard = dir / "index-00001.h5";
  const std::string saved = test::file_bytes(shard);
  fs::resize_file(shard, saved.size() - 100);
  CommandResult e = temper(test::train_args(dir / "run_cut", args + (dir / "index.h5").string()));
  EXPECT_EQ(e.status, 1);
  EXPECT_HAS(e.output, "shard 2 of");
  EXPECT_HAS(e.output, shard.string() + ", is " + std::to_string(saved.size() - 100) + " bytes");
  {
    std::string garbled = saved;
    for (size_t i = 0; i < 64; ++i) garbled[i] = char(0x5a);
    std::ofstream(shard, std::ios::binary) << garbled;
  }
  e = temper(test::train_args(dir / "run_garbled", args + (dir / "index.h5").string()));
  EXPECT_EQ(e.status, 1);
  EXPECT_HAS(e.output, shard.string() + ", is not a readable HDF5 file");
  fs::remove(shard);
  e = temper(test::train_args(dir / "run_missing", args + (dir / "index.h5").string()));
  EXPECT_EQ(e.status, 1);
  EXPECT_HAS(e.output, shard.string() + ", is missing");
}

}  // namespace
}  // namespace temper
