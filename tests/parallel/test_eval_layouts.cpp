// `temper eval` under every layout, through mpirun: one process, dp2, tp2 and tp2 × dp2
// give the same loss (within fp32 reduction order) and count the same target tokens, for
// a full fine-tuned Hugging Face directory, a LoRA adapter directory on top of it, and
// the LoRA run's checkpoint. The three ways of naming the same LoRA model agree.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "e2e/checkpoint_test_util.h"
#include "support/test_util.h"

namespace temper {
namespace {

namespace fs = std::filesystem;

// Losses from different layouts: sums of the same per-token terms in another order.
constexpr double kBound = 1e-5;

struct Layout {
  int ranks, tp;
  const char* tag;
};

// A full fine-tuning run (A), a LoRA run on A's final/ with a checkpoint at its last step
// (B), and a synthetic dataset with a quarter of its documents held out: made once.
struct Runs {
  fs::path data, full, lora;
};

const Runs& runs() {
  static const Runs r = [] {
    Runs x;
    const fs::path dir = test::temp_dir("eval_layouts");
    x.data = dir / "data.h5";
    x.full = dir / "full";
    x.lora = dir / "lora";
    const auto prepare = test::run_command(fmt::format(
        "{} prepare --synthetic --docs 80 --val-fraction 0.25 --out {}", test::temper_bin(), x.data.string()));
    EXPECT_EQ(prepare.status, 0) << prepare.output;
    const auto full = test::run_command(test::train_cmd(x.full, "train.steps=4", "timeout 300"));
    EXPECT_EQ(full.status, 0) << full.output;
    const auto lora = test::run_command(test::train_cmd(
        x.lora,
        fmt::format("model.preset= model.path={}/final train.steps=4 optim.lr=1e-2 peft.method=lora peft.r=4 "
                    "peft.alpha=8 peft.target_modules=all-linear checkpoint.every=4",
                    x.full.string()),
        "timeout 300"));
    EXPECT_EQ(lora.status, 0) << lora.output;
    return x;
  }();
  return r;
}

// `temper eval MODEL --data ... --json ARGS` under mpirun in layout l: its JSON line.
nlohmann::json eval(const Layout& l, const std::string& model, const std::string& args = "") {
  const std::string cmd = fmt::format(
      "{} timeout 300 mpirun -np {} --oversubscribe --bind-to none {} eval {} --data {} --tp {} "
      "--batch-size 2 --json {}",
      test::mpi_env(), l.ranks, test::temper_bin(), model, runs().data.string(), l.tp, args);
  const test::CommandResult r = test::run_command(cmd);
  EXPECT_EQ(r.status, 0) << r.output;
  // The last line that is a JSON object (rank 0 prints it; warnings go before it).
  const size_t at = r.output.rfind("\n{");
  if (at == std::string::npos) {
    ADD_FAILURE() << "no JSON line in:\n" << r.output;
    return nlohmann::json::object();
  }
  return nlohmann::json::parse(r.output.substr(at + 1, r.output.find('\n', at + 1) - at - 1));
}

void expect_same(const nlohmann::json& got, const nlohmann::json& want, double bound) {
  EXPECT_EQ(got.at("target_tokens"), want.at("target_tokens"));
  EXPECT_EQ(got.at("documents"), want.at("documents"));
  const double a = got.at("loss"), b = want.at("loss");
  EXPECT_LE(std::abs(a - b), bound * std::abs(b)) << a << " vs " << b;
}

const Layout kOne{1, 1, "one process"};

TEST(EvalLayouts, EveryLayoutGivesOneProcesssLoss) {
  for (const std::string model : {runs().full.string() + "/final", runs().lora.string() + "/final"}) {
    const nlohmann::json ref = eval(kOne, model);
    ASSERT_TRUE(ref.contains("loss"));
    EXPECT_GT(ref.at("target_tokens").get<int64_t>(), 0);
    EXPECT_EQ(ref.at("split"), "val");
    for (const Layout& l : {Layout{2, 1, "dp2"}, Layout{2, 2, "tp2"}, Layout{4, 2, "tp2 x dp2"}}) {
      SCOPED_TRACE(model + " " + l.tag);
      const nlohmann::json got = eval(l, model);
      expect_same(got, ref, kBound);
      EXPECT_EQ(got.at("tp"), l.tp);
      EXPECT_EQ(got.at("dp"), l.ranks / l.tp);
    }
  }
}

TEST(EvalLayouts, AnAdapterItsBaseAndItsCheckpointAreOneModel) {
  const std::string base = runs().full.string() + "/final", adapter = runs().lora.string() + "/final";
  const nlohmann::json from_adapter_dir = eval(kOne, adapter);
  // The base with --adapter: the same model, read the same way.
  expect_same(eval(kOne, base, "--adapter " + adapter), from_adapter_dir, 1e-6);
  // The run directory: its newest checkpoint, at the last step, holds the same adapter
  // (and the base, found through the run's config); under tp2 × dp2 too.
  expect_same(eval(kOne, runs().lora.string()), from_adapter_dir, 1e-6);
  expect_same(eval({4, 2, "tp2 x dp2"}, runs().lora.string() + "/checkpoints"), from_adapter_dir, kBound);
  // The adapter matters: four steps at lr 1e-2 moved the loss.
  const double base_loss = eval(kOne, base).at("loss"), lora_loss = from_adapter_dir.at("loss");
  EXPECT_GT(std::abs(base_loss - lora_loss), 1e-4 * base_loss);
}

TEST(EvalLayouts, SplitAllCountsTrainAndValidation) {
  const std::string model = runs().full.string() + "/final";
  const nlohmann::json val = eval({2, 1, "dp2"}, model), train = eval({2, 1, "dp2"}, model, "--split train"),
                       all = eval({2, 1, "dp2"}, model, "--split all");
  EXPECT_EQ(all.at("target_tokens").get<int64_t>(),
            val.at("target_tokens").get<int64_t>() + train.at("target_tokens").get<int64_t>());
  EXPECT_EQ(all.at("documents").get<int64_t>(),
            val.at("documents").get<int64_t>() + train.at("documents").get<int64_t>());
  // The mean over all is the token-weighted mean of the two.
  const double n_val = val.at("target_tokens"), n_train = train.at("target_tokens");
  const double mean = (val.at("loss").get<double>() * n_val + train.at("loss").get<double>() * n_train) /
                      (n_val + n_train);
  EXPECT_NEAR(all.at("loss").get<double>(), mean, kBound * mean);
}

TEST(EvalLayouts, ARankCountTpDoesNotDivideIsAnErrorNamingBoth) {
  const test::CommandResult r = test::run_command(fmt::format(
      "{} timeout 120 mpirun -np 3 --oversubscribe --bind-to none {} eval {}/final --data {} --tp 2",
      test::mpi_env(), test::temper_bin(), runs().full.string(), runs().data.string()));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tp"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace temper
