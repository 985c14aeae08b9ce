#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <fmt/chrono.h>
#include <fmt/ranges.h>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>

#include "core/error.h"
#include "core/log.h"
#include "checkpoint/tokenizer_store.h"
#include "io/hf_model.h"
#include "report/run_report.h"
#include "peft/adapter_files.h"
#include "train/bench.h"
#include "train/checkpointing.h"
#include "train/metrics.h"
#include "train/out_dir.h"
#include "train/progress.h"
#include "train/run_checkpoint.h"
#include "train/training_run.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

// Test-only (TEMPER_TEST_NONFINITE): a NaN in element 0 of the final norm weight for one
// step, restored afterwards. Every rank's loss and gradients turn non-finite through the
// usual reductions, as with a real fault.
class PoisonedWeight {
 public:
  explicit PoisonedWeight(Transformer& model) : backend_(model.backend()) {
    Parameter* p = model.params().find("model.norm.weight");
    TEMPER_CHECK(p != nullptr, "the model has no model.norm.weight to poison");
    element_ = p->value.flat(0, 1);
    saved_.resize(element_.nbytes());
    backend_.copy_to_host(saved_.data(), element_);
    backend_.fill(element_, std::nanf(""));
  }
  ~PoisonedWeight() { backend_.copy_from_host(element_, saved_.data()); }

 private:
  Backend& backend_;
  Tensor element_;
  std::vector<uint8_t> saved_;
};

void log_run_header(TrainingRun& run) {
  const RunConfig& c = run.config;
  const ModelConfig& mc = run.model_config;
  log::info("temper train: {} layers, hidden {}, {:.2f}M parameters, backend {}, {} train docs",
            mc.num_hidden_layers, mc.hidden_size, double(mc.num_parameters()) / 1e6,
            run.backend->name(), run.train_data->size());
  if (run.place.grid)
    log::info("grid: {}, {} gradient buckets", run.place.grid->str(),
              run.buckets ? run.buckets->bucket_count() : 0);
  log::info("global batch: {} sequences ({} dp × {} accum × {} rows) of {} tokens; metrics -> "
            "{}/metrics.jsonl", run.place.dp_size() * c.train.grad_accum * c.train.micro_batch_size,
            run.place.dp_size(), c.train.grad_accum, c.train.micro_batch_size, c.train.seq_len,
            c.out_dir);
  log::info("length: {}", run.length.describe(c));
  if (!run.val.empty())
    log::info("validation every {} steps{} and after the last, on {} micro-batches",
              run.length.eval_every, c.train.eval_every < 0 ? " (10% of the run: train.eval_every=-1)" : "",
              run.val.size());
  const ParameterSet& ps = run.model->params();
  const PeftSpec& peft = run.model->peft();
  std::string method = peft_method_name(peft.method);
  if (peft.adapters())
    method += fmt::format(" r={} alpha={}{}{} on {}", peft.lora.r, peft.lora.alpha,
                          peft.lora.rslora ? " rsLoRA" : "", peft.lora.dora ? " DoRA" : "",
                          fmt::join(peft.lora.target_modules, ","));
  log::info("peft {}: {:.3f}M of {:.3f}M parameters train ({:.2f}%) on this rank", method,
            double(ps.trainable_numel()) / 1e6, double(ps.numel()) / 1e6,
            100.0 * double(ps.trainable_numel()) / double(std::max<int64_t>(ps.numel(), 1)));
  log::info("memory per rank (ZeRO-{}): {}", run.zero_stage(),
            memory_report(run.model->params(), *run.optimizer, run.grad_shards.get()).str());
  if (c.checkpoint.every > 0)
    log::info("checkpoints every {} steps -> {}/checkpoints (keeping {})", c.checkpoint.every,
              c.out_dir, c.checkpoint.keep);
}

// Now as ISO 8601 UTC text, e.g. 2026-12-03T11:20:20Z.
std::string utc_now_text() {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(std::time(nullptr)));
}

// What this process's part of the run adds up to, for MFU and the end-of-run summary.
struct RunTally {
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  double step_seconds = 0;   // in train steps
  int64_t step_tokens = 0;   // global tokens of this process's steps
  double flops_per_token = 0, peak_tflops = 0;  // peak 0: unknown device, no MFU
  int world_size = 1;
  double elapsed_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }
  // Model FLOP/s per device over its dense peak (0 when the peak is unknown).
  double mfu(double tokens_per_s) const {
    return peak_tflops > 0 ? tokens_per_s * flops_per_token / (world_size * peak_tflops * 1e12) : 0;
  }
};

// The events.jsonl line that opens a run or a resume (the report marks resumes with it).
nlohmann::json run_start_line(TrainingRun& run, const RunCounters& k,
                              const std::optional<StartPoint>& start, const RunTally& tally) {
  int64_t total = 0, trainable = 0;  // full tensors, whatever the tp sharding
  for (const Parameter& p : run.model->params().all()) {
    total += p.full_shape.numel();
    if (p.trainable) trainable += p.full_shape.numel();
  }
  const RunConfig& c = run.config;
  nlohmann::json line = {
      {"step", k.step}, {"event", start && start->own ? "resume" : "start"},
      {"time", utc_now_text()}, {"from_checkpoint", start ? start->path : ""},
      {"peft_method", peft_method_name(run.model->peft().method)},
      {"parameters", total}, {"trainable_parameters", trainable},
      {"device", run.backend->device_name()}, {"backend", run.backend->name()},
      {"dtype", c.model.dtype}, {"world_size", run.place.process.world_size},
      {"dp", run.place.dp_size()}, {"tp", run.place.grid ? run.place.grid->tp_size() : 1},
      {"zero", run.zero_stage()}, {"steps", run.length.steps}, {"seq_len", c.train.seq_len},
      {"flops_per_token", tally.flops_per_token}};
  if (tally.peak_tflops > 0) line["peak_tflops"] = tally.peak_tflops;
  return line;
}

// Rank 0: OUT_DIR/report.html from what the run has logged; a failure only warns (a report
// never stops training).
void refresh_report(const RunConfig& c) {
  try {
    write_run_report(c.out_dir);
  } catch (const std::exception& e) {
    log::warn("the run report was not written: {}", e.what());
  }
}

std::string duration_text(double s) {
  const int64_t t = int64_t(s + 0.5);
  if (t < 60) return fmt::format("{:.1f} s", s);
  if (t < 3600) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}h{:02}m{:02}s", t / 3600, t % 3600 / 60, t % 60);
}

// The end-of-run summary on the terminal (rank 0).
void print_summary(TrainingRun& run, const RunSummary& summary, const RunCounters& k,
                   const RunTally& tally) {
  const RunConfig& c = run.config;
  const fs::path out(c.out_dir);
  std::string val = "no validation";
  if (!summary.val_losses.empty()) {
    const auto best = std::min_element(summary.val_losses.begin(), summary.val_losses.end());
    val = fmt::format("validation: final {:.4f}, best {:.4f} (evaluation {} of {})",
                      summary.val_losses.back(), *best, best - summary.val_losses.begin() + 1,
                      summary.val_losses.size());
  }
  const double tps = tally.step_seconds > 0 ? double(tally.step_tokens) / tally.step_seconds : 0;
  const double mfu = tally.mfu(tps);
  const std::string mfu_text = mfu > 0 ? fmt::format("MFU {:.1f}% of {:.0f} TFLOP/s", 100 * mfu,
                                                     tally.peak_tflops)
                                       : fmt::format("MFU n/a ({}: no known peak)", run.backend->device_name());
  const bool adapter = run.model->peft().adapters();
  log::info("done: steps {}-{} of {} in {}", summary.first_step, k.step, run.length.steps,
            duration_text(tally.elapsed_s()));
  log::info("  loss: final {:.4f}; {}", summary.losses.back(), val);
  log::info("  tokens: {} seen in all; {:.0f} tokens/s on average, {}", k.tokens_seen, tps, mfu_text);
  log::info("  peak memory: {:.1f} MiB per rank (activations {:.1f} MiB)",
            double(summary.peak_bytes) / 1048576.0, double(run.model->activation_peak_bytes()) / 1048576.0);
  log::info("  {}: {}", adapter ? "adapter (PEFT)" : "model (Hugging Face)", (out / "final").string());
  log::info("  checkpoints: {}", summary.checkpoint.empty() ? std::string("none saved (checkpoint.every=0)")
                                                          : (out / "checkpoints").string() + ", latest " + summary.checkpoint);
  log::info("  metrics: {} and {}", (out / "metrics.jsonl").string(), (out / "metrics.csv").string());
  log::info("  report: {}", (out / "report.html").string());
}

// Rank 0's per-step record: metrics line and progress display.
void report_step(TrainingRun& run, MetricsWriter& metrics, Progress& progress, int64_t step,
                 const StepResult& r, const RunCounters& k, double tokens_per_s,
                 const RunTally& tally) {
  const MemoryResource& memory = run.backend->memory();
  nlohmann::json line = {{"step", step}, {"loss", r.loss}, {"lr", k.lr}, {"grad_norm", r.grad_norm},
                         {"tokens_per_s", tokens_per_s}, {"tokens", r.tokens},
                         {"target_tokens", r.target_tokens}, {"tokens_seen", k.tokens_seen},
                         {"elapsed_s", tally.elapsed_s()},
                         {"memory_bytes", memory.bytes_in_use()},
                         {"peak_memory_bytes", memory.peak_bytes()}};
  if (const double mfu = tally.mfu(tokens_per_s); mfu > 0) line["mfu"] = mfu;
  if (run.place.dp_size() > 1) line["grad_comm_bytes"] = r.grad_comm_bytes;
  if (r.skipped) {
    line["skipped"] = true;
    line["nonfinite_streak"] = k.nonfinite_streak;
    log::warn("step {}: non-finite loss or gradient norm, update skipped ({} in a row, {} in all)",
              step, k.nonfinite_streak, k.skipped_steps);
  }
  if (run.loss_scale) line["loss_scale"] = run.loss_scale->scale();
  metrics.write(line);
  progress.step(step, r.loss, k.lr, r.grad_norm, tokens_per_s);
}

// OUT_DIR/final: the model as a Hugging Face directory (tp shards gathered; rank 0 writes),
// or for LoRA the adapter as a PEFT adapter directory, with the source model's tokenizer
// (copied from an HF directory, written from a GGUF), so `temper generate`, transformers
// and PEFT can use it as it is.
void export_final(TrainingRun& run) {
  const fs::path final_dir = fs::path(run.config.out_dir) / "final";
  Communicator* tp_group = run.place.grid ? &run.place.grid->tp() : nullptr;
  if (run.model->peft().adapters())
    save_peft_adapter(*run.model, final_dir.string(), base_model_name(run.config), run.tp,
                      tp_group, run.place.is_rank0());
  else
    save_hf_model(*run.model, final_dir.string(), run.tp, tp_group, run.place.is_rank0());
  if (!run.place.is_rank0()) return;
  // The model's own (model.path), else the one that came with checkpoint.load (`temper
  // convert` stores it).
  const std::string& source =
      run.config.model.path.empty() ? run.config.checkpoint.load : run.config.model.path;
  const TokenizerCopy t = copy_model_tokenizer(source, final_dir);
  if (t.files.empty())
    log::warn("{}: written without a tokenizer: {}; transformers and `temper generate` need "
              "one beside the weights", final_dir.string(), t.why_not);
}

RunSummary train_on(const RunConfig& c, const TrainOptions& options, Placement& place,
                    const StopSignals& signals) {
  const bool rank0 = place.is_rank0();
  const CheckpointDir checkpoints(c.out_dir);
  // Until the first step is done, a failure leaves OUT_DIR as it was (out_dir.h).
  OutDirGuard guard(c.out_dir, rank0);
  if (rank0 && options.overwrite) remove_previous_run(c.out_dir);
  const std::optional<StartPoint> start = choose_start_point(c, checkpoints, place);
  if (rank0 && !(start && start->own)) refuse_to_overwrite_a_run(c.out_dir);
  if (rank0) {
    fs::create_directories(checkpoints.path());
    checkpoints.remove_partial();
  }
  std::unique_ptr<TrainingRun> run = build_training_run(c, place, start ? start->path : "");
  if (rank0) {
    std::ofstream(fs::path(c.out_dir) / "config.yaml") << to_yaml(c);
    std::ofstream(fs::path(c.out_dir) / "model_config.json")
        << model_config_to_hf_json(run->model_config).dump(2);
  }
  RunCounters k;
  if (start) k = load_start_point(*run, *start);
  RunSummary summary;
  summary.first_step = k.step + 1;
  summary.skipped_steps = k.skipped_steps;
  const int64_t steps = run->length.steps;
  if (k.step >= steps) {
    guard.release();
    if (rank0)
      log::info("nothing to train: the checkpoint is at step {} and the run has {} (to train "
                "further raise train.steps or train.epochs; a decaying lr schedule then needs "
                "checkpoint.resume=force); writing {}/final from it", k.step, steps, c.out_dir);
    // Again: the run that saved it may have died while writing final/.
    export_final(*run);
    return summary;
  }
  if (rank0) log_run_header(*run);

  // Resuming keeps the metrics of the steps before the checkpoint and drops any logged
  // after it by the run that stopped.
  std::unique_ptr<MetricsWriter> metrics, events;
  if (rank0) {
    const int64_t keep = start && start->own ? k.step : -1;
    const fs::path out(c.out_dir);
    metrics = std::make_unique<MetricsWriter>((out / "metrics.jsonl").string(), keep,
                                              (out / "metrics.csv").string(), metrics_csv_columns());
    events = std::make_unique<MetricsWriter>((out / "events.jsonl").string(), keep);
  }
  RunTally tally;
  tally.flops_per_token = training_flops_per_token(*run->model, c.train.seq_len);
  tally.peak_tflops = known_peak_tflops(run->backend->device_name());
  tally.world_size = place.process.world_size;
  if (rank0) events->write(run_start_line(*run, k, start, tally));
  Progress progress(steps, rank0 ? c.train.progress : "plain", rank0 ? c.train.log_every : 0,
                    k.step);
  const NonfiniteInjection inject = nonfinite_injection_from_env();
  Backend& backend = *run->backend;
  for (int64_t step = k.step + 1; step <= steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<MicroBatch> micro = run->next_micro_batches();
    k.lr = run->schedule.at(step);
    StepResult r;
    {
      std::optional<PoisonedWeight> poison;
      if (inject.at(step, place.process.rank)) poison.emplace(*run->model);
      run->step_options.step_index = step - 1;
      r = train_step(*run->model, *run->optimizer, micro, float(k.lr), c.optim.grad_clip,
                     run->step_options);
    }
    backend.synchronize();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    k.step = step;
    k.tokens_seen += r.tokens;
    k.nonfinite_streak = r.skipped ? k.nonfinite_streak + 1 : 0;
    if (r.skipped) ++k.skipped_steps;
    summary.losses.push_back(r.loss);
    summary.skipped_steps = k.skipped_steps;
    tally.step_seconds += secs;
    tally.step_tokens += r.tokens;
    if (rank0)
      report_step(*run, *metrics, progress, step, r, k, double(r.tokens) / std::max(secs, 1e-9), tally);
    guard.release();  // a step is done: OUT_DIR holds a run now
    const int64_t eval_every = run->length.eval_every;
    if (!run->val.empty() && (step % eval_every == 0 || step == steps)) {
      // Every rank evaluates (a tensor-parallel forward needs the whole tp group); the
      // dp replicas agree, rank 0 reports.
      const double vl = evaluate(*run->model, run->val);
      summary.val_losses.push_back(vl);
      if (rank0) {
        metrics->write({{"step", step}, {"val_loss", vl}, {"val_perplexity", std::exp(vl)}});
        progress.eval(step, vl);
        refresh_report(c);  // so a person can watch a long job
      }
    }

    // Every decision below is the same on every rank: the streak comes from all-reduced
    // values, the stop request is agreed on explicitly.
    const bool too_many_nonfinite =
        c.train.max_nonfinite_steps > 0 && k.nonfinite_streak >= c.train.max_nonfinite_steps;
    const int stop_signal = agree_on_stop(signals.received(), place.world_comm());
    // With checkpoint.every = 0 only a stop saves (a checkpoint is 16 bytes a parameter).
    const bool periodic = c.checkpoint.every > 0 &&
                          (step % c.checkpoint.every == 0 || step == steps);
    if (periodic || stop_signal || too_many_nonfinite) {
      summary.checkpoint = save_run_checkpoint(*run, checkpoints, k);
      if (rank0)
        events->write({{"step", step}, {"event", "checkpoint"}, {"path", summary.checkpoint},
                       {"time", utc_now_text()}});
    }
    if (too_many_nonfinite) {
      progress.finish();
      if (rank0)
        log::error("stopping: {} steps in a row (steps {}-{}) had a non-finite loss or gradient "
                   "norm (train.max_nonfinite_steps={}); the last good parameters are saved in {} "
                   "(lower optim.lr, check the data, or raise train.max_nonfinite_steps)",
                   k.nonfinite_streak, step - k.nonfinite_streak + 1, step,
                   c.train.max_nonfinite_steps, summary.checkpoint);
      summary.failed = true;
      if (rank0) {
        events->write({{"step", step}, {"event", "failed"}, {"time", utc_now_text()},
                       {"elapsed_s", tally.elapsed_s()}});
        refresh_report(c);
      }
      return summary;
    }
    if (stop_signal && step < steps) {  // at the last step: just finish
      progress.finish();
      if (rank0)
        log::info("stopped by {} after step {}/{}: saved {}; run the same command again to resume",
                  signal_name(stop_signal), step, steps, summary.checkpoint);
      summary.stop_signal = stop_signal;
      if (rank0) {
        events->write({{"step", step}, {"event", "stopped"}, {"signal", signal_name(stop_signal)},
                       {"time", utc_now_text()}, {"elapsed_s", tally.elapsed_s()}});
        refresh_report(c);
      }
      return summary;
    }
  }
  progress.finish();
  summary.peak_bytes = backend.memory().peak_bytes();
  export_final(*run);
  if (rank0) {
    events->write({{"step", k.step}, {"event", "end"}, {"time", utc_now_text()}, {"elapsed_s", tally.elapsed_s()}});
    refresh_report(c);
    print_summary(*run, summary, k, tally);
  }
  return summary;
}

}  // namespace

RunSummary run_training(const RunConfig& config, const TrainOptions& options) {
  validate_run_config(config);
  // Paths as absolute ones: the config.yaml and checkpoints written hold them, so export,
  // resume and the tokenizer lookup work from any directory.
  RunConfig c = with_absolute_paths(config);
  // Before MPI starts, so a stop request is never lost to the default action (death).
  const StopSignals signals;
  Placement place;
  place.process = detect_process();
  // The data-parallel size is known before MPI starts (DeviceGrid checks tp divides it).
  resolve_global_batch(c, std::max<int>(1, place.process.world_size / int(std::max<int64_t>(1, c.parallel.tp))));
  check_ranks_for_tp(place.process, c.parallel.tp);
  if (place.process.world_size == 1) return train_on(c, options, place, signals);
  try {
    start_mpi(place, c.parallel.tp, c.parallel.timeout_s);
    return train_on(c, options, place, signals);
  } catch (const std::exception& e) {
    // Other ranks may be waiting in a collective: take the whole job down now rather than
    // let them hang until their own timeout.
    abort_job(fmt::format("rank {}: {}", place.process.rank, e.what()));
  }
}

}  // namespace temper
