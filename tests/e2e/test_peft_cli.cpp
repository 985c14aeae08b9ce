// PEFT end to end through the `temper` binary: a LoRA run on a Hugging Face base leaves a
// PEFT adapter in final/ and checkpoints that hold only the adapters; export --to peft,
// merge, generate (from the adapter directory, with --adapter, and from the merge) and
// model.adapter (continuing an adapter) work on them; a resumed PEFT run is bit-exact and
// a changed base is refused; partial fine-tuning exports the whole model; bad PEFT input
// is a clear error naming the key, module or file.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoint/base.h"
#include "data/model_tokenizer.h"
#include "checkpoint_test_util.h"
#include "generate/generate.h"
#include "io/hf_model.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "support/tokenizer_fixture.h"

namespace temper {
namespace {

namespace fs = std::filesystem;
using test::CommandResult;

CommandResult temper(const std::string& args) {
  return test::run_command("export OMP_NUM_THREADS=1; " + test::temper_bin() + " " + args);
}

// The tiny preset as a Hugging Face directory with random weights and a byte tokenizer.
fs::path make_base(const std::string& name, uint64_t seed) {
  const fs::path dir = test::temp_dir(name) / "base";
  fs::create_directories(dir);
  auto cpu = make_backend("cpu");
  Transformer m(load_hf_config(std::string(TEMPER_SOURCE_DIR) + "/configs/models/tiny.json"), *cpu,
                DType::F32);
  m.init_weights(seed);
  save_hf_model(m, dir.string());
  test::write_byte_tokenizer(dir);
  return dir;
}

const std::string kLora =
    "peft.method=lora peft.r=4 peft.alpha=8 peft.dropout=0.1 peft.target_modules=all-linear";

std::string lora_run(const fs::path& out, const fs::path& base, const std::string& args) {
  return fmt::format("train {} out_dir={} model.preset= model.path={} train.eval_every=0 "
                     "train.progress=plain optim.lr=1e-2 {} {}",
                     test::tiny_recipe(), out.string(), base.string(), kLora, args);
}

// b/checkpoints holds a's step-3 checkpoint, as latest: a run in b resumes from it.
void copy_step3_checkpoint(const fs::path& a, const fs::path& b) {
  fs::create_directories(b / "checkpoints");
  fs::copy_file(a / "checkpoints" / "step-00000003.h5", b / "checkpoints" / "step-00000003.h5");
  std::ofstream(b / "checkpoints" / "latest") << "step-00000003.h5\n";
}

std::map<std::string, std::vector<float>> tensors_of(const fs::path& file) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, t] : read_safetensors(file.string()).tensors) out[name] = t.to_f32();
  return out;
}

// The text `temper generate` samples (temperature 1, a fixed seed: deterministic, and it
// follows small changes of the distribution that greedy decoding of a tiny model hides).
std::string generated(const std::string& model_and_args) {
  const CommandResult r = temper("generate " + model_and_args +
                                 " --prompt hello --max-new-tokens 24 --temperature 1 --seed 4");
  EXPECT_EQ(r.status, 0) << r.output;
  const std::string out = r.output.substr(r.output.find('\n') + 1);  // after the command line
  return out.substr(0, out.find("prompt:"));  // the text, without the stderr summary
}

TEST(PeftCli, LoraRunLeavesAnAdapterThatExportsMergesGeneratesAndContinues) {
  const fs::path base = make_base("peft_cli_base", 5);
  const fs::path root = base.parent_path(), run = root / "run";
  CommandResult r = temper(lora_run(run, base, "train.steps=6 checkpoint.every=3"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("peft lora r=4"), std::string::npos) << r.output;
  const auto losses = test::step_losses(run);
  ASSERT_EQ(losses.size(), 6u);
  EXPECT_LT(losses.at(6), losses.at(1)) << "the adapters should learn something";

  // final/ is a PEFT adapter directory with the base's tokenizer, not a model.
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"})
    EXPECT_TRUE(fs::exists(run / "final" / f)) << f;
  EXPECT_FALSE(fs::exists(run / "final" / "model.safetensors"));
  const nlohmann::json cfg = nlohmann::json::parse(test::file_bytes(run / "final" / "adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["base_model_name_or_path"], fs::absolute(base).lexically_normal().string());

  // The checkpoint holds the adapters and refers to the base.
  const fs::path ckpt = run / "checkpoints" / "step-00000006.h5";
  r = temper("inspect --verify " + ckpt.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("lora_A.weight"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("self_attn.q_proj.weight "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("frozen base (not stored here): " + fs::absolute(base).lexically_normal().string()),
            std::string::npos) << r.output;

  // export --to peft gives final/'s adapter; --to hf points to peft and merge.
  r = temper("export " + ckpt.string() + " --to peft --out " + (root / "exported").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(tensors_of(root / "exported" / "adapter_model.safetensors") ==
              tensors_of(run / "final" / "adapter_model.safetensors")) << "the export differs from final/";
  r = temper("export " + ckpt.string() + " --to hf --out " + (root / "nope").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("temper merge"), std::string::npos) << r.output;

  // merge: a model directory with the tokenizer; generation agrees across all three forms.
  r = temper("merge " + ckpt.string() + " --out " + (root / "merged").string());
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"})
    EXPECT_TRUE(fs::exists(root / "merged" / f)) << f;
  const std::string from_final = generated((run / "final").string());
  EXPECT_EQ(generated(base.string() + " --adapter " + (run / "final").string()), from_final);
  EXPECT_EQ(generated((root / "merged").string()), from_final);
  EXPECT_NE(generated(base.string()), from_final) << "the adapter should change the model";

  // model.adapter continues the adapter: the first step already has the trained loss, and
  // with lr 0 the adapter comes out as it went in.
  r = temper(lora_run(root / "continued", base,
                      "train.steps=1 optim.lr=0 optim.warmup_steps=0 model.adapter=" + (run / "final").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_LT(test::step_losses(root / "continued").at(1), losses.at(1));
  EXPECT_TRUE(tensors_of(root / "continued" / "final" / "adapter_model.safetensors") ==
              tensors_of(run / "final" / "adapter_model.safetensors")) << "lr 0 changed the adapter";

  // A base that changed since the checkpoint is refused, naming it.
  const fs::path other = make_base("peft_cli_base_changed", 6);
  fs::copy_file(other / "model.safetensors", base / "model.safetensors",
                fs::copy_options::overwrite_existing);
  // Forced past the longer schedule, still refused for the base.
  r = temper(lora_run(run, base, "train.steps=9 checkpoint.every=3 checkpoint.resume=force"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("frozen base weights differ"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(base.string()), std::string::npos) << r.output;
}

// A copy of a run's step-3 checkpoint resumed to step 6: the resumed steps and the final
// adapter are bit-identical to the uninterrupted run (DoRA with dropout: the masks and the
// AdamW state restore).
TEST(PeftCli, ResumedPeftRunIsBitExact) {
  const fs::path a = test::temp_dir("peft_resume_a"), b = test::temp_dir("peft_resume_b");
  const std::string args = kLora + " peft.use_dora=true optim.lr=1e-2 train.steps=6 checkpoint.every=3";
  ASSERT_EQ(test::run_command(test::train_cmd(a, args)).status, 0);
  copy_step3_checkpoint(a, b);
  const CommandResult resumed = test::run_command(test::train_cmd(b, args));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming from"), std::string::npos) << resumed.output;
  test::expect_same_losses(test::step_losses(b), test::step_losses(a), 4, 6, "resumed DoRA run");
  EXPECT_TRUE(test::file_bytes(a / "final" / "adapter_model.safetensors") ==
              test::file_bytes(b / "final" / "adapter_model.safetensors"))
      << "the resumed run's adapter differs";
  // A base drawn from another seed is not the one the checkpoint was trained on: refused as
  // a config change, and forced, for the base.
  const CommandResult changed = test::run_command(test::train_cmd(b, args + " train.steps=9 seed=99"));
  EXPECT_EQ(changed.status, 1) << changed.output;
  EXPECT_NE(changed.output.find("seed: 1234 -> 99"), std::string::npos) << changed.output;
  const CommandResult other =
      test::run_command(test::train_cmd(b, args + " train.steps=9 seed=99 checkpoint.resume=force"));
  EXPECT_EQ(other.status, 1) << other.output;
  EXPECT_NE(other.output.find("frozen base weights differ"), std::string::npos) << other.output;
}

// QLoRA (NF4 base, double quantization): a resumed run is bit-exact, and `temper merge`
// folds the adapter onto the dequantized base: the merged model's logits are the
// checkpoint's (NF4 + LoRA, unmerged).
TEST(PeftCli, QloraResumesBitExactAndMergesOntoTheDequantizedBase) {
  const fs::path a = test::temp_dir("qlora_resume_a"), b = test::temp_dir("qlora_resume_b");
  const std::string args = kLora + " model.quantize=nf4 model.hidden_size=128 model.intermediate_size=256 "
                           "optim.lr=1e-2 train.steps=6 checkpoint.every=3";
  const CommandResult full = test::run_command(test::train_cmd(a, args));
  ASSERT_EQ(full.status, 0) << full.output;
  copy_step3_checkpoint(a, b);
  const CommandResult resumed = test::run_command(test::train_cmd(b, args));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  test::expect_same_losses(test::step_losses(b), test::step_losses(a), 4, 6, "resumed QLoRA run");

  const fs::path ckpt = a / "checkpoints" / "step-00000006.h5", merged = a / "merged";
  const CommandResult m = temper("merge " + ckpt.string() + " --out " + merged.string());
  ASSERT_EQ(m.status, 0) << m.output;
  auto cpu = make_backend("cpu");
  std::unique_ptr<Transformer> adapted = load_checkpoint_model(ckpt.string(), *cpu);
  EXPECT_GT(adapted->params().quantized_numel(), 0);
  auto plain = load_model_for_generation(merged.string(), *cpu, DType::F32);
  const MicroBatch batch = test::packed_batch(adapted->config().vocab_size, 2);
  EXPECT_LE(test::rel_error(plain->logits(batch), adapted->logits(batch)), 1e-5);
}

// Soft prompts and bottleneck adapters: a run resumed from its step-3 checkpoint ends with
// the bit-identical adapter file; `temper export --to peft` writes the same file as final/;
// `temper merge` refuses them (they are not weights).
class PeftCliMethods : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(PeftCliMethods, ResumeIsBitExactExportEqualsFinalMergeRefuses) {
  const auto& [tag, method] = GetParam();
  const fs::path a = test::temp_dir("peft_method_a_" + tag), b = test::temp_dir("peft_method_b_" + tag);
  const std::string args = method + " optim.lr=1e-2 train.steps=6 checkpoint.every=3";
  ASSERT_EQ(test::run_command(test::train_cmd(a, args)).status, 0);
  copy_step3_checkpoint(a, b);
  const CommandResult resumed = test::run_command(test::train_cmd(b, args));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  test::expect_same_losses(test::step_losses(b), test::step_losses(a), 4, 6, "resumed " + tag);
  const std::string file = tag == "adapter" ? "adapter.safetensors" : "adapter_model.safetensors";
  EXPECT_TRUE(test::file_bytes(a / "final" / file) == test::file_bytes(b / "final" / file))
      << "the resumed run's adapter differs";
  const fs::path ckpt = a / "checkpoints" / "step-00000006.h5";
  const CommandResult e = temper("export " + ckpt.string() + " --to peft --out " + (a / "exported").string());
  ASSERT_EQ(e.status, 0) << e.output;
  EXPECT_TRUE(test::file_bytes(a / "exported" / file) == test::file_bytes(a / "final" / file));
  const CommandResult m = temper("merge " + ckpt.string() + " --out " + (a / "merged").string());
  EXPECT_EQ(m.status, 1) << m.output;
  EXPECT_NE(m.output.find("cannot be merged into the base weights"), std::string::npos) << m.output;
}

INSTANTIATE_TEST_SUITE_P(
    Methods, PeftCliMethods,
    ::testing::Values(
        std::pair{std::string("prompt_tuning"), std::string("peft.method=prompt_tuning peft.num_virtual_tokens=4")},
        std::pair{std::string("p_tuning"), std::string("peft.method=p_tuning peft.num_virtual_tokens=4 "
                                                        "peft.encoder_hidden_size=32")},
        std::pair{std::string("prefix_tuning"), std::string("peft.method=prefix_tuning peft.num_virtual_tokens=4 "
                                                             "peft.prefix_projection=true peft.encoder_hidden_size=32")},
        std::pair{std::string("p_tuning_v2"), std::string("peft.method=prefix_tuning peft.num_virtual_tokens=4")},
        std::pair{std::string("adapter"), std::string("peft.method=adapter peft.reduction_factor=4 "
                                                       "peft.adapter_placement=pfeiffer")}),
    [](const auto& info) { return info.param.first; });

// Prompt tuning's TEXT init: the table starts as the embeddings of the text's tokens
// (repeated to fill it), as PEFT's prompt_tuning_init_text; the config key is named when
// the virtual tokens push a document past max_position_embeddings.
TEST(PeftCli, PromptTuningStartsFromTheTextsEmbeddings) {
  const fs::path base = make_base("peft_init_text", 6);
  const fs::path out = base.parent_path() / "run";
  const std::string run = fmt::format(
      "train {} out_dir={} model.preset= model.path={} train.eval_every=0 train.progress=plain "
      "train.steps=1 optim.lr=0 peft.method=prompt_tuning peft.num_virtual_tokens=5 "
      "peft.init_text=abc",
      test::tiny_recipe(), out.string(), base.string());
  const CommandResult r = temper(run);
  ASSERT_EQ(r.status, 0) << r.output;
  const std::vector<float> table = tensors_of(out / "final" / "adapter_model.safetensors").at("prompt_embeddings");
  const std::vector<float> embed = tensors_of(base / "model.safetensors").at("model.embed_tokens.weight");
  const ModelTokenizer mt = load_model_tokenizer(base);
  std::vector<int32_t> ids = mt.tokenizer.encode("abc");
  if (mt.add_bos && mt.bos_id) ids.insert(ids.begin(), *mt.bos_id);
  const size_t C = table.size() / 5;
  for (size_t t = 0; t < 5; ++t) {
    const int32_t id = ids[t % ids.size()];
    EXPECT_EQ(std::vector<float>(table.begin() + t * C, table.begin() + (t + 1) * C),
              std::vector<float>(embed.begin() + size_t(id) * C, embed.begin() + size_t(id + 1) * C))
        << "virtual token " << t << " (text token " << id << ")";
  }
  const CommandResult too_many = temper(run + " peft.num_virtual_tokens=2040 out_dir=" + (out.string() + "_long"));
  EXPECT_EQ(too_many.status, 1) << too_many.output;
  EXPECT_NE(too_many.output.find("peft.num_virtual_tokens"), std::string::npos) << too_many.output;
  EXPECT_NE(too_many.output.find("max_position_embeddings"), std::string::npos) << too_many.output;
}

TEST(PeftCli, PartialRunCheckpointsAndExportsTheWholeModel) {
  const fs::path dir = test::temp_dir("peft_partial");
  const CommandResult r = test::run_command(test::train_cmd(
      dir, "peft.method=partial peft.trainable=[last:1,norm] train.steps=3 checkpoint.every=3"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("peft partial"), std::string::npos) << r.output;
  const fs::path out = dir / "exported";
  const CommandResult e = temper("export " + (dir / "checkpoints" / "step-00000003.h5").string() + " --out " + out.string());
  ASSERT_EQ(e.status, 0) << e.output;
  EXPECT_TRUE(test::file_bytes(out / "model.safetensors") == test::file_bytes(dir / "final" / "model.safetensors"))
      << "the export differs from final/";
}

TEST(PeftCli, BadPeftInputIsAClearError) {
  const fs::path base = make_base("peft_cli_bad", 5);
  const fs::path root = base.parent_path();
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const CommandResult r = temper(lora_run(root / "bad", base, "train.steps=1 " + args));
    EXPECT_EQ(r.status, 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  };
  expect_error("peft.target_modules=[q_proj,qkv_proj]", "'qkv_proj' matches no module");
  expect_error("peft.r=0", "peft.r");
  expect_error("peft.use_dora=true peft.target_modules=[embed_tokens]",
               "'embed_tokens' is an embedding, not a linear projection: DoRA");
  expect_error("peft.method=partial peft.trainable=[bias]", "rule 'bias' matches no parameter");

  // An adapter directory: for another base (other shapes), and of an unknown peft_type.
  ASSERT_EQ(temper(lora_run(root / "good", base, "train.steps=1")).status, 0);
  const fs::path adapter = root / "good" / "final";
  expect_error("model.hidden_size=32 model.path= model.preset=tiny model.adapter=" + adapter.string(),
               "has shape");
  const fs::path foreign = root / "foreign";
  fs::create_directories(foreign);
  fs::copy_file(adapter / "adapter_model.safetensors", foreign / "adapter_model.safetensors");
  nlohmann::json cfg = nlohmann::json::parse(test::file_bytes(adapter / "adapter_config.json"));
  cfg["peft_type"] = "LOHA";
  std::ofstream(foreign / "adapter_config.json") << cfg.dump();
  expect_error("model.adapter=" + foreign.string(), "peft_type \"LOHA\" is not supported");
}

}  // namespace
}  // namespace temper
