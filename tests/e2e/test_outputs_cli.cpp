// A run's outputs are complete wherever they are used from: paths are stored absolute, a
// run started from a `temper convert` file needs neither a preset nor the original model
// and still writes the config and tokenizer into final/, an output without a tokenizer
// says so; `temper generate` names the dtypes a backend takes.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "checkpoint/checkpoint.h"
#include "e2e/checkpoint_test_util.h"
#include "support/tokenizer_fixture.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

using test::CommandResult;

// `temper ARGS` run from the directory `cwd`.
CommandResult temper_in(const fs::path& cwd, const std::string& args) {
  return test::run_command(fmt::format("cd {} && OMP_NUM_THREADS=1 {} {}", cwd.string(),
                                       test::temper_bin(), args));
}

#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

const char* kRun = "train.steps=2 checkpoint.every=2 train.eval_every=0 train.progress=plain";

TEST(OutputsCli, ModelPathIsStoredAbsoluteSoExportWorksFromElsewhere) {
  const fs::path dir = test::temp_dir("abs_paths");
  test::write_byte_tokenizer_model(dir);
  const CommandResult r = temper_in(dir, fmt::format("train {} model.preset= model.path=model {} out_dir=run",
                                                     test::tiny_recipe(), kRun));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string model = (dir / "model").string();
  EXPECT_HAS(test::file_bytes(dir / "run" / "config.yaml"), "path: \"" + model + "\"");
  const CheckpointMeta meta = read_checkpoint_meta((dir / "run" / "checkpoints" / "step-00000002.h5").string());
  EXPECT_HAS(meta.config_yaml, "path: \"" + model + "\"");
  EXPECT_EQ(meta.source, model);
  // From another directory the checkpoint still leads to the tokenizer.
  const fs::path elsewhere = test::temp_dir("abs_paths_elsewhere");
  const CommandResult e = temper_in(elsewhere, "export " + (dir / "run" / "checkpoints" / "step-00000002.h5").string() +
                                                   " --to hf --out exported");
  ASSERT_EQ(e.status, 0) << e.output;
  EXPECT_TRUE(fs::exists(elsewhere / "exported" / "tokenizer.json")) << e.output;
  EXPECT_EQ(e.output.find("without a tokenizer"), std::string::npos) << e.output;
}

TEST(OutputsCli, AConvertedModelCarriesItsConfigAndTokenizerIntoFinal) {
  const fs::path dir = test::temp_dir("convert_carries");
  const fs::path model = test::write_byte_tokenizer_model(dir);
  const CommandResult c = temper_in(dir, "convert " + model.string() + " --out converted.h5");
  ASSERT_EQ(c.status, 0) << c.output;
  EXPECT_HAS(c.output, "the config and tokenizer");
  fs::rename(model, dir / "gone");  // the run must not need the original directory
  const CommandResult r = temper_in(dir, fmt::format("train {} model.preset= checkpoint.load=converted.h5 {} out_dir=run",
                                                     test::tiny_recipe(), kRun));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find("without a tokenizer"), std::string::npos) << r.output;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(dir / "run" / "final" / f)) << f;
  EXPECT_EQ(test::file_bytes(dir / "run" / "final" / "tokenizer.json"),
            test::file_bytes(dir / "gone" / "tokenizer.json"));
  EXPECT_HAS(test::file_bytes(dir / "run" / "final" / "config.json"), "\"vocab_size\": 259");
  // The model in final/ generates as a model directory does.
  const CommandResult g = temper_in(dir, "generate run/final --prompt hi --max-new-tokens 2");
  EXPECT_EQ(g.status, 0) << g.output;
  // Without a model anywhere: an error that says what to set.
  const CommandResult none = temper_in(dir, fmt::format("train {} model.preset= {} out_dir=none",
                                                        test::tiny_recipe(), kRun));
  EXPECT_EQ(none.status, 1) << none.output;
  EXPECT_HAS(none.output, "no model: set model.preset, model.config or model.path (or checkpoint.load");
}

TEST(OutputsCli, AnOutputWithoutATokenizerSaysSo) {
  const fs::path dir = test::temp_dir("no_tokenizer");
  const CommandResult r = temper_in(dir, fmt::format("train {} {} out_dir=run", test::tiny_recipe(), kRun));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_HAS(r.output, "run/final: written without a tokenizer");
  const CommandResult e = temper_in(dir, "export run/checkpoints/step-00000002.h5 --to hf --out exported");
  ASSERT_EQ(e.status, 0) << e.output;
  EXPECT_HAS(e.output, "exported: exported without a tokenizer");
  const CommandResult c = temper_in(dir, "convert run/final --out c.h5");
  ASSERT_EQ(c.status, 0) << c.output;
  EXPECT_HAS(c.output, "c.h5: written without a tokenizer");
}

TEST(OutputsCli, GenerateNamesTheDtypesOfTheBackend) {
  const fs::path dir = test::temp_dir("generate_dtype");
  test::write_byte_tokenizer_model(dir);
  const CommandResult r = temper_in(dir, "generate model --prompt hi --backend cpu --dtype bf16");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_HAS(r.output, "--dtype bf16: the cpu backend computes in f32 only; use --dtype f32");
  EXPECT_HAS(r.output, "bf16 / f16 with --backend cuda");
  const CommandResult bad = temper_in(dir, "generate model --prompt hi --dtype fp8");
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_HAS(bad.output, "--dtype fp8: choose f32, bf16 or f16");
}

}  // namespace
}  // namespace temper
