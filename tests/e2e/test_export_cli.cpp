// `temper inspect`, `temper convert` and `temper export` through the binary: a training
// checkpoint exports to exactly the run's final model; a Hugging Face directory converts
// and exports back byte for byte with its tokenizer files; inspect summarises checkpoints
// and token datasets; bad input exits 1 with one error line naming the file (and tensor).
#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/dataset.h"
#include "io/hf_model.h"
#include "io/safetensors.h"
#include "support/test_util.h"

namespace temper {
namespace {

namespace fs = std::filesystem;
using Result = test::CommandResult;

Result run_temper(const std::string& args) {
  return test::run_command(std::string(TEMPER_BINARY_DIR) + "/bin/temper " + args);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

TEST(ExportCli, TrainingCheckpointExportsTheFinalModel) {
  const auto dir = test::temp_dir("e2e_export_train");
  const std::string recipe = std::string(TEMPER_SOURCE_DIR) + "/configs/recipes/tiny.yaml";
  Result r = run_temper("train " + recipe + " train.steps=4 checkpoint.every=4 train.eval_every=0 "
                        "train.progress=plain out_dir=" + dir.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const fs::path ckpt = dir / "checkpoints" / "step-00000004.h5";
  r = run_temper("inspect --verify " + ckpt.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_HAS(r.output, "step 4, tokens seen");
  EXPECT_HAS(r.output, "optimizer AdamW, 4 steps taken");
  EXPECT_HAS(r.output, "model/model.embed_tokens.weight");
  EXPECT_HAS(r.output, "tensors verified");
  r = run_temper("export " + ckpt.string() + " --to hf --out " + (dir / "exported").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_file(dir / "exported" / "model.safetensors"), read_file(dir / "final" / "model.safetensors"));
}

TEST(ExportCli, HfDirectoryConvertsAndExportsBackWithItsTokenizer) {
  const auto dir = test::temp_dir("e2e_convert");
  {  // a bf16 model directory, as our own exporter writes it, plus tokenizer files
    auto cpu = make_backend("cpu");
    ModelConfig c;
    c.vocab_size = 64;
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    Transformer f32(c, *cpu, DType::F32), bf16(c, *cpu, DType::BF16);
    f32.init_weights(3);
    cpu->copy(bf16.params().flat_values(), f32.params().flat_values());
    save_hf_model(bf16, (dir / "hf").string());
    std::ofstream(dir / "hf" / "tokenizer.json") << "{\"model\": {\"type\": \"BPE\"}}\n";
    std::ofstream(dir / "hf" / "tokenizer_config.json") << "{}\n";
  }
  const std::string ckpt = (dir / "model.h5").string();
  Result r = run_temper("convert " + (dir / "hf").string() + " --out " + ckpt);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_HAS(r.output, "(bf16)");
  r = run_temper("inspect " + ckpt);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_HAS(r.output, "optimizer none (model only)");
  EXPECT_HAS(r.output, "bf16 [64, 32]");
  r = run_temper("export " + ckpt + " --out " + (dir / "back").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const SafetensorsFile a = read_safetensors((dir / "hf" / "model.safetensors").string());
  const SafetensorsFile b = read_safetensors((dir / "back" / "model.safetensors").string());
  EXPECT_EQ(b.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, e] : a.tensors) {
    ASSERT_TRUE(b.tensors.count(name)) << name;
    EXPECT_EQ(b.at(name).dtype, "BF16") << name;
    EXPECT_EQ(b.at(name).shape, e.shape) << name;
    EXPECT_TRUE(b.at(name).data == e.data) << name;
  }
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    EXPECT_EQ(read_file(dir / "back" / f), read_file(dir / "hf" / f)) << f;
}

TEST(ExportCli, InspectSummarisesATokenDataset) {
  const auto dir = test::temp_dir("e2e_inspect_data");
  const std::string data = (dir / "data.h5").string();
  ASSERT_EQ(run_temper("prepare --synthetic --docs 40 --out " + data).status, 0);
  const TokenDataset d = read_token_dataset(data);
  Result r = run_temper("inspect " + data);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_HAS(r.output, fmt::format("documents {}", d.documents()));
  EXPECT_HAS(r.output, fmt::format("tokens {}", d.tokens.size()));
  EXPECT_HAS(r.output, "tokenizer fingerprint " + d.tokenizer_fingerprint);
  EXPECT_HAS(r.output, fmt::format("vocab_size {}", d.vocab_size));
}

TEST(ExportCli, BadInputExitsOneNamingTheFile) {
  const auto dir = test::temp_dir("e2e_export_bad");
  auto cpu = make_backend("cpu");
  ModelConfig c;
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  Transformer m(c, *cpu, DType::F32);
  m.init_weights(1);
  save_hf_model(m, (dir / "hf").string());
  const std::string ckpt = (dir / "m.h5").string();
  ASSERT_EQ(run_temper("convert " + (dir / "hf").string() + " --out " + ckpt).status, 0);
  // One flipped byte in the raw data of a tensor.
  const std::string tensor = "model/model.layers.0.mlp.up_proj.weight";
  {
    hid_t f = H5Fopen(ckpt.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t s = H5Dopen2(f, tensor.c_str(), H5P_DEFAULT);
    const haddr_t at = H5Dget_offset(s);
    H5Dclose(s);
    H5Fclose(f);
    std::fstream io(ckpt, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(std::streamoff(at + 3));
    io.put('\x7f');
  }
  std::ofstream(dir / "text.h5") << "hello\n";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"export " + ckpt + " --out " + (dir / "x").string(), {ckpt, tensor, "checksum"}},
      {"inspect --verify " + ckpt, {ckpt, tensor, "checksum"}},
      {"inspect " + (dir / "absent.h5").string(), {"absent.h5", "does not exist"}},
      {"inspect " + (dir / "text.h5").string(), {"text.h5", "not an HDF5 file"}},
      {"export " + (dir / "text.h5").string() + " --out " + (dir / "y").string(), {"text.h5", "not a readable HDF5 file"}},
      {"export " + ckpt + " --to peft --out " + (dir / "z").string(), {"--to peft"}},
      {"convert " + (dir / "nothing").string() + " --out " + (dir / "n.h5").string(), {"nothing", "neither"}},
  };
  for (const auto& [args, needles] : cases) {
    Result r = run_temper(args);
    EXPECT_EQ(r.status, 1) << args << "\n" << r.output;
    EXPECT_HAS(r.output, "error: ");
    for (const std::string& n : needles) EXPECT_HAS(r.output, n);
  }
}

}  // namespace
}  // namespace temper
