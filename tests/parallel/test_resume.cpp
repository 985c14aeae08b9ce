// Checkpoints across layouts, through `mpirun ... temper train`. Every layout below sees
// the same global batch (4 micro-batches of 4 rows). A 6-step run saves at step 3;
// starting from that checkpoint (checkpoint.load, fresh out_dir):
//  - at the same layout gives the uninterrupted run's losses and final model bit for bit
//    (one process, data parallel with ZeRO-2 and accumulation, tp × dp with ZeRO-2);
//  - at another layout (1 <-> 2 <-> 4 ranks, tp 1 <-> 2, ZeRO 0 <-> 2) gives the
//    one-process run's losses and parameters within the fp32 bound of the invariance
//    tests (test_data_parallel_invariance.cpp), and its gradient norm at every step
//    within test::kLayoutGradNormBound: the checkpoint is resharded on load.
#include <gtest/gtest.h>

#include "e2e/checkpoint_test_util.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

constexpr double kBound = 1e-5;  // as in test_data_parallel_invariance.cpp

struct Layout {
  const char* tag;
  int ranks, accum, zero, tp;
};
constexpr Layout kOne{"1", 1, 4, 0, 1};
constexpr Layout kDp2Zero2{"dp2_zero2", 2, 2, 2, 1};
constexpr Layout kTp2{"tp2", 2, 4, 0, 2};
constexpr Layout kTp2Dp2Zero2{"tp2_dp2_zero2", 4, 2, 2, 2};
constexpr Layout kDp4{"dp4", 4, 1, 0, 1};

// Runs 6 steps at `l` in `dir` (saving at 3 and 6), starting from `load` when given.
void run6(const Layout& l, const fs::path& dir, const std::string& load = "") {
  const std::string cmd = fmt::format(
      "{} timeout 300 mpirun -np {} --oversubscribe --bind-to none {} {} train.steps=6 "
      "train.grad_accum={} parallel.zero={} parallel.tp={} parallel.timeout_s=120 "
      "checkpoint.every=3 checkpoint.keep=5{}",
      test::mpi_env(), l.ranks, test::temper_bin(), test::train_args(dir, ""), l.accum, l.zero,
      l.tp, load.empty() ? "" : " checkpoint.load=" + load);
  const test::CommandResult r = test::run_command(cmd);
  ASSERT_EQ(r.status, 0) << r.output;
}

std::string step3(const fs::path& dir) { return (dir / "checkpoints" / "step-00000003.h5").string(); }

std::vector<float> losses_from(const fs::path& dir, int64_t first) {
  std::vector<float> v;
  for (const auto& [step, loss] : test::step_losses(dir))
    if (step >= first) v.push_back(float(loss));
  return v;
}

void expect_models_close(const fs::path& a, const fs::path& b, const std::string& what) {
  const SafetensorsFile ma = read_safetensors((a / "final" / "model.safetensors").string());
  const SafetensorsFile mb = read_safetensors((b / "final" / "model.safetensors").string());
  ASSERT_EQ(ma.tensors.size(), mb.tensors.size()) << what;
  for (const auto& [name, t] : mb.tensors)
    EXPECT_LE(test::rel_error(ma.at(name).to_f32(), t.to_f32()), kBound) << what << " " << name;
}

TEST(Resume, SameLayoutIsBitExact) {
  for (const Layout& l : {kOne, kDp2Zero2, kTp2Dp2Zero2}) {
    SCOPED_TRACE(l.tag);
    const fs::path full = test::temp_dir(std::string("resume_full_") + l.tag);
    const fs::path resumed = test::temp_dir(std::string("resume_same_") + l.tag);
    run6(l, full);
    run6(l, resumed, step3(full));
    const auto got = test::step_losses(resumed);
    ASSERT_EQ(got.size(), 3u);
    test::expect_same_losses(got, test::step_losses(full), 4, 6, l.tag);
    test::expect_grad_norms_close(resumed, full, 4, 6, 0.0, l.tag);  // bit for bit
    EXPECT_TRUE(test::file_bytes(resumed / "final" / "model.safetensors") ==
                test::file_bytes(full / "final" / "model.safetensors"))
        << l.tag << ": final models differ";
  }
}

TEST(Resume, OtherLayoutsReshardOnLoad) {
  const fs::path ref = test::temp_dir("reshard_ref");
  run6(kOne, ref);
  const std::vector<float> ref_losses = losses_from(ref, 4);
  ASSERT_EQ(ref_losses.size(), 3u);
  // Checkpoints written at these layouts (the one-process one is `ref`'s).
  std::map<std::string, fs::path> saved = {{kOne.tag, ref}};
  for (const Layout& l : {kDp2Zero2, kTp2, kTp2Dp2Zero2}) {
    saved[l.tag] = test::temp_dir(std::string("reshard_save_") + l.tag);
    run6(l, saved[l.tag]);
  }
  const std::pair<Layout, Layout> moves[] = {
      {kOne, kDp2Zero2},           // 1 -> 2 ranks, ZeRO 0 -> 2
      {kDp2Zero2, kTp2Dp2Zero2},   // 2 -> 4 ranks, tp 1 -> 2
      {kTp2Dp2Zero2, kOne},        // 4 -> 1, tp 2 -> 1, ZeRO 2 -> 0
      {kTp2, kDp4},                // tp 2 -> 1, 2 -> 4 ranks
  };
  for (const auto& [from, to] : moves) {
    const std::string what = fmt::format("{} -> {}", from.tag, to.tag);
    SCOPED_TRACE(what);
    const fs::path dir = test::temp_dir(fmt::format("reshard_{}_to_{}", from.tag, to.tag));
    run6(to, dir, step3(saved[from.tag]));
    const std::vector<float> got = losses_from(dir, 4);
    ASSERT_EQ(got.size(), 3u) << what;
    EXPECT_LE(test::rel_error(got, ref_losses), kBound) << what << " losses";
    const double worst = test::expect_grad_norms_close(dir, ref, 4, 6, test::kLayoutGradNormBound, what);
    std::printf("[ %s ] grad_norm: largest relative difference %.2e\n", what.c_str(), worst);
    expect_models_close(dir, ref, what);
  }
}

}  // namespace
}  // namespace temper
