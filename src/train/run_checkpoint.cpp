#include "train/run_checkpoint.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "checkpoint/base.h"
#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/log.h"
#include "train/resume_check.h"

namespace fs = std::filesystem;

namespace temper {

std::string resolve_checkpoint_load(const std::string& load) {
  std::error_code ec;
  if (!fs::exists(load, ec)) fail("checkpoint.load: '{}' does not exist", load);
  if (!fs::is_directory(load, ec)) return load;
  fs::path p = fs::path(load).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // a trailing '/'
  const fs::path run_dir = fs::is_directory(p / "checkpoints", ec) ? p : p.parent_path();
  if (auto newest = CheckpointDir(run_dir).resume_point()) return newest->path.string();
  fail("checkpoint.load: directory '{}' holds no checkpoint (no step-N.h5 in it or in its "
       "checkpoints/)", load);
}

ModelConfig model_config_of_checkpoint(const std::string& load) {
  if (load.empty())
    fail("no model: set model.preset, model.config or model.path (or checkpoint.load, a "
         "checkpoint whose model to train)");
  const std::string path = resolve_checkpoint_load(load);
  const CheckpointMeta meta = read_checkpoint_meta(path);
  return with_context(path + ": /meta model_config", [&] {
    return model_config_from_hf_json(nlohmann::json::parse(meta.model_config_json), path);
  });
}

namespace {

// Rank 0's decision as a number every rank can receive: -1 fresh, -2 checkpoint.load,
// N >= 0 resume from OUT_DIR's step N.
double encode(const std::optional<StartPoint>& s) {
  if (!s) return -1.0;
  if (!s->own) return -2.0;
  return double(*checkpoint_step_of(fs::path(s->path).filename().string()));
}

std::optional<StartPoint> decide(const RunConfig& c, const CheckpointDir& dir) {
  const std::optional<CheckpointDir::Entry> own = dir.resume_point();
  if (own && c.checkpoint.resume != "false") return StartPoint{own->path.string(), true};
  if (own)
    fail("checkpoint.resume=false, but {} already holds checkpoints (newest: {}); a fresh run "
         "would mix its saves with them: move them away or choose another out_dir",
         dir.path().string(), own->path.filename().string());
  if (!c.checkpoint.load.empty()) return StartPoint{resolve_checkpoint_load(c.checkpoint.load), false};
  return std::nullopt;
}

}  // namespace

std::optional<StartPoint> choose_start_point(const RunConfig& c, const CheckpointDir& dir,
                                             Placement& place) {
  std::optional<StartPoint> mine;
  if (place.is_rank0()) mine = decide(c, dir);
  Communicator* world = place.world_comm();
  if (!world || world->size() == 1) return mine;
  // The sum of rank 0's code and everyone else's zero is a broadcast of the code.
  std::vector<double> code = {place.is_rank0() ? encode(mine) : 0.0};
  all_reduce_sum_f64(*world, code);
  if (place.is_rank0()) return mine;
  if (code[0] == -1.0) return std::nullopt;
  if (code[0] == -2.0) return StartPoint{resolve_checkpoint_load(c.checkpoint.load), false};
  return StartPoint{dir.file_for(int64_t(code[0])).string(), true};
}

RunCounters load_start_point(TrainingRun& run, const StartPoint& start) {
  const RunConfig& c = run.config;
  const std::string& path = start.path;
  check_start_config(run, path, start.own);
  CheckpointMeta meta;
  RankState state;
  try {
    // A model-only checkpoint (`temper convert`) gives weights; the optimizer, the data
    // order and the step count then start fresh.
    meta = read_checkpoint_meta(path);
    AdamW* optimizer = meta.has_optimizer ? run.optimizer.get() : nullptr;
    // A base that came from a model-only checkpoint is not where model.path points.
    if (meta.has_base && fs::path(meta.base_model).extension() == ".h5")
      load_base_model(*run.model, meta.base_model, uint64_t(c.seed), run.place.grid.get());
    meta = load_checkpoint(path, *run.model, optimizer, run.place.grid.get());
    if (optimizer) state = read_rank_state(path, 0, 0);  // every rank walks the same stream
  } catch (const Error& e) {
    // The library's messages start with the path already.
    std::string why = e.what();
    if (why.starts_with(path + ": ")) why.erase(0, path.size() + 2);
    if (start.own)
      fail("cannot resume from {}: {}; older checkpoints may still be good: start from one "
           "with checkpoint.load=PATH and a new out_dir (or move this one away)", path, why);
    fail("cannot start from checkpoint.load={}: {}", path, why);
  }
  const bool rank0 = run.place.is_rank0();
  // The base this run's frozen parameters hold: a PEFT run started from a model-only
  // checkpoint took its base from that file, and so does every resume of it.
  if (!meta.has_optimizer && run.model->params().frozen_numel() > 0)
    run.base_model = fs::absolute(path).lexically_normal().string();
  if (meta.has_base) run.base_model = meta.base_model;
  if (!meta.has_optimizer) {
    if (rank0)
      log::info("weights from {} (a model-only checkpoint: optimizer state and data order start "
                "fresh at step 1)", path);
    return RunCounters{};
  }
  run.train_data->set_position(state.data);
  if (run.loss_scale && meta.loss_scale > 0)
    run.loss_scale->restore(meta.loss_scale, meta.loss_scale_good_steps, meta.loss_scale_overflows);
  RunCounters k;
  k.step = meta.step;
  k.tokens_seen = meta.tokens_seen;
  k.skipped_steps = meta.skipped_steps;
  k.nonfinite_streak = meta.nonfinite_streak;
  k.lr = meta.lr;
  if (rank0)
    log::info("{} from {}: step {} of {}, {} tokens seen (saved by {} rank(s), tp {}, ZeRO-{})",
              start.own ? "resuming" : "starting", path, meta.step, run.length.steps,
              meta.tokens_seen, meta.grid.world, meta.grid.tp, meta.grid.zero);
  return k;
}

std::string save_run_checkpoint(TrainingRun& run, const CheckpointDir& dir,
                                const RunCounters& k) {
  const RunConfig& c = run.config;
  CheckpointMeta meta;
  meta.step = k.step;
  meta.tokens_seen = k.tokens_seen;
  meta.config_yaml = to_yaml(c);
  meta.grid.zero = run.zero_stage();
  meta.lr = k.lr;
  meta.schedule = run.schedule;
  if (run.loss_scale) {
    meta.loss_scale = run.loss_scale->scale();
    meta.loss_scale_good_steps = run.loss_scale->good_steps();
    meta.loss_scale_overflows = run.loss_scale->overflows();
  }
  meta.nonfinite_streak = k.nonfinite_streak;
  meta.skipped_steps = k.skipped_steps;
  meta.source = c.model.path;
  meta.base_model = run.base_model;
  meta.extra["peft"] = peft_spec_to_json(run.model->peft()).dump();
  RankState state;
  state.rng = {uint64_t(c.seed)};  // the only randomness left after init: the data order
  state.data = run.train_data->position();
  const fs::path temp = dir.temp_for(k.step);
  const bool rank0 = run.place.is_rank0();
  try {
    write_checkpoint(temp.string(), meta, *run.model, run.optimizer.get(), state, run.place.grid.get());
    return rank0 ? dir.publish(k.step, c.checkpoint.keep).string() : dir.file_for(k.step).string();
  } catch (const Error& e) {
    std::error_code ec;
    if (rank0) fs::remove(temp, ec);
    const auto kept = dir.complete();
    fail("saving the checkpoint of step {} failed: {}; the earlier checkpoints are untouched "
         "({})", k.step, e.what(),
         kept.empty() ? std::string("there are none yet")
                      : "the newest is " + kept.back().path.string());
  }
}

}  // namespace temper
