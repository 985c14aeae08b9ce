#include "train/eval_run.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/log.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "generate/generate.h"
#include "kernels/backend.h"
#include "parallel/mpi_comm.h"
#include "peft/adapter_files.h"
#include "train/run_checkpoint.h"
#include "train/trainer.h"
#include "train/training_run.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

// The run config that builds the model to evaluate: model.path / model.adapter, or a
// checkpoint's own model and PEFT sections (its frozen base comes from where the run had it).
RunConfig eval_config(const EvalOptions& o, std::string& checkpoint) {
  RunConfig c;
  const fs::path m(o.model);
  const bool model_dir = fs::exists(m / "config.json") || o.model.ends_with(".gguf");
  if (!fs::exists(m)) fail("{}: no such model, adapter directory or checkpoint", o.model);
  if (model_dir) {
    c.model.path = o.model;
    c.model.adapter = o.adapter;
  } else if (is_peft_adapter_dir(o.model)) {
    if (!o.adapter.empty())
      fail("{} is an adapter directory itself; give its base model as MODEL with --adapter {}", o.model,
           o.adapter);
    c.model.path = generation_base_of(o.model);
    c.model.adapter = o.model;
  } else {
    checkpoint = resolve_checkpoint_load(o.model);
    if (!o.adapter.empty())
      fail("--adapter {}: a checkpoint ({}) carries its own adapter", o.adapter, checkpoint);
    const CheckpointMeta meta = read_checkpoint_meta(checkpoint);
    if (!meta.config_yaml.empty()) {
      const RunConfig saved = run_config_from_yaml_text(meta.config_yaml, checkpoint + " (its config)");
      c.model = saved.model;
      c.peft = saved.peft;
      c.seed = saved.seed;  // a base drawn from the seed
    }
    c.checkpoint.load = checkpoint;
  }
  const bool cuda = o.backend == "cuda" || (o.backend == "auto" && cuda_backend_available());
  c.backend = o.backend == "auto" ? (cuda ? "cuda" : "cpu") : o.backend;
  c.model.dtype = o.dtype.empty() ? (cuda ? "bf16" : "f32") : o.dtype;
  c.data.source = "hdf5";
  c.data.path = o.data;
  c.parallel.tp = o.tp;
  c.parallel.timeout_s = o.timeout_s;
  c.train.micro_batch_size = o.batch_size;
  c.train.seq_len = std::max<int64_t>(1, o.seq_len);
  return with_absolute_paths(c);
}

// The documents of the chosen split(s), in dataset order.
std::vector<std::shared_ptr<const DocumentSource>> split_sources(const DatasetDocuments& d,
                                                                 const std::string& split) {
  if (split == "val") return {d.val};
  if (split == "train") return {d.train};
  if (split == "all") return {d.train, d.val};
  fail("--split {}: choose val, train or all", split);
}

// Deals micro-batches of one-document rows (longer documents in row-sized windows) to the
// data-parallel ranks in turn; `score` runs on this rank's.
class EvalBatches {
 public:
  EvalBatches(int64_t rows, int64_t seq_len, int32_t pad_id, int dp_size, int dp_rank)
      : rows_(rows), seq_len_(seq_len), pad_id_(pad_id), dp_size_(dp_size), dp_rank_(dp_rank) {}

  template <typename Score>
  void add(const Document& d, EvalResult& r, Score&& score) {
    const int64_t n = int64_t(d.tokens.size());
    r.documents += 1;
    r.tokens += n;
    if (n > seq_len_) r.windowed_documents += 1;
    for (int64_t at = 0; at < n; at += seq_len_) {
      if (!builder_) builder_.emplace(rows_, seq_len_, pad_id_);
      const int64_t len = std::min(seq_len_, n - at);
      builder_->add_document(std::span(d.tokens).subspan(size_t(at), size_t(len)),
                             std::span(d.targets).subspan(size_t(at), size_t(len)));
      builder_->finish_row();
      if (builder_->full()) flush(score);
    }
  }
  template <typename Score>
  void flush(Score&& score) {
    if (!builder_) return;
    MicroBatch b = builder_->finish();
    builder_.reset();
    if (index_++ % dp_size_ == dp_rank_) score(b);
  }

 private:
  int64_t rows_, seq_len_;
  int32_t pad_id_;
  int dp_size_, dp_rank_;
  int64_t index_ = 0;
  std::optional<BatchBuilder> builder_;
};

EvalResult evaluate_on(const EvalOptions& o, RunConfig c, const std::string& checkpoint,
                       Placement& place) {
  DatasetDocuments data = open_token_dataset(c.data.path);
  const auto sources = split_sources(data, o.split);
  int64_t longest = 0;
  for (const auto& s : sources)
    for (size_t i = 0; i < s->size(); ++i) longest = std::max(longest, s->length(i));
  if (longest == 0) fail("{}: the {} split has no documents", o.data, o.split);
  const ModelConfig mc = model_config_for_run(c, checkpoint);
  if (data.meta.vocab_size > mc.vocab_size)
    fail("{}: the dataset's vocabulary ({} tokens) is larger than the model's ({}): it was made "
         "with another tokenizer", o.data, data.meta.vocab_size, mc.vocab_size);
  c.train.seq_len = o.seq_len > 0 ? o.seq_len : std::min(longest, mc.max_position_embeddings);

  std::unique_ptr<TrainingRun> run = build_model_run(c, place, checkpoint);
  Transformer& model = *run->model;
  if (!checkpoint.empty()) load_checkpoint(checkpoint, model, nullptr, place.grid.get());
  if (place.is_rank0())
    log::info("eval: {} on {} ({} split), {} rows of {} tokens, {} dp x {} tp, {}", o.model, o.data,
              o.split, c.train.micro_batch_size, c.train.seq_len, place.dp_size(),
              place.grid ? place.grid->tp_size() : 1, run->backend->device_name());

  EvalResult r;
  const auto t0 = std::chrono::steady_clock::now();
  double loss_sum = 0;
  int64_t targets = 0;
  const auto score = [&](const MicroBatch& b) {
    const LossSum s = model.forward_loss(b);
    loss_sum += s.loss;
    targets += s.tokens;
  };
  EvalBatches batches(c.train.micro_batch_size, c.train.seq_len,
                      data.meta.eos_id >= 0 ? int32_t(data.meta.eos_id) : 0, place.dp_size(),
                      place.dp_rank());
  Document scratch;
  for (const auto& s : sources)
    for (size_t i = 0; i < s->size(); ++i) batches.add(s->get(i, scratch), r, score);
  batches.flush(score);
  std::vector<double> sums = {loss_sum, double(targets)};
  if (place.grid) all_reduce_sum_f64(place.grid->dp(), sums);
  run->backend->synchronize();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.target_tokens = int64_t(sums[1]);
  if (r.target_tokens == 0)
    fail("{}: the {} split has no target tokens (every loss_mask entry is 0)", o.data, o.split);
  r.loss = sums[0] / sums[1];
  r.perplexity = std::exp(r.loss);
  r.tokens_per_s = r.seconds > 0 ? double(r.tokens) / r.seconds : 0.0;
  r.dp = place.dp_size();
  r.tp = place.grid ? place.grid->tp_size() : 1;
  r.seq_len = c.train.seq_len;
  r.batch_size = c.train.micro_batch_size;
  r.split = o.split;
  r.model = o.model;
  r.data = o.data;
  r.device = run->backend->device_name();
  if (r.windowed_documents > 0 && place.is_rank0())
    log::warn("eval: {} of {} documents are longer than a row ({} tokens) and were scored in "
              "windows without the context before each (raise --seq-len)", r.windowed_documents,
              r.documents, c.train.seq_len);
  return r;
}

}  // namespace

EvalResult run_eval(const EvalOptions& o) {
  if (o.batch_size < 1) fail("--batch-size {}: must be at least 1", o.batch_size);
  if (o.seq_len < 0) fail("--seq-len {}: must be positive (or 0: the longest document)", o.seq_len);
  if (o.tp < 1) fail("--tp {}: must be at least 1", o.tp);
  std::string checkpoint;
  const RunConfig c = eval_config(o, checkpoint);
  Placement place;
  place.process = detect_process();
  check_ranks_for_tp(place.process, o.tp);
  if (place.process.world_size == 1) return evaluate_on(o, c, checkpoint, place);
  try {
    start_mpi(place, o.tp, o.timeout_s);
    return evaluate_on(o, c, checkpoint, place);
  } catch (const std::exception& e) {
    abort_job(fmt::format("rank {}: {}", place.process.rank, e.what()));
  }
}

nlohmann::json eval_result_json(const EvalResult& r) {
  return {{"loss", r.loss},
          {"perplexity", r.perplexity},
          {"target_tokens", r.target_tokens},
          {"tokens", r.tokens},
          {"documents", r.documents},
          {"windowed_documents", r.windowed_documents},
          {"seconds", r.seconds},
          {"tokens_per_s", r.tokens_per_s},
          {"split", r.split},
          {"model", r.model},
          {"data", r.data},
          {"device", r.device},
          {"dp", r.dp},
          {"tp", r.tp},
          {"seq_len", r.seq_len},
          {"batch_size", r.batch_size}};
}

std::string format_eval_result(const EvalResult& r) {
  return fmt::format("eval {} split: loss {:.4f}, perplexity {:.3f} over {} target tokens ({} "
                     "documents, {} tokens) in {:.2f} s, {:.0f} tokens/s\n",
                     r.split, r.loss, r.perplexity, r.target_tokens, r.documents, r.tokens,
                     r.seconds, r.tokens_per_s);
}

}  // namespace temper
