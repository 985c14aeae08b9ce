#include "cli/eval_command.h"

#include <CLI/CLI.hpp>
#include <memory>

#include "core/log.h"
#include "parallel/process.h"
#include "report/run_report.h"
#include "train/eval_run.h"

namespace temper {

Subcommand add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  auto json = std::make_shared<bool>(false);
  CLI::App* e = app.add_subcommand(
      "eval", "Loss and perplexity of a model on a token dataset's split (runs under mpirun: dp, tp)");
  e->add_option("model", o->model,
                "Hugging Face model directory, .gguf file, PEFT adapter directory (a LoRA run's "
                "final/), or a temper checkpoint (.h5, a run directory or its checkpoints/)")
      ->required();
  e->add_option("--data", o->data, "HDF5 token dataset (temper prepare)")->required();
  e->add_option("--split", o->split, "val | train | all")->capture_default_str();
  e->add_option("--adapter", o->adapter, "a PEFT adapter directory applied to the model");
  e->add_option("--batch-size", o->batch_size, "rows per micro-batch")->capture_default_str();
  e->add_option("--seq-len", o->seq_len,
                "row length (default: the longest document, within the model's context)");
  e->add_option("--tp", o->tp, "tensor-parallel ranks (the other ranks split the data)")
      ->capture_default_str();
  e->add_option("--backend", o->backend, "auto (cuda when available), cpu or cuda")->capture_default_str();
  e->add_option("--dtype", o->dtype, "f32 | bf16 | f16 (default f32 on cpu, bf16 on cuda)");
  e->add_flag("--json", *json, "print the result as one JSON line instead");
  return {e, [o, json] {
            const EvalResult r = run_eval(*o);
            if (detect_process().rank != 0) return;
            if (*json) fmt::print("{}\n", eval_result_json(r).dump());
            else fmt::print("{}", format_eval_result(r));
          }};
}

Subcommand add_report_command(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* r = app.add_subcommand(
      "report", "Write RUN_DIR/report.html: the run's curves, summary and config, one file a "
                "browser opens offline (temper train writes it too)");
  r->add_option("run_dir", *dir, "a temper train out_dir (holds metrics.jsonl)")->required();
  return {r, [dir] { fmt::print("{}\n", write_run_report(*dir)); }};
}

}  // namespace temper
