// End to end through the `temper` binary: a tiny training run writes metrics.jsonl with
// the documented fields and its loss falls; config mistakes exit 1 with a message that
// names the key and suggests the right one.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "support/test_util.h"

namespace temper {
namespace {

using Result = test::CommandResult;

Result run_temper(const std::string& args) {
  return test::run_command(std::string(TEMPER_BINARY_DIR) + "/bin/temper " + args);
}

const std::string kRecipe = std::string(TEMPER_SOURCE_DIR) + "/configs/recipes/tiny.yaml";

TEST(TrainCli, TinyRunWritesMetricsAndLossFalls) {
  auto dir = test::temp_dir("e2e_tiny");
  Result r = run_temper("train " + kRecipe + " out_dir=" + dir.string() +
                        " train.steps=30 train.eval_every=10 train.progress=plain");
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream in(dir / "metrics.jsonl");
  ASSERT_TRUE(in) << "no metrics.jsonl";
  std::vector<double> losses, val_losses;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.contains("step")) << line;
    if (j.contains("val_loss")) {
      val_losses.push_back(j["val_loss"].get<double>());
      continue;
    }
    for (const char* key : {"loss", "lr", "grad_norm", "tokens_per_s"})
      ASSERT_TRUE(j.contains(key)) << key << " missing in " << line;
    EXPECT_EQ(j["step"].get<int64_t>(), int64_t(losses.size()) + 1);
    losses.push_back(j["loss"].get<double>());
  }
  ASSERT_EQ(losses.size(), 30u);
  ASSERT_EQ(val_losses.size(), 3u);
  // Starts near uniform over 260 tokens (ln 260 ≈ 5.56) and must fall well below it.
  EXPECT_GT(losses.front(), 5.0);
  EXPECT_LT(losses.back(), losses.front() - 1.5);
  EXPECT_LT(val_losses.back(), val_losses.front());
  // The effective config is saved next to the metrics and loads back as the same run.
  Result show = run_temper("show-config " + (dir / "config.yaml").string());
  EXPECT_EQ(show.status, 0) << show.output;
  EXPECT_NE(show.output.find("steps: 30"), std::string::npos) << show.output;
}

// A run's final model is a Hugging Face directory another run can start from
// (model.path): the second run's first loss is the trained model's, far below the
// ~5.56 of random weights.
TEST(TrainCli, TrainingContinuesFromAHuggingFaceDirectory) {
  auto first = test::temp_dir("e2e_hf_first"), second = test::temp_dir("e2e_hf_second");
  ASSERT_EQ(run_temper("train " + kRecipe + " train.steps=30 train.eval_every=0 train.progress=plain out_dir=" +
                       first.string()).status, 0);
  auto losses = [](const std::filesystem::path& d) {
    std::vector<double> v;
    std::ifstream in(d / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line)["loss"].get<double>());
    return v;
  };
  Result r = run_temper("train " + kRecipe + " model.preset= model.path=" + (first / "final").string() +
                        " train.steps=2 train.eval_every=0 train.progress=plain out_dir=" + second.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("weights from"), std::string::npos) << r.output;
  const auto before = losses(first), after = losses(second);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_LT(after.front(), before.front() - 1.5);
  EXPECT_NEAR(after.front(), before.back(), 0.5);
}

// `temper prepare --synthetic` writes the generated corpus as an HDF5 token dataset;
// training from it (data.source=hdf5) sees the same documents in the same order as the
// built-in source, so the losses are identical.
TEST(TrainCli, Hdf5DatasetTrainsLikeTheBuiltInSource) {
  auto dir = test::temp_dir("e2e_hdf5");
  const std::string data = (dir / "tiny.h5").string();
  Result p = run_temper("prepare --synthetic --docs 400 --min-tokens 16 --max-tokens 96 --seed 1234 --out " + data);
  ASSERT_EQ(p.status, 0) << p.output;
  auto losses = [](const std::filesystem::path& d) {
    std::vector<double> v;
    std::ifstream in(d / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      v.push_back(j.contains("loss") ? j["loss"].get<double>() : j["val_loss"].get<double>());
    }
    return v;
  };
  const std::string common = "train " + kRecipe + " train.steps=4 train.eval_every=2 train.progress=plain";
  ASSERT_EQ(run_temper(common + " out_dir=" + (dir / "a").string()).status, 0);
  Result r = run_temper(common + " data.source=hdf5 data.path=" + data + " out_dir=" + (dir / "b").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(losses(dir / "a"), losses(dir / "b"));
  // A dataset whose vocabulary the model does not cover is refused, naming the file.
  Result small = run_temper(common + " data.source=hdf5 data.path=" + data +
                            " model.vocab_size=200 out_dir=" + (dir / "c").string());
  EXPECT_EQ(small.status, 1);
  EXPECT_NE(small.output.find(data), std::string::npos) << small.output;

  // A model directory whose tokenizer is not the dataset's: refused, naming both.
  ASSERT_EQ(run_temper(common + " out_dir=" + (dir / "m").string()).status, 0);
  const auto model_dir = dir / "m" / "final";
  std::ofstream(model_dir / "tokenizer.json") << R"({"version": "1.0", "added_tokens": [],
    "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
    "trim_offsets": true, "use_regex": true}, "post_processor": null,
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
      "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})";
  Result other = run_temper(common + " model.preset= model.path=" + model_dir.string() +
                            " data.source=hdf5 data.path=" + data + " out_dir=" + (dir / "d").string());
  EXPECT_EQ(other.status, 1) << other.output;
  EXPECT_NE(other.output.find("another tokenizer"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find("tokenizer.json"), std::string::npos) << other.output;
}

TEST(TrainCli, RecomputeRunMatchesPlainRun) {
  auto a = test::temp_dir("e2e_plain"), b = test::temp_dir("e2e_recompute");
  const std::string common = "train " + kRecipe + " train.steps=3 train.eval_every=0 train.progress=plain";
  ASSERT_EQ(run_temper(common + " out_dir=" + a.string()).status, 0);
  ASSERT_EQ(run_temper(common + " train.recompute=true out_dir=" + b.string()).status, 0);
  auto losses = [](const std::filesystem::path& d) {
    std::vector<double> v;
    std::ifstream in(d / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line)["loss"].get<double>());
    return v;
  };
  EXPECT_EQ(losses(a), losses(b));
}

TEST(TrainCli, UnknownKeyOnCommandLineSuggestsTheRightOne) {
  Result r = run_temper("train " + kRecipe + " train.stpes=5");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("train.stpes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("did you mean 'train.steps'"), std::string::npos) << r.output;
}

TEST(TrainCli, UnknownKeyInFileNamesFileAndLine) {
  auto dir = test::temp_dir("e2e_badkey");
  std::ofstream(dir / "typo.yaml") << "model:\n  preset: tiny\noptim:\n  weight_decy: 0.1\n";
  Result r = run_temper("train " + (dir / "typo.yaml").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("optim.weight_decy"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("typo.yaml:4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("did you mean 'optim.weight_decay'"), std::string::npos) << r.output;
  // Nothing close: the valid keys of the section are listed instead.
  std::ofstream(dir / "far.yaml") << "model:\n  preset: tiny\noptim:\n  learning_rate: 0.1\n";
  Result far = run_temper("train " + (dir / "far.yaml").string());
  EXPECT_EQ(far.status, 1) << far.output;
  EXPECT_NE(far.output.find("far.yaml:4"), std::string::npos) << far.output;
  EXPECT_NE(far.output.find("valid keys under 'optim'"), std::string::npos) << far.output;
}

TEST(TrainCli, BadValuesAndMissingThingsAreClearErrors) {
  Result wrong_type = run_temper("train " + kRecipe + " train.steps=many");
  EXPECT_EQ(wrong_type.status, 1);
  EXPECT_NE(wrong_type.output.find("train.steps"), std::string::npos) << wrong_type.output;
  Result preset = run_temper("train " + kRecipe + " model.preset=no-such-model");
  EXPECT_EQ(preset.status, 1);
  EXPECT_NE(preset.output.find("no-such-model"), std::string::npos) << preset.output;
  Result heads = run_temper("train " + kRecipe + " model.num_key_value_heads=3");
  EXPECT_EQ(heads.status, 1);
  EXPECT_NE(heads.output.find("num_key_value_heads"), std::string::npos) << heads.output;
  Result missing = run_temper("train /nonexistent/run.yaml");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find("/nonexistent/run.yaml"), std::string::npos) << missing.output;
}

TEST(BenchCli, ReportsThroughputAndWritesJson) {
  auto dir = test::temp_dir("e2e_bench");
  const std::string json = (dir / "bench.jsonl").string();
  // --peft with the method's own keys after it (peft.trainable is read as partial's), and
  // --profile's per-op table (scripts/gpu-run.sh runs these three on the GPU).
  for (const char* mode : {"", " --peft lora peft.r=4 peft.target_modules=all-linear",
                           " --peft partial peft.trainable=[norm] --profile"}) {
    Result r = run_temper("bench " + kRecipe + " train.grad_accum=1 --steps 2 --warmup 1 --json " +
                          json + mode);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("tokens/s"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("profile:") != std::string::npos,
              std::string(mode).find("--profile") != std::string::npos) << r.output;
  }
  std::ifstream in(json);
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["mode"], "full");
  EXPECT_EQ(rows[1]["mode"], "lora");
  EXPECT_EQ(rows[2]["mode"], "partial");
  EXPECT_FALSE(rows[1].contains("profile"));
  ASSERT_TRUE(rows[2].contains("profile"));
  EXPECT_GT(rows[2]["profile"]["ops"].size(), 10u);
  // Only the norms train: 2 per layer and the final one, hidden_size each.
  EXPECT_EQ(rows[2]["trainable_parameters"].get<int64_t>(), (2 * 2 + 1) * 64);
  EXPECT_LT(rows[1]["trainable_parameters"].get<double>(), rows[0]["trainable_parameters"].get<double>() / 10);
  for (auto& j : rows) {
    EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(j["tflops"].get<double>(), 0.0);
    EXPECT_GT(j["peak_memory_bytes"].get<double>(), 0.0);
  }
  // A frozen base keeps no optimizer state or weight gradients: less memory.
  EXPECT_LT(rows[1]["peak_memory_bytes"].get<double>(), rows[0]["peak_memory_bytes"].get<double>());
}

}  // namespace
}  // namespace temper
