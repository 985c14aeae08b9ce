// PEFT under every layout, through the real launcher: LoRA, DoRA, QLoRA (all linear layers,
// dropout 0.1, so the dropout masks must not depend on the layout either), IA3, prompt
// tuning, P-tuning, prefix tuning with and without projection, bottleneck adapters on the tiny
// model, five steps of one global batch of six micro-batches, as tensor parallelism (tp2),
// data parallelism with accumulation 3 (dp2), tp2 × dp2 with ZeRO-2, and dp2 with ZeRO-1
// and activation recompute: the losses, gradient norms and final adapters (gathered to
// full tensors in final/adapter_model.safetensors) equal one process's within fp32
// reduction-order noise.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "e2e/checkpoint_test_util.h"
#include "io/safetensors.h"
#include "support/test_util.h"

namespace temper {
namespace {

// Losses and adapters: as the full fine-tuning layouts (test_data_parallel_invariance).
// Gradient norms at every step within test::kLayoutGradNormBound (2e-7): clipping and
// AdamW hide a wrong gradient scale in losses and parameters, not in the norm.
constexpr double kBound = 1e-5;

struct PeftLayout {
  int ranks, tp, accum, zero;
  bool recompute;
  const char* tag;
};

// The method's keys: IA3 with PEFT's default targets (k, v and down_proj, the last scaled
// at its input); soft prompts of 4 virtual tokens (encoders 32 wide); bottleneck adapters
// 1/4 of the hidden width.
std::string method_args(const std::string& method) {
  if (method == "ia3") return "peft.method=ia3";
  if (method == "prompt_tuning") return "peft.method=prompt_tuning peft.num_virtual_tokens=4";
  if (method == "p_tuning") return "peft.method=p_tuning peft.num_virtual_tokens=4 peft.encoder_hidden_size=32";
  if (method == "prefix_tuning")
    return "peft.method=prefix_tuning peft.num_virtual_tokens=4 peft.prefix_projection=true "
           "peft.encoder_hidden_size=32";
  if (method == "p_tuning_v2") return "peft.method=prefix_tuning peft.num_virtual_tokens=4";
  if (method == "adapter") return "peft.method=adapter peft.reduction_factor=4";
  return fmt::format("peft.method=lora peft.r=4 peft.alpha=8 peft.dropout=0.1 "
                     "peft.target_modules=all-linear peft.use_dora={}", method == "dora");
}

// The adapter file of final/: AdapterHub's for bottleneck adapters, else PEFT's.
std::string adapter_file(const std::string& dir, const std::string& method) {
  return dir + (method == "adapter" ? "/final/adapter.safetensors" : "/final/adapter_model.safetensors");
}

std::string run(const PeftLayout& l, const std::string& method, const std::string& extra = "",
                std::filesystem::path dir = {}) {
  if (dir.empty()) dir = test::temp_dir(fmt::format("peft_{}_{}", method, l.tag));
  const std::string cmd = fmt::format(
      "OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "timeout 300 mpirun -np {} --oversubscribe --bind-to none {}/bin/temper train "
      "{}/configs/recipes/tiny.yaml out_dir={} train.steps=5 train.grad_accum={} "
      "train.eval_every=0 train.progress=plain train.recompute={} parallel.zero={} parallel.tp={} "
      "parallel.timeout_s=120 optim.lr=1e-2 {} {} {}",
      l.ranks, TEMPER_BINARY_DIR, TEMPER_SOURCE_DIR, dir.string(), l.accum, l.recompute, l.zero,
      l.tp,
      method_args(method),
      // QLoRA: NF4 needs input widths (per tp rank) that are multiples of 64
      method == "qlora" ? "model.quantize=nf4 model.hidden_size=128 model.head_dim=32 model.intermediate_size=256" : "",
      extra);
  const test::CommandResult r = test::run_command(cmd);
  EXPECT_EQ(r.status, 0) << r.output;
  return dir.string();
}

std::vector<float> losses(const std::string& dir) {
  std::vector<float> v;
  for (const auto& [step, loss] : test::step_losses(dir)) v.push_back(float(loss));
  return v;
}

class PeftLayouts : public ::testing::TestWithParam<std::string> {};

TEST_P(PeftLayouts, MatchOneProcess) {
  const std::string method = GetParam();
  const std::string ref = run({1, 1, 6, 0, false, "1x6"}, method);
  const std::vector<float> ref_losses = losses(ref);
  ASSERT_EQ(ref_losses.size(), 5u);
  const SafetensorsFile ref_adapter = read_safetensors(adapter_file(ref, method));
  ASSERT_GT(ref_adapter.tensors.size(), 0u);
  for (const PeftLayout& l : {PeftLayout{2, 2, 6, 0, false, "tp2"}, PeftLayout{2, 1, 3, 0, false, "dp2_accum3"},
                              PeftLayout{4, 2, 3, 2, false, "tp2_dp2_zero2"},
                              PeftLayout{2, 1, 3, 1, true, "dp2_zero1_recompute"}}) {
    SCOPED_TRACE(method + " " + l.tag);
    const std::string dir = run(l, method);
    EXPECT_LE(test::rel_error(losses(dir), ref_losses), kBound) << "losses";
    const double worst = test::expect_grad_norms_close(dir, ref, 1, 5, test::kLayoutGradNormBound, method + " " + l.tag);
    std::cout << method << " " << l.tag << ": largest relative grad_norm difference " << worst << "\n";
    const SafetensorsFile adapter = read_safetensors(adapter_file(dir, method));
    ASSERT_EQ(adapter.tensors.size(), ref_adapter.tensors.size());
    for (const auto& [name, t] : ref_adapter.tensors)
      EXPECT_LE(test::rel_error(adapter.at(name).to_f32(), t.to_f32()), kBound) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, PeftLayouts,
                         ::testing::Values("lora", "dora", "qlora", "ia3", "prompt_tuning", "p_tuning",
                                           "prefix_tuning", "p_tuning_v2", "adapter"));

// A DoRA checkpoint written by dp2 × ZeRO-2 at step 3 continues under tp2 (the adapters and
// their AdamW state resharded on load, the frozen base found by its checksum) to step 5
// as one process runs all five steps.
TEST(PeftResume, CheckpointReshardsUnderAnotherLayout) {
  const std::string ckpt = "checkpoint.every=3 checkpoint.keep=5";
  const std::string ref = run({1, 1, 6, 0, false, "resume_ref"}, "dora", ckpt);
  const std::string saved = run({2, 1, 3, 2, false, "resume_dp2_zero2"}, "dora", ckpt);
  const auto dir = test::temp_dir("peft_resume_tp2");
  std::filesystem::create_directories(dir / "checkpoints");
  std::filesystem::copy_file(std::filesystem::path(saved) / "checkpoints" / "step-00000003.h5",
                             dir / "checkpoints" / "step-00000003.h5");
  std::ofstream(dir / "checkpoints" / "latest") << "step-00000003.h5\n";
  run({2, 2, 6, 0, false, "resume_tp2"}, "dora", ckpt, dir);
  const std::vector<float> ref_losses = losses(ref), got = losses(dir.string());
  ASSERT_EQ(got.size(), 2u);  // steps 4 and 5
  EXPECT_LE(test::rel_error(got, {ref_losses[3], ref_losses[4]}), kBound);
  test::expect_grad_norms_close(dir, ref, 4, 5, test::kLayoutGradNormBound, "resharded DoRA resume");
  const SafetensorsFile a = read_safetensors(ref + "/final/adapter_model.safetensors");
  const SafetensorsFile b = read_safetensors(dir.string() + "/final/adapter_model.safetensors");
  for (const auto& [name, t] : a.tensors)
    EXPECT_LE(test::rel_error(b.at(name).to_f32(), t.to_f32()), kBound) << name;
}

}  // namespace
}  // namespace temper
