#include "train/training_run.h"

#include <filesystem>
#include <optional>

#include "core/error.h"
#include "core/log.h"
#include "data/dataset.h"
#include "data/synthetic.h"
#include "data/model_tokenizer.h"
#include "data/tokenizer.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/hf_model.h"
#include "peft/adapter_files.h"
#include "train/checkpointing.h"
#include "train/run_checkpoint.h"
#include "train/trainer.h"
#ifdef TEMPER_HAVE_NCCL
#include "kernels/cuda/cuda_backend.h"
#include "parallel/nccl_comm.h"
#endif

namespace fs = std::filesystem;

namespace temper {
namespace {

std::string find_preset(const std::string& preset) {
  if (preset.find('/') != std::string::npos || preset.ends_with(".json")) return preset;
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("TEMPER_CONFIG_DIR")) dirs.emplace_back(env);
  dirs.emplace_back("configs");
  dirs.emplace_back(TEMPER_CONFIGS_DIR);
  for (const auto& d : dirs) {
    fs::path p = d / "models" / (preset + ".json");
    if (fs::exists(p)) return p.string();
  }
  std::string names;
  for (const auto& d : dirs)
    if (fs::is_directory(d / "models"))
      for (const auto& e : fs::directory_iterator(d / "models"))
        if (e.path().extension() == ".json") names += " " + e.path().stem().string();
  fail("model.preset '{}' not found (looked in configs/models/; available:{})", preset,
       names.empty() ? " none" : names);
}

// Validation micro-batches, fixed for the whole run.
std::vector<MicroBatch> validation_batches(std::shared_ptr<const DocumentSource> docs,
                                           const RunConfig& c, int32_t pad_id, bool whole_documents) {
  std::vector<MicroBatch> out;
  if (docs->size() == 0) return out;
  DocumentLoader loader(std::move(docs), uint64_t(c.seed), false, c.data.packing, pad_id,
                        whole_documents);
  for (int64_t i = 0; i < c.train.eval_batches; ++i)
    out.push_back(loader.next(c.train.micro_batch_size, c.train.seq_len));
  return out;
}

struct TrainingData {
  std::shared_ptr<const DocumentSource> train, val;
  int32_t pad_id = 0;
  bool conversations = false;  // chat data: documents are never split (DocumentLoader)
};

// The model's tokenizer must be the one the dataset was made with: the file named in the
// error is tokenizer.json / tokenizer.model, or the GGUF itself.
void check_tokenizer(const RunConfig& c, const TokenDataset& d) {
  const fs::path model(c.model.path);
  fs::path tokenizer_file;
  if (!c.model.path.empty() && fs::is_directory(model)) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"})
      if (tokenizer_file.empty() && fs::exists(model / name)) tokenizer_file = model / name;
  } else if (!c.model.path.empty() && is_gguf_file(model)) {
    tokenizer_file = model;
  }
  if (tokenizer_file.empty()) return;
  const std::string fp = load_model_tokenizer(model).tokenizer.fingerprint();
  if (fp != d.tokenizer_fingerprint)
    fail("{}: made with another tokenizer (fingerprint '{}') than the model's {} ('{}'); "
         "prepare it again with the model's tokenizer", c.data.path, d.tokenizer_fingerprint,
         tokenizer_file.string(), fp);
}

// Conversations longer than a row cannot be trained whole: split, a reply would lose its
// prompt (or, padded, be cut off). They are left out and counted; none left is an error
// that says so.
void drop_long_conversations(TrainingData& data, const RunConfig& c, bool rank0) {
  const int64_t seq_len = c.train.seq_len;
  size_t dropped[2] = {0, 0}, total[2] = {data.train->size(), data.val->size()};
  int64_t longest = 0;
  std::shared_ptr<const DocumentSource>* splits[2] = {&data.train, &data.val};
  for (int s = 0; s < 2; ++s) {
    const DocumentSource& docs = **splits[s];
    std::vector<uint64_t> keep;
    for (size_t i = 0; i < docs.size(); ++i) {
      longest = std::max(longest, docs.length(i));
      if (docs.length(i) <= seq_len) keep.push_back(i);
    }
    dropped[s] = docs.size() - keep.size();
    if (dropped[s] > 0) *splits[s] = std::make_shared<DocumentSubset>(*splits[s], std::move(keep));
  }
  if (data.train->size() == 0)
    fail("{}: every training conversation is longer than train.seq_len={} tokens (the longest "
         "has {}); a conversation is never split mid-turn, so none is left to train on: raise "
         "train.seq_len", c.data.path, seq_len, longest);
  if (rank0 && dropped[0] + dropped[1] > 0)
    log::warn("{}: {} of {} training and {} of {} validation conversations are longer than "
              "train.seq_len={} tokens (the longest has {}) and are left out: a conversation is "
              "never split mid-turn (raise train.seq_len to keep them)",
              c.data.path, dropped[0], total[0], dropped[1], total[1], seq_len, longest);
}

// Padding mode cuts every document to train.seq_len: one whose trained tokens all lie
// beyond it gives no loss. Some: a warning; all: an error naming the cause.
void check_targets_within_rows(const TrainingData& data, const RunConfig& c, bool rank0) {
  if (c.data.packing) return;
  size_t without = 0;
  Document scratch;
  for (size_t i = 0; i < data.train->size(); ++i) {
    const Document& d = data.train->get(i, scratch);
    const size_t n = std::min<size_t>(d.targets.size(), size_t(c.train.seq_len));
    if (std::all_of(d.targets.begin(), d.targets.begin() + n, [](int32_t t) { return t == kIgnoreIndex; }))
      ++without;
  }
  if (without == data.train->size())
    fail("{}: with data.packing=false every document is cut to train.seq_len={} tokens, and no "
         "training document has a trained token within its first {}: raise train.seq_len, or "
         "use data.packing=true", c.data.path.empty() ? "the data" : c.data.path, c.train.seq_len,
         c.train.seq_len);
  if (without > 0 && rank0)
    log::warn("{}: with data.packing=false every document is cut to train.seq_len={} tokens; {} "
              "of {} training documents have no trained token within it and add nothing",
              c.data.path, c.train.seq_len, without, data.train->size());
}

// Generated text, or an HDF5 token dataset made by `temper prepare`.
TrainingData load_training_data(const RunConfig& c, const ModelConfig& mc, bool rank0) {
  TrainingData out;
  if (c.data.source == "hdf5") {
    DatasetDocuments docs = open_token_dataset(c.data.path);
    const TokenDataset& d = docs.meta;
    check_tokenizer(c, d);
    if (d.vocab_size > mc.vocab_size)
      fail("{}: the dataset's vocabulary ({} tokens) is larger than the model's ({}): it was made "
           "with another tokenizer", c.data.path, d.vocab_size, mc.vocab_size);
    out.train = docs.train;
    out.val = docs.val;
    out.pad_id = d.eos_id >= 0 ? int32_t(d.eos_id) : 0;
    out.conversations = is_conversation_format(d.source_format);
    if (out.train->size() == 0) fail("{}: no training documents (every document is in the validation split)", c.data.path);
    if (out.conversations) drop_long_conversations(out, c, rank0);
    check_targets_within_rows(out, c, rank0);
    return out;
  }
  if (mc.vocab_size < kSyntheticMinVocab)
    fail("data.source=synthetic produces byte tokens and EOS {}: needs model vocab_size >= {}, got {}",
         kSyntheticEos, kSyntheticMinVocab, mc.vocab_size);
  SyntheticText text = generate_synthetic_text(synthetic_options(c));
  out.train = std::make_shared<InMemoryDocuments>(std::move(text.train));
  out.val = std::make_shared<InMemoryDocuments>(std::move(text.val));
  out.pad_id = kSyntheticEos;
  return out;
}

std::string backend_name_for(const RunConfig& c, const ProcessInfo& p) {
  // One GPU per process: under a launcher, "cuda" means the local rank's GPU among those
  // this process sees (all of the node's, or its own one under per-task binding).
  if (c.backend == "cuda" && p.world_size > 1)
    return fmt::format("cuda:{}", pick_gpu(p, visible_cuda_devices()));
  return c.backend;
}

// The backend and the communicators its tensors travel over.
void set_up_backend(TrainingRun& run) {
  const RunConfig& c = run.config;
  Placement& place = run.place;
  run.backend = make_backend(backend_name_for(c, place.process));
  run.backend->set_deterministic(c.train.deterministic);
  run.dtype = parse_dtype(c.model.dtype);
  if (run.backend->device().kind == DeviceKind::CPU && run.dtype != DType::F32)
    fail("model.dtype={} but the cpu backend computes in f32; set model.dtype=f32", c.model.dtype);
  run.dp_tensors = place.grid ? &place.grid->dp() : nullptr;
  run.tp_tensors = place.grid ? &place.grid->tp() : nullptr;
#ifdef TEMPER_HAVE_NCCL
  if (place.grid && run.backend->device().kind == DeviceKind::CUDA) {
    auto& cuda = static_cast<CudaBackend&>(*run.backend);
    run.owned_comms.push_back(std::make_unique<NcclComm>(place.grid->dp(), cuda));
    run.dp_tensors = run.owned_comms.back().get();
    run.owned_comms.push_back(std::make_unique<NcclComm>(place.grid->tp(), cuda));
    run.tp_tensors = run.owned_comms.back().get();
  }
#else
  if (place.grid && run.backend->device().kind != DeviceKind::CPU)
    fail("several ranks on the CUDA backend need NCCL, which this build did not find (set "
         "NCCL_ROOT and rebuild)");
#endif
  if (place.grid) run.tp = TensorParallel(*run.tp_tensors, &place.grid->tp());
}

// Prompt tuning's TEXT init as PEFT does it: the model's tokenizer encodes peft.init_text
// as tokenizer(text) would (with BOS where the model adds one), repeated or cut to
// num_virtual_tokens; the table starts as those tokens' embeddings.
void init_prompt_from_text(Transformer& model, const RunConfig& c) {
  if (c.model.path.empty())
    fail("config key 'peft.init_text' needs model.path: the text is encoded with the model's tokenizer");
  const ModelTokenizer mt = load_model_tokenizer(c.model.path);
  std::vector<int32_t> text;
  if (mt.add_bos && mt.bos_id) text.push_back(*mt.bos_id);
  for (int32_t id : mt.tokenizer.encode(c.peft.init_text)) text.push_back(id);
  if (text.empty()) fail("config key 'peft.init_text': the text encodes to no tokens");
  std::vector<int32_t> ids;
  for (size_t i = 0; int64_t(ids.size()) < c.peft.num_virtual_tokens; ++i) ids.push_back(text[i % text.size()]);
  model.init_prompt_from_tokens(ids);
}

// The model: its weights (model.path or the seed) and adapter (model.adapter), unless a
// checkpoint is about to overwrite them (load_weights false).
void set_up_weights(TrainingRun& run, bool load_weights, bool gradients = true) {
  const RunConfig& c = run.config;
  Placement& place = run.place;
  const bool zero1 = c.parallel.zero == 1 && place.dp_size() > 1;
  const bool zero2 = c.parallel.zero == 2 && place.dp_size() > 1;
  run.base_model = c.model.path.empty() ? "" : fs::absolute(c.model.path).lexically_normal().string();
  PeftSpec peft = peft_spec_of(c);
  std::optional<PeftAdapter> adapter;
  if (!c.model.adapter.empty()) {  // continue a PEFT adapter: its structure, its weights
    adapter = read_peft_adapter(c.model.adapter);
    adopt_adapter_structure(peft, *adapter);
  }
  run.model = std::make_unique<Transformer>(run.model_config, *run.backend, run.dtype,
                                            zero1 ? place.dp_size() : 1, run.tp, !zero2 && gradients, peft);
  Transformer& model = *run.model;
  // A checkpoint about to be loaded overwrites every parameter, except the frozen base of a
  // PEFT checkpoint (checkpoint/base.h), which comes from model.path or the seed as always.
  if (!load_weights && model.params().frozen_numel() == 0) {
  } else {
    if (c.model.path.empty()) {
      model.init_weights(uint64_t(c.seed));
    } else {
      if (c.model.path.ends_with(".gguf"))
        load_gguf_weights(model, read_gguf(c.model.path));
      else
        load_hf_weights(model, c.model.path);
      if (place.is_rank0()) log::info("weights from {}", c.model.path);
    }
    model.init_adapters(uint64_t(c.seed));
    if (!peft.prompt.init_text.empty() && !adapter) init_prompt_from_text(model, c);
    if (adapter) {
      load_peft_adapter(model, *adapter);
      if (place.is_rank0()) log::info("adapter from {}", c.model.adapter);
    }
  }
  model.set_dropout_seed(uint64_t(c.seed));
  model.set_recompute(c.train.recompute);
  model.set_loss_chunk(c.train.loss_chunk);
}

// The optimizer and the data-parallel machinery around the model.
void set_up_optimizer(TrainingRun& run) {
  const RunConfig& c = run.config;
  Placement& place = run.place;
  Transformer& model = *run.model;
  const bool zero1 = c.parallel.zero == 1 && place.dp_size() > 1;
  const bool zero2 = c.parallel.zero == 2 && place.dp_size() > 1;
  AdamWConfig oc;
  oc.beta1 = float(c.optim.beta1);
  oc.beta2 = float(c.optim.beta2);
  oc.eps = float(c.optim.eps);
  oc.weight_decay = float(c.optim.weight_decay);
  oc.decay_norms_and_biases = c.optim.decay_norms_and_biases;
  if (zero1) run.shards = std::make_unique<ZeroShards>(model.params(), *run.dp_tensors, &place.grid->dp());
  if (zero2)
    run.grad_shards = std::make_unique<ZeroGradientShards>(
        model.params(), *run.dp_tensors, *run.backend, model.gradient_groups(), &place.grid->dp());
  run.optimizer = run.grad_shards
      ? std::make_unique<AdamW>(model.params(), *run.backend, oc, run.grad_shards->segments())
      : std::make_unique<AdamW>(model.params(), *run.backend, oc,
                                run.shards ? run.shards->shard() : ElementRange{});

  StepOptions& so = run.step_options;
  so.tp = &run.tp;
  // f16 needs loss scaling to keep small gradients; bf16 and f32 do not (tests may force it).
  if (run.dtype == DType::F16 || loss_scale_forced_for_test())
    run.loss_scale = std::make_unique<DynamicLossScale>(c.optim.loss_scale_init, c.optim.loss_scale_window);
  so.loss_scale = run.loss_scale.get();
  if (place.dp_size() > 1) {
    so.dp = &place.grid->dp();
    so.dp_tensors = run.dp_tensors;
    if (run.shards) {
      so.zero = run.shards.get();
    } else if (run.grad_shards) {
      so.zero2 = run.grad_shards.get();
    } else {
      run.buckets = std::make_unique<GradientBuckets>(model.params(), *run.dp_tensors, c.parallel.bucket_mb);
      so.grad_sync = run.buckets.get();
    }
  }
  run.schedule = LrSchedule{c.optim.lr, c.optim.min_lr_ratio, c.optim.warmup_steps,
                            run.length.steps, c.optim.schedule};
}

}  // namespace

PeftSpec peft_spec_of(const RunConfig& c) {
  const PeftSection& e = c.peft;
  PeftSpec spec;
  spec.method = peft_method_of(e.method);
  spec.prompt = {e.num_virtual_tokens, e.init_text, e.prefix_projection, e.encoder_hidden_size};
  spec.bottleneck = {e.reduction_factor, e.adapter_placement == "pfeiffer"};
  spec.ia3.target_modules = e.target_modules;
  spec.ia3.feedforward_modules = e.feedforward_modules;
  spec.trainable = e.trainable;
  spec.modules_to_save = e.modules_to_save;
  spec.nf4 = c.model.quantize == "nf4";
  spec.double_quant = c.model.double_quant;
  LoraSpec& l = spec.lora;
  l.r = e.r;
  l.alpha = e.alpha;
  l.dropout = e.dropout;
  l.rslora = e.use_rslora;
  l.dora = e.use_dora;
  l.gaussian_init = e.init == "gaussian";
  if (!e.target_modules.empty()) l.target_modules = e.target_modules;  // else PEFT's [q_proj, v_proj]
  for (const std::string& text : e.layers) {
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end || v < 0)
      fail("config key 'peft.layers': '{}' is not a block index (a list of integers >= 0)", text);
    l.layers.push_back(v);
  }
  return spec;
}

std::string base_model_name(const RunConfig& c) {
  if (!c.model.path.empty()) return fs::absolute(c.model.path).lexically_normal().string();
  return c.model.preset.empty() ? c.model.config : c.model.preset;
}

SyntheticTextOptions synthetic_options(const RunConfig& c) {
  return {uint64_t(c.seed), c.data.num_docs, c.data.min_doc_tokens, c.data.max_doc_tokens,
          c.data.val_fraction};
}

ModelConfig model_config_for_run(const RunConfig& config, const std::string& checkpoint) {
  const auto& m = config.model;
  ModelConfig mc;
  if (!m.preset.empty()) mc = load_hf_config(find_preset(m.preset));
  else if (!m.config.empty()) mc = load_hf_config(m.config);
  else if (m.path.ends_with(".gguf")) mc = model_config_from_gguf(read_gguf(m.path));
  else if (!m.path.empty()) mc = load_hf_config((fs::path(m.path) / "config.json").string());
  else mc = model_config_of_checkpoint(checkpoint.empty() ? config.checkpoint.load : checkpoint);
  apply_model_overrides(config, mc);
  with_context("model config", [&] { mc.finalize(); });
  return mc;
}

std::string describe_run_length(const RunConfig& config) {
  try {
    RunConfig c = with_absolute_paths(config);
    resolve_global_batch(c, 1);
    const ModelConfig mc = model_config_for_run(c);
    TrainingData data = load_training_data(c, mc, false);
    DocumentLoader loader(std::move(data.train), uint64_t(c.seed), true, c.data.packing,
                          data.pad_id, data.conversations);
    const RunLength n = run_length(c, loader.batches_per_epoch(c.train.micro_batch_size, c.train.seq_len),
                                   1, data.val->size() > 0);
    const std::string global =
        config.train.global_batch_size > 0
            ? fmt::format("{} sequences (train.global_batch_size; grad_accum = {} / ({} rows x dp ranks): "
                          "{} on one rank)", c.train.global_batch_size, c.train.global_batch_size,
                          c.train.micro_batch_size, c.train.grad_accum)
            : fmt::format("{} sequences on one data-parallel rank ({} accum x {} rows; R ranks: R times "
                          "larger, so about 1/R as many steps for train.epochs)",
                          c.train.grad_accum * c.train.micro_batch_size, c.train.grad_accum,
                          c.train.micro_batch_size);
    return fmt::format("# global batch: {}\n# length: {}{}\n# validation: {}\n", global, n.describe(c),
                       config.train.global_batch_size > 0 ? "" : ", for one data-parallel rank",
                       n.eval_every > 0 ? fmt::format("every {} steps and after the last", n.eval_every)
                                        : std::string("none (train.eval_every=0, or no validation split)"));
  } catch (const Error& e) {
    return fmt::format("# length: not known without the data and model: {}\n", e.what());
  }
}

TrainingRun::~TrainingRun() = default;

std::vector<MicroBatch> TrainingRun::next_micro_batches() {
  // Every rank walks the same global stream of micro-batches and keeps its dp share, so the
  // global batch of a step is the same whatever the layout.
  return train_data->next_share(config.train.grad_accum * place.dp_size(), place.dp_size(),
                                place.dp_rank(), config.train.micro_batch_size,
                                config.train.seq_len);
}

std::unique_ptr<TrainingRun> build_training_run(const RunConfig& c, Placement& place,
                                                const std::string& checkpoint) {
  auto run = std::make_unique<TrainingRun>(c, place);
  run->model_config = model_config_for_run(c, checkpoint);
  set_up_backend(*run);
  TrainingData data = load_training_data(c, run->model_config, place.is_rank0());
  run->train_data = std::make_unique<DocumentLoader>(std::move(data.train), uint64_t(c.seed), true,
                                                     c.data.packing, data.pad_id, data.conversations);
  run->length = run_length(c, run->train_data->batches_per_epoch(c.train.micro_batch_size, c.train.seq_len),
                           place.dp_size(), data.val->size() > 0);
  if (run->length.eval_every > 0)
    run->val = validation_batches(std::move(data.val), c, data.pad_id, data.conversations);
  if (c.train.eval_every > 0 && run->val.empty() && place.is_rank0())
    log::warn("train.eval_every={} but the validation split is empty; no evaluation",
              c.train.eval_every);
  set_up_weights(*run, checkpoint.empty());
  set_up_optimizer(*run);
  return run;
}

std::unique_ptr<TrainingRun> build_model_run(const RunConfig& c, Placement& place,
                                             const std::string& checkpoint) {
  auto run = std::make_unique<TrainingRun>(c, place);
  run->model_config = model_config_for_run(c, checkpoint);
  set_up_backend(*run);
  set_up_weights(*run, checkpoint.empty(), /*gradients=*/false);
  return run;
}

void check_ranks_for_tp(const ProcessInfo& process, int64_t tp) {
  if (tp > process.world_size)
    fail("parallel.tp={} needs at least that many ranks, but {} {} running (launch with "
         "launch/temper-mpirun -n N)", tp, process.world_size,
         process.world_size == 1 ? "process is" : "processes are");
}

void start_mpi(Placement& place, int64_t tp, double timeout_s) {
  place.mpi = std::make_unique<MpiRuntime>();
  place.world = std::make_unique<MpiComm>(MPI_COMM_WORLD, "world", timeout_s);
  place.grid = std::make_unique<DeviceGrid>(*place.world, int(tp));
}

}  // namespace temper
