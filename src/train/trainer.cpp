#include "train/trainer.h"

#include <chrono>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/log.h"
#include "data/dataset.h"
#include "data/synthetic.h"
#include "data/tokenizer.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/hf_model.h"
#include "kernels/backend.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "parallel/data_parallel.h"
#include "parallel/grid.h"
#include "parallel/mpi_comm.h"
#include "parallel/process.h"
#include "parallel/zero.h"
#ifdef TEMPER_HAVE_NCCL
#include "kernels/cuda/cuda_backend.h"
#include "parallel/nccl_comm.h"
#endif
#include "train/metrics.h"
#include "train/progress.h"
#include "train/train_step.h"

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
std::vector<MicroBatch> validation_batches(std::vector<Document> docs, const RunConfig& c,
                                           int32_t pad_id) {
  std::vector<MicroBatch> out;
  if (docs.empty() || c.train.eval_every <= 0) return out;
  DocumentLoader loader(std::move(docs), uint64_t(c.seed), false, c.data.packing, pad_id);
  for (int64_t i = 0; i < c.train.eval_batches; ++i)
    out.push_back(loader.next(c.train.micro_batch_size, c.train.seq_len));
  return out;
}

struct TrainingData {
  std::vector<Document> train, val;
  int32_t pad_id = 0;
};

// Generated text, or an HDF5 token dataset made by `temper prepare`.
TrainingData load_training_data(const RunConfig& c, const ModelConfig& mc) {
  TrainingData out;
  if (c.data.source == "hdf5") {
    TokenDataset d = read_token_dataset(c.data.path);
    // A model directory with a tokenizer must match the tokenizer the dataset was made with.
    const fs::path tokenizer_json = fs::path(c.model.path) / "tokenizer.json";
    if (!c.model.path.empty() && fs::is_directory(c.model.path) && fs::exists(tokenizer_json)) {
      const std::string fp = Tokenizer::from_file(tokenizer_json).fingerprint();
      if (fp != d.tokenizer_fingerprint)
        fail("{}: made with another tokenizer (fingerprint '{}') than the model's {} ('{}'); "
             "prepare it again with the model's tokenizer", c.data.path, d.tokenizer_fingerprint,
             tokenizer_json.string(), fp);
    }
    if (d.vocab_size > mc.vocab_size)
      fail("{}: the dataset's vocabulary ({} tokens) is larger than the model's ({}): it was made "
           "with another tokenizer", c.data.path, d.vocab_size, mc.vocab_size);
    out.train = d.documents_of(false);
    out.val = d.documents_of(true);
    out.pad_id = d.eos_id >= 0 ? int32_t(d.eos_id) : 0;
    if (out.train.empty()) fail("{}: no training documents (every document is in the validation split)", c.data.path);
    return out;
  }
  if (mc.vocab_size < kSyntheticMinVocab)
    fail("data.source=synthetic produces byte tokens and EOS {}: needs model vocab_size >= {}, got {}",
         kSyntheticEos, kSyntheticMinVocab, mc.vocab_size);
  SyntheticText text = generate_synthetic_text(synthetic_options(c));
  out.train = std::move(text.train);
  out.val = std::move(text.val);
  out.pad_id = kSyntheticEos;
  return out;
}

}  // namespace

SyntheticTextOptions synthetic_options(const RunConfig& c) {
  return {uint64_t(c.seed), c.data.num_docs, c.data.min_doc_tokens, c.data.max_doc_tokens,
          c.data.val_fraction};
}

ModelConfig model_config_for_run(const RunConfig& config) {
  const auto& m = config.model;
  ModelConfig mc;
  if (!m.preset.empty()) mc = load_hf_config(find_preset(m.preset));
  else if (!m.config.empty()) mc = load_hf_config(m.config);
  else if (m.path.ends_with(".gguf")) mc = model_config_from_gguf(read_gguf(m.path));
  else if (!m.path.empty()) mc = load_hf_config((fs::path(m.path) / "config.json").string());
  apply_model_overrides(config, mc);
  with_context("model config", [&] { mc.finalize(); });
  return mc;
}

namespace {

// Everything a run needs about where it runs: one process, or one rank of an mpirun /
// srun job arranged as a dp × tp grid.
struct Placement {
  ProcessInfo process;
  std::unique_ptr<MpiRuntime> mpi;
  std::unique_ptr<MpiComm> world;
  std::unique_ptr<DeviceGrid> grid;
  int dp_size() const { return grid ? grid->dp_size() : 1; }
  int dp_rank() const { return grid ? grid->dp_rank() : 0; }
  bool is_rank0() const { return process.rank == 0; }
};

std::string backend_name_for(const RunConfig& c, const ProcessInfo& p) {
  // One GPU per process: under a launcher, "cuda" means the local rank's GPU.
  if (c.backend == "cuda" && p.world_size > 1) return fmt::format("cuda:{}", p.local_rank);
  return c.backend;
}

RunSummary train_on(const RunConfig& c, Placement& place) {
  const ModelConfig mc = model_config_for_run(c);
  auto backend = make_backend(backend_name_for(c, place.process));
  backend->set_deterministic(c.train.deterministic);
  const DType dtype = parse_dtype(c.model.dtype);
  if (backend->device().kind == DeviceKind::CPU && dtype != DType::F32)
    fail("model.dtype={} but the cpu backend computes in f32; set model.dtype=f32", c.model.dtype);
  // Tensors travel over MPI on the CPU backend and over NCCL on CUDA; small host values
  // (counts, losses, norm partials) always over MPI.
  Communicator* dp_tensors = place.grid ? &place.grid->dp() : nullptr;
  Communicator* tp_tensors = place.grid ? &place.grid->tp() : nullptr;
#ifdef TEMPER_HAVE_NCCL
  std::unique_ptr<NcclComm> nccl_dp, nccl_tp;
  if (place.grid && backend->device().kind == DeviceKind::CUDA) {
    auto& cuda = static_cast<CudaBackend&>(*backend);
    nccl_dp = std::make_unique<NcclComm>(place.grid->dp(), cuda);
    nccl_tp = std::make_unique<NcclComm>(place.grid->tp(), cuda);
    dp_tensors = nccl_dp.get();
    tp_tensors = nccl_tp.get();
  }
#else
  if (place.grid && backend->device().kind != DeviceKind::CPU)
    fail("several ranks on the CUDA backend need NCCL, which this build did not find (set "
         "NCCL_ROOT and rebuild)");
#endif
  const bool rank0 = place.is_rank0();

  if (rank0) {
    fs::create_directories(c.out_dir);
    std::ofstream(fs::path(c.out_dir) / "config.yaml") << to_yaml(c);
    std::ofstream(fs::path(c.out_dir) / "model_config.json") << model_config_to_hf_json(mc).dump(2);
  }

  // Every rank walks the same global stream of micro-batches and keeps every dp-th one,
  // so the global batch of a step is the same whatever the layout.
  TrainingData data = load_training_data(c, mc);
  DocumentLoader train_data(std::move(data.train), uint64_t(c.seed), true, c.data.packing, data.pad_id);
  std::vector<MicroBatch> val = validation_batches(std::move(data.val), c, data.pad_id);
  if (c.train.eval_every > 0 && val.empty() && rank0)
    log::warn("train.eval_every={} but the validation split is empty; no evaluation",
              c.train.eval_every);

  const bool zero1 = c.parallel.zero == 1 && place.dp_size() > 1;
  const bool zero2 = c.parallel.zero == 2 && place.dp_size() > 1;
  const TensorParallel tp = place.grid ? TensorParallel(*tp_tensors, &place.grid->tp()) : TensorParallel();
  Transformer model(mc, *backend, dtype, zero1 ? place.dp_size() : 1, tp, !zero2);
  if (c.model.path.empty()) {
    model.init_weights(uint64_t(c.seed));
  } else {
    if (c.model.path.ends_with(".gguf"))
      load_gguf_weights(model, read_gguf(c.model.path));
    else
      load_hf_weights(model, c.model.path);
    if (rank0) log::info("weights from {}", c.model.path);
  }
  model.set_recompute(c.train.recompute);
  model.set_loss_chunk(c.train.loss_chunk);
  AdamWConfig oc;
  oc.beta1 = float(c.optim.beta1);
  oc.beta2 = float(c.optim.beta2);
  oc.eps = float(c.optim.eps);
  oc.weight_decay = float(c.optim.weight_decay);
  oc.decay_norms_and_biases = c.optim.decay_norms_and_biases;
  std::unique_ptr<ZeroShards> shards;
  std::unique_ptr<ZeroGradientShards> grad_shards;
  if (zero1) shards = std::make_unique<ZeroShards>(model.params(), *dp_tensors, &place.grid->dp());
  if (zero2)
    grad_shards = std::make_unique<ZeroGradientShards>(model.params(), *dp_tensors, *backend,
                                                       model.gradient_groups(), &place.grid->dp());
  AdamW optimizer = grad_shards ? AdamW(model.params(), *backend, oc, grad_shards->segments())
                                : AdamW(model.params(), *backend, oc,
                                        shards ? shards->shard() : ElementRange{});
  StepOptions step_options;
  step_options.tp = &tp;
  // f16 needs loss scaling to keep small gradients; bf16 and f32 do not.
  std::unique_ptr<DynamicLossScale> loss_scale;
  if (dtype == DType::F16)
    loss_scale = std::make_unique<DynamicLossScale>(c.optim.loss_scale_init, c.optim.loss_scale_window);
  step_options.loss_scale = loss_scale.get();
  std::unique_ptr<GradientBuckets> buckets;
  if (place.dp_size() > 1) {
    step_options.dp = &place.grid->dp();
    step_options.dp_tensors = dp_tensors;
    if (shards) {
      step_options.zero = shards.get();
    } else if (grad_shards) {
      step_options.zero2 = grad_shards.get();
    } else {
      buckets = std::make_unique<GradientBuckets>(model.params(), *dp_tensors, c.parallel.bucket_mb);
      step_options.grad_sync = buckets.get();
    }
  }
  LrSchedule schedule{c.optim.lr, c.optim.min_lr_ratio, c.optim.warmup_steps, c.train.steps,
                      c.optim.schedule};

  const int dp = place.dp_size();
  if (rank0) {
    log::info("temper train: {} layers, hidden {}, {:.2f}M parameters, backend {}, {} train docs",
              mc.num_hidden_layers, mc.hidden_size, double(mc.num_parameters()) / 1e6,
              backend->name(), train_data.size());
    if (place.grid) log::info("grid: {}, {} gradient buckets", place.grid->str(), buckets ? buckets->bucket_count() : 0);
    log::info("global batch: {} dp × {} accum × {} rows × {} tokens; metrics -> {}/metrics.jsonl",
              dp, c.train.grad_accum, c.train.micro_batch_size, c.train.seq_len, c.out_dir);
    log::info("memory per rank (ZeRO-{}): {}", zero2 ? 2 : zero1 ? 1 : 0,
              memory_report(model.params(), optimizer, grad_shards.get()).str());
  }

  std::unique_ptr<MetricsWriter> metrics;
  if (rank0) metrics = std::make_unique<MetricsWriter>((fs::path(c.out_dir) / "metrics.jsonl").string());
  Progress progress(c.train.steps, rank0 ? c.train.progress : "plain", rank0 ? c.train.log_every : 0);
  RunSummary summary;
  for (int64_t step = 1; step <= c.train.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<MicroBatch> micro;
    for (int64_t i = 0; i < c.train.grad_accum * dp; ++i) {
      MicroBatch b = train_data.next(c.train.micro_batch_size, c.train.seq_len);
      if (i % dp == place.dp_rank()) micro.push_back(std::move(b));
    }
    const double lr = schedule.at(step);
    StepResult r = train_step(model, optimizer, micro, float(lr), c.optim.grad_clip, step_options);
    backend->synchronize();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = double(r.tokens) / std::max(secs, 1e-9);
    summary.losses.push_back(r.loss);
    if (r.skipped) ++summary.skipped_steps;
    if (rank0) {
      nlohmann::json line = {{"step", step}, {"loss", r.loss}, {"lr", lr}, {"grad_norm", r.grad_norm},
                             {"tokens_per_s", tps}, {"tokens", r.tokens},
                             {"target_tokens", r.target_tokens}};
      if (dp > 1) line["grad_comm_bytes"] = r.grad_comm_bytes;
      if (r.skipped) {
        line["skipped"] = true;
        log::warn("step {}: non-finite gradient norm, update skipped ({} so far)", step,
                  summary.skipped_steps);
      }
      if (loss_scale) line["loss_scale"] = loss_scale->scale();
      metrics->write(line);
      progress.step(step, r.loss, lr, r.grad_norm, tps);
    }
    const bool eval_now = !val.empty() && (step % c.train.eval_every == 0 || step == c.train.steps);
    if (eval_now) {
      // Every rank evaluates (a tensor-parallel forward needs the whole tp group); the
      // dp replicas agree, rank 0 reports.
      const double vl = evaluate(model, val);
      summary.val_losses.push_back(vl);
      if (rank0) {
        metrics->write({{"step", step}, {"val_loss", vl}});
        progress.eval(step, vl);
      }
    }
  }
  progress.finish();
  summary.peak_bytes = backend->memory().peak_bytes();
  save_hf_model(model, (fs::path(c.out_dir) / "final").string(), tp,
                place.grid ? &place.grid->tp() : nullptr, rank0);
  if (rank0) {
    log::info("done: final loss {:.4f}, peak memory {:.1f} MiB (activations {:.1f} MiB); model -> {}/final",
              summary.losses.back(), double(summary.peak_bytes) / 1048576.0,
              double(model.activation_peak_bytes()) / 1048576.0, c.out_dir);
  }
  return summary;
}

}  // namespace

RunSummary run_training(const RunConfig& c) {
  validate_run_config(c);
  Placement place;
  place.process = detect_process();
  if (c.parallel.tp > place.process.world_size)
    fail("parallel.tp={} needs at least that many ranks, but {} {} running (launch with "
         "launch/temper-mpirun -n N)", c.parallel.tp, place.process.world_size,
         place.process.world_size == 1 ? "process is" : "processes are");
  if (place.process.world_size == 1) return train_on(c, place);

  place.mpi = std::make_unique<MpiRuntime>();
  try {
    place.world = std::make_unique<MpiComm>(MPI_COMM_WORLD, "world", c.parallel.timeout_s);
    place.grid = std::make_unique<DeviceGrid>(*place.world, int(c.parallel.tp));
    return train_on(c, place);
  } catch (const std::exception& e) {
    // Other ranks may be waiting in a collective: take the whole job down now rather than
    // let them hang until their own timeout.
    abort_job(fmt::format("rank {}: {}", place.process.rank, e.what()));
  }
}

}  // namespace temper
