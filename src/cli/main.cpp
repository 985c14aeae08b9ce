// The `temper` command: one subcommand per job. Errors are printed as one
// clear line and exit with status 1; --help lists everything.
#include <CLI/CLI.hpp>

#include "cli/checkpoint_commands.h"
#include "core/error.h"
#include "core/log.h"
#include <fstream>

#include <algorithm>

#include "cli/eval_command.h"
#include "cli/generate_command.h"
#include "cli/prepare_command.h"
#include "train/bench.h"
#include "train/run_config.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"temper: fine-tune Llama-family language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("temper ") + TEMPER_VERSION);

  std::string config_path;
  std::vector<std::string> overrides;
  auto* train = app.add_subcommand("train", "Train a model from a YAML config");
  temper::TrainOptions train_options;
  train->add_option("config", config_path, "Run config (YAML)")->required();
  train->add_option("overrides", overrides, "key.sub=value overrides, applied after the file");
  train->add_flag("--overwrite", train_options.overwrite,
                  "replace an earlier run in out_dir (its checkpoints, metrics and final/) "
                  "instead of refusing to start or resuming");

  auto* show = app.add_subcommand("show-config", "Print the effective config (file + overrides)");
  show->add_option("config", config_path, "Run config (YAML)")->required();
  show->add_option("overrides", overrides, "key.sub=value overrides");

  auto* bench = app.add_subcommand(
      "bench", "Measure training throughput (tokens/s, TFLOP/s, MFU, peak memory) on random tokens");
  temper::BenchOptions bench_options;
  std::string bench_json;
  bench->add_option("config", config_path, "Run config (YAML): model, backend, dtype, batch shape")
      ->required();
  bench->add_option("overrides", overrides, "key.sub=value overrides");
  bench->add_option("--steps", bench_options.steps, "timed steps (median reported)");
  bench->add_option("--warmup", bench_options.warmup_steps, "untimed steps first");
  bench->add_option("--peft", bench_options.peft,
                    "full | partial | lora: overrides peft.method (the rest of peft.* applies)");
  bench->add_option("--peak-tflops", bench_options.peak_tflops,
                    "dense peak of the device for MFU (default: known GPUs by name)");
  bench->add_option("--json", bench_json, "append the result as one JSON line to this file");
  bench->add_flag("--profile", bench_options.profile,
                  "then time every backend op and GEMM for --steps more steps (CUDA events on "
                  "CUDA, the host clock on the CPU) and print where the step's time goes");

  const temper::Subcommand prepare = temper::add_prepare_command(app);
  const temper::Subcommand generate = temper::add_generate_command(app);
  const temper::Subcommand eval = temper::add_eval_command(app);
  const temper::Subcommand report = temper::add_report_command(app);

  temper::add_checkpoint_commands(app);  // inspect, convert, export
  CLI11_PARSE(app, argc, argv);
  try {
    if (train->parsed()) {
      // A run stopped by train.max_nonfinite_steps has saved and said why: exit 1.
      if (temper::run_training(temper::load_run_config(config_path, overrides), train_options).failed)
        return 1;
    } else if (bench->parsed()) {
      // --peft first, as an override, so the overrides after it may use its keys
      // (peft.trainable needs peft.method partial when the config is read).
      if (!bench_options.peft.empty())
        overrides.insert(overrides.begin(), "peft.method=" + bench_options.peft);
      auto result = temper::run_bench(temper::load_run_config(config_path, overrides), bench_options);
      fmt::print("{}", temper::format_bench(result));
      if (!bench_json.empty()) {
        std::ofstream out(bench_json, std::ios::app);
        if (!out) throw temper::Error("cannot open '" + bench_json + "' for the bench result");
        out << result.dump() << "\n";
      }
    } else if (prepare.app->parsed()) {
      prepare.run();
    } else if (generate.app->parsed()) {
      generate.run();
    } else if (eval.app->parsed()) {
      eval.run();
    } else if (report.app->parsed()) {
      report.run();
    } else if (show->parsed()) {
      const temper::RunConfig c = temper::load_run_config(config_path, overrides);
      fmt::print("{}{}", temper::to_yaml(c), temper::describe_run_length(c));
    }
  } catch (const temper::Error& e) {
    temper::log::error("{}", e.what());
    return 1;
  } catch (const std::exception& e) {
    temper::log::error("internal error: {}", e.what());
    return 2;
  }
  return 0;
}
