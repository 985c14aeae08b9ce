// What a new user's data meets, through the binary: a data.path is never silently ignored,
// a JSONL file given as data.path says to run `temper prepare`, train.epochs sets the
// length (and show-config says what it comes to), validation runs by default, and
// conversations longer than train.seq_len are left out and counted, never split mid-turn.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "data/synthetic.h"
#include "e2e/checkpoint_test_util.h"
#include "support/tokenizer_fixture.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

using test::CommandResult;

CommandResult temper(const std::string& args) {
  return test::run_command("OMP_NUM_THREADS=1 " + test::temper_bin() + " " + args);
}

#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

TEST(DataCli, ADataPathIsNeverIgnored) {
  const fs::path dir = test::temp_dir("data_path");
  // tiny.yaml says data.source: synthetic.
  const CommandResult r = temper(test::train_args(dir / "a", "data.path=" + (dir / "d.h5").string()));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_HAS(r.output, "'data.source' is synthetic in " + test::tiny_recipe());
  EXPECT_HAS(r.output, "set data.source=hdf5");
  // A JSONL file where the token dataset belongs, with data.source left out: prepare it.
  std::ofstream(dir / "chat.jsonl") << "{\"messages\": []}\n";
  std::ofstream(dir / "run.yaml") << "model:\n  preset: tiny\ndata:\n  path: " << (dir / "chat.jsonl").string() << "\n";
  const CommandResult j = temper("train " + (dir / "run.yaml").string() + " out_dir=" + (dir / "b").string());
  EXPECT_EQ(j.status, 1) << j.output;
  EXPECT_HAS(j.output, (dir / "chat.jsonl").string() + ": a JSON Lines file, not a token dataset: "
                       "tokenize it first with `temper prepare");
  EXPECT_FALSE(fs::exists(dir / "b"));
}

// One epoch of the tiny recipe's corpus in micro-batches, counted by walking the loader.
int64_t tiny_batches_per_epoch() {
  const RunConfig c = load_run_config(test::tiny_recipe());
  SyntheticText text = generate_synthetic_text(synthetic_options(c));
  DocumentLoader loader(std::move(text.train), uint64_t(c.seed), true, c.data.packing, kSyntheticEos);
  int64_t n = 0;
  while (loader.position().epoch == 0 && loader.position().index < loader.size()) {
    loader.next(c.train.micro_batch_size, c.train.seq_len);
    ++n;
  }
  return n;
}

TEST(DataCli, EpochsSetTheLengthAndShowConfigSaysSo) {
  const fs::path dir = test::temp_dir("epochs");
  const int64_t batches = tiny_batches_per_epoch();  // tiny.yaml: grad_accum 2
  const int64_t steps = (3 * batches + 19) / 20;      // ceil(0.3 × batches / 2)
  ASSERT_GT(steps, 3);
  const std::string args = "train.steps=0 train.epochs=0.3";
  const CommandResult show = temper("show-config " + test::tiny_recipe() + " " + args);
  ASSERT_EQ(show.status, 0) << show.output;
  EXPECT_HAS(show.output, fmt::format("# length: {} steps = ", steps));
  EXPECT_HAS(show.output, fmt::format("(train.epochs=0.3; an epoch is {} micro-batches of 4 × 64 "
                                      "tokens, a step 2)", batches));
  const CommandResult run = temper(test::train_args(dir, args));
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(test::step_losses(dir).size(), size_t(steps));
  EXPECT_HAS(run.output, fmt::format("length: {} steps", steps));
}

// A config that does not mention train.eval_every validates every 10% of the run.
TEST(DataCli, ValidationRunsByDefaultWhenThereIsASplit) {
  const fs::path dir = test::temp_dir("default_eval");
  std::ofstream(dir / "run.yaml") << "model:\n  preset: tiny\ndata:\n  num_docs: 200\n"
                                     "train:\n  steps: 20\n  seq_len: 64\n";
  const CommandResult r = temper("train " + (dir / "run.yaml").string() + " train.progress=plain "
                                 "out_dir=" + (dir / "run").string());
  ASSERT_EQ(r.status, 0) << r.output;
  std::vector<int64_t> at;
  for (const auto& j : test::metric_lines(dir / "run"))
    if (j.contains("val_loss")) at.push_back(j["step"].get<int64_t>());
  EXPECT_EQ(at, (std::vector<int64_t>{2, 4, 6, 8, 10, 12, 14, 16, 18, 20}));
  EXPECT_HAS(r.output, "validation every 2 steps (10% of the run: train.eval_every=-1)");
  // No validation split: none, and no complaint.
  const CommandResult none = temper("train " + (dir / "run.yaml").string() + " train.progress=plain "
                                    "data.val_fraction=0 out_dir=" + (dir / "none").string());
  ASSERT_EQ(none.status, 0) << none.output;
  for (const auto& j : test::metric_lines(dir / "none")) EXPECT_FALSE(j.contains("val_loss"));
}

// `n` conversations; every `long_every`-th has a long reply (about 300 bytes = tokens).
void write_chats(const fs::path& path, int n, int long_every) {
  std::ofstream f(path);
  for (int i = 0; i < n; ++i) {
    const std::string reply = i % long_every == 0 ? std::string(300, 'x') : fmt::format("{} + 1 = {}.", i, i + 1);
    nlohmann::json messages = {{{"role", "user"}, {"content", fmt::format("What is {} + 1?", i)}},
                               {{"role", "assistant"}, {"content", reply}}};
    f << nlohmann::json({{"messages", messages}}).dump() << "\n";
  }
}

TEST(DataCli, LongConversationsAreLeftOutAndCountedNeverSplit) {
  const fs::path dir = test::temp_dir("long_chats");
  const fs::path model = test::write_byte_tokenizer_model(dir);
  write_chats(dir / "chat.jsonl", 60, 4);  // 15 long ones
  const std::string prepare = "prepare " + (dir / "chat.jsonl").string() + " --model " +
                              model.string() + " --seed 1 --val-fraction 0.2 --out ";
  const CommandResult p = temper(prepare + (dir / "chat.h5").string());
  ASSERT_EQ(p.status, 0) << p.output;
  EXPECT_HAS(p.output, "60 documents (12 validation)");
  EXPECT_TRUE(std::regex_search(p.output, std::regex("longest document 3[0-9][0-9] tokens; documents "
                                                     "longer than a length: 15 > 256, 0 > 512")))
      << p.output;
  // --max-tokens leaves long conversations out instead of cutting their replies.
  const CommandResult cut = temper(prepare + (dir / "short.h5").string() + " --max-tokens 200");
  ASSERT_EQ(cut.status, 0) << cut.output;
  EXPECT_HAS(cut.output, "45 documents");
  EXPECT_HAS(cut.output, "15 conversations longer than --max-tokens 200 left out");
  const CommandResult inspect = temper("inspect " + (dir / "chat.h5").string());
  EXPECT_HAS(inspect.output, "chat template chatml");

  const std::string run = "train " + test::tiny_recipe() + " model.preset= model.path=" + model.string() +
                          " data.source=hdf5 data.path=" + (dir / "chat.h5").string() +
                          " train.steps=2 train.seq_len=128 train.eval_every=1 train.progress=plain";
  for (const char* packing : {"true", "false"}) {
    const CommandResult r = temper(run + " data.packing=" + packing + " out_dir=" + (dir / packing).string());
    ASSERT_EQ(r.status, 0) << r.output;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.output, m, std::regex("([0-9]+) of 48 training and ([0-9]+) of 12 "
                                                          "validation conversations are longer than "
                                                          "train.seq_len=128 tokens")))
        << r.output;
    EXPECT_EQ(std::stoi(m[1]) + std::stoi(m[2]), 15);
  }
  // Nothing left: the error says why, instead of "no target tokens".
  write_chats(dir / "all-long.jsonl", 10, 1);
  ASSERT_EQ(temper("prepare " + (dir / "all-long.jsonl").string() + " --model " + model.string() +
                   " --out " + (dir / "all-long.h5").string()).status, 0);
  const CommandResult none = temper("train " + test::tiny_recipe() + " model.preset= model.path=" +
                                    model.string() + " data.source=hdf5 data.path=" + (dir / "all-long.h5").string() +
                                    " train.steps=2 train.seq_len=64 data.packing=false out_dir=" +
                                    (dir / "none").string());
  EXPECT_EQ(none.status, 1) << none.output;
  EXPECT_HAS(none.output, "every training conversation is longer than train.seq_len=64 tokens");
  EXPECT_HAS(none.output, "raise train.seq_len");
}

}  // namespace
}  // namespace temper
