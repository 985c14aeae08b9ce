// The `temper` command: one subcommand per job (DESIGN §8). Errors are printed as one
// clear line and exit with status 1; --help lists everything.
#include <CLI/CLI.hpp>

#include "core/error.h"
#include "core/log.h"
#include "train/run_config.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"temper: fine-tune Llama-family language models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("temper ") + TEMPER_VERSION);

  std::string config_path;
  std::vector<std::string> overrides;
  auto* train = app.add_subcommand("train", "Train a model from a YAML config");
  train->add_option("config", config_path, "Run config (YAML)")->required();
  train->add_option("overrides", overrides, "key.sub=value overrides, applied after the file");

  auto* show = app.add_subcommand("show-config", "Print the effective config (file + overrides)");
  show->add_option("config", config_path, "Run config (YAML)")->required();
  show->add_option("overrides", overrides, "key.sub=value overrides");

  CLI11_PARSE(app, argc, argv);
  try {
    if (train->parsed()) {
      temper::run_training(temper::load_run_config(config_path, overrides));
    } else if (show->parsed()) {
      fmt::print("{}", temper::to_yaml(temper::load_run_config(config_path, overrides)));
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
