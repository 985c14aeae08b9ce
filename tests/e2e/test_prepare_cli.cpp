// End to end: `temper prepare` on a chat JSONL with a tiny model directory (a byte-level
// tokenizer.json trained by the `tokenizers` library, SmolLM2's real chat template, a
// tiny Llama config.json; made by tests/reference/prepare_reference.py --tiny-only), then
// `temper train` with data.source=hdf5 on the result: the run works and the loss falls.
// Bad input: clear errors naming file:line, or skipped and counted with --skip-bad.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "support/test_util.h"

namespace temper {
namespace {

namespace fs = std::filesystem;
using Result = test::CommandResult;

Result run_temper(const std::string& args) {
  return test::run_command(std::string(TEMPER_BINARY_DIR) + "/bin/temper " + args);
}

// Arithmetic questions with uniformly styled answers (the style is what training learns).
void write_chat_jsonl(const fs::path& path, int n) {
  std::ofstream f(path);
  Rng rng(rng_stream(42, RngPurpose::Test, 0));
  for (int i = 0; i < n; ++i) {
    const int a = 2 + int(rng.below(60)), b = 2 + int(rng.below(60));
    nlohmann::json messages = nlohmann::json::array();
    if (i % 4 == 0) messages.push_back({{"role", "system"}, {"content", "You add numbers."}});
    messages.push_back({{"role", "user"}, {"content", fmt::format("What is {} plus {}?", a, b)}});
    messages.push_back({{"role", "assistant"},
                        {"content", fmt::format("{} + {} = {}. The answer is {}.", a, b, a + b, a + b)}});
    f << nlohmann::json({{"messages", messages}}).dump() << "\n";
  }
}

fs::path tiny_model(const fs::path& dir) {
  std::string out;
  const int rc = test::run_python("reference/prepare_reference.py", {dir.string(), "--tiny-only"}, &out);
  if (rc != 0) throw std::runtime_error("prepare_reference.py --tiny-only failed:\n" + out);
  return dir / "tiny";
}

TEST(PrepareCli, ChatJsonlPreparesAndTrainsWithFallingLoss) {
  const fs::path dir = test::temp_dir("e2e_prepare_chat");
  fs::path model;
  ASSERT_NO_THROW(model = tiny_model(dir));
  const fs::path jsonl = dir / "chat.jsonl", data = dir / "chat.h5";
  write_chat_jsonl(jsonl, 400);
  Result p = run_temper("prepare " + jsonl.string() + " --model " + model.string() +
                        " --out " + data.string() + " --val-fraction 0.1 --seed 3");
  ASSERT_EQ(p.status, 0) << p.output;
  EXPECT_NE(p.output.find("400 documents (40 validation)"), std::string::npos) << p.output;
  EXPECT_NE(p.output.find("chat format, chat template smollm2"), std::string::npos) << p.output;
  EXPECT_NE(p.output.find("tokens/s"), std::string::npos) << p.output;

  const std::string recipe = std::string(TEMPER_SOURCE_DIR) + "/configs/recipes/tiny.yaml";
  Result r = run_temper("train " + recipe + " model.preset= model.config=" +
                        (model / "config.json").string() + " data.source=hdf5 data.path=" +
                        data.string() + " train.steps=20 train.eval_every=10 train.progress=plain"
                        " train.seq_len=160"  // the conversations are 80-131 tokens, never split
                        " optim.lr=1e-2 out_dir=" + (dir / "run").string());
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream in(dir / "run" / "metrics.jsonl");
  std::vector<double> losses, val;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("val_loss")) val.push_back(j["val_loss"].get<double>());
    else losses.push_back(j["loss"].get<double>());
  }
  ASSERT_EQ(losses.size(), 20u);
  ASSERT_EQ(val.size(), 2u);
  // From about ln(377) ≈ 5.9 on the answers only; the answers' fixed style is quickly learnt.
  EXPECT_GT(losses.front(), 4.5);
  EXPECT_LT(losses.back(), losses.front() - 2.0);
  EXPECT_LT(val.back(), losses.front() - 2.0);
}

TEST(PrepareCli, BadInputIsAClearErrorOrSkippedAndCounted) {
  const fs::path dir = test::temp_dir("e2e_prepare_bad");
  fs::path model;
  ASSERT_NO_THROW(model = tiny_model(dir));
  const fs::path jsonl = dir / "mixed.jsonl";
  write_chat_jsonl(jsonl, 5);
  std::ofstream(jsonl, std::ios::app) << "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n"
                                      << "not json\n";
  const std::string common = "prepare " + jsonl.string() + " --model " + model.string() +
                             " --out " + (dir / "out.h5").string();
  Result stop = run_temper(common);
  EXPECT_EQ(stop.status, 1) << stop.output;
  EXPECT_NE(stop.output.find(jsonl.string() + ":6: \"messages\" has no assistant turn"),
            std::string::npos) << stop.output;
  Result skip = run_temper(common + " --skip-bad");
  EXPECT_EQ(skip.status, 0) << skip.output;
  EXPECT_NE(skip.output.find("5 documents"), std::string::npos) << skip.output;
  EXPECT_NE(skip.output.find("2 bad lines skipped"), std::string::npos) << skip.output;

  Result missing = run_temper("prepare " + (dir / "nope.jsonl").string() + " --model " +
                              model.string() + " --out " + (dir / "x.h5").string());
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find("nope.jsonl"), std::string::npos) << missing.output;
  Result format = run_temper(common + " --format csv");
  EXPECT_EQ(format.status, 1);
  EXPECT_NE(format.output.find("unknown data format 'csv'"), std::string::npos) << format.output;
  Result no_model = run_temper("prepare " + jsonl.string() + " --out " + (dir / "x.h5").string());
  EXPECT_EQ(no_model.status, 1);
  EXPECT_NE(no_model.output.find("--model"), std::string::npos) << no_model.output;
}

}  // namespace
}  // namespace temper
