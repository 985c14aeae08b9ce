#include "train/resume_check.h"

#include <fmt/format.h>

#include <fmt/ranges.h>

#include <map>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/log.h"
#include "train/config_schema.h"

namespace temper {
namespace {

using config_detail::format_value;

// Keys whose change breaks exactness: whole sections, and single keys.
bool decides_course(const std::string& key) {
  for (const char* section : {"model.", "data.", "peft.", "optim."})
    if (key.starts_with(section)) return !key.starts_with("optim.loss_scale_");
  return key == "seed" || key == "train.seq_len" || key == "train.micro_batch_size";
}

std::map<std::string, std::string> values_of(const RunConfig& c) {
  std::map<std::string, std::string> out;
  config_detail::for_each_config_field(c, [&](const char* key, const auto& field, const char*) {
    out[key] = format_value(field);
  });
  return out;
}

}  // namespace

std::vector<std::string> exactness_breaking_changes(const RunConfig& then, const RunShape& then_shape,
                                                    const RunConfig& now, const RunShape& now_shape) {
  std::vector<std::string> out;
  const auto before = values_of(then), after = values_of(now);
  for (const auto& [key, value] : after) {
    auto it = before.find(key);
    if (decides_course(key) && it != before.end() && it->second != value)
      out.push_back(fmt::format("{}: {} -> {}", key, it->second, value));
  }
  if (then.train.grad_accum * then_shape.dp != now.train.grad_accum * now_shape.dp)
    out.push_back(fmt::format("global batch (train.grad_accum × data-parallel ranks): {} × {} -> "
                              "{} × {} micro-batches",
                              then.train.grad_accum, then_shape.dp, now.train.grad_accum,
                              now_shape.dp));
  // The length matters to a schedule that decays over it.
  const LrSchedule& a = then_shape.schedule;
  const LrSchedule& b = now_shape.schedule;
  if (a.total_steps != b.total_steps && !(a.kind == "constant" && b.kind == "constant"))
    out.push_back(fmt::format("the run's length (train.steps = {}, train.epochs = {} -> "
                              "train.steps = {}, train.epochs = {}): {} -> {} steps, which "
                              "stretches the {} lr schedule",
                              then.train.steps, format_value(then.train.epochs), now.train.steps,
                              format_value(now.train.epochs), a.total_steps, b.total_steps, b.kind));
  return out;
}

void check_start_config(const TrainingRun& run, const std::string& path, bool own) {
  const RunConfig& now = run.config;
  const bool rank0 = run.place.is_rank0();
  CheckpointMeta meta;
  RunConfig then;
  try {
    meta = read_checkpoint_meta(path);
    if (!meta.has_optimizer) return;  // weights only: nothing of the old run continues
    then = run_config_from_yaml_text(meta.config_yaml, path + " /meta config", {});
  } catch (const Error& e) {
    if (rank0 && own)
      log::warn("{}: cannot compare its run config with this one ({}); resuming without the "
                "exactness check", path, e.what());
    return;
  }
  if (!own) {
    if (rank0 && (then.seed != now.seed || then.data != now.data))
      log::warn("{} was written by a run with another seed or data section; its data position "
                "now points into a different document order", path);
    return;
  }
  const std::vector<std::string> changes = exactness_breaking_changes(
      then, RunShape{meta.grid.dp, meta.schedule}, now, RunShape{run.place.dp_size(), run.schedule});
  if (changes.empty()) return;
  if (now.checkpoint.resume == "force") {
    if (rank0)
      log::warn("resuming from {} with a changed config (checkpoint.resume=force), so not as "
                "the uninterrupted run would go on:\n  {}", path, fmt::join(changes, "\n  "));
    return;
  }
  fail("{} holds checkpoints of a run with another config (the newest, {}, at step {}), and "
       "resuming would not continue it exactly:\n  {}\nput those keys back, or set "
       "checkpoint.resume=force to go on anyway, or choose another out_dir (or --overwrite to "
       "start afresh here)",
       now.out_dir, path, meta.step, fmt::join(changes, "\n  "));
}

}  // namespace temper
