#include "train/bench.h"

#include <algorithm>
#include <chrono>
#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/profiling_backend.h"
#include "data/loader.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "train/train_step.h"
#include "train/trainer.h"
#include "train/training_run.h"

namespace temper {

double gemm_parameters(const ModelConfig& c) {
  const double head = c.tie_word_embeddings ? double(c.vocab_size) * double(c.hidden_size) : 0.0;
  return double(c.num_non_embedding_parameters()) + head;
}

double model_flops_per_token(const ModelConfig& c, int64_t seq_len, double adapter, double trained) {
  const double n = gemm_parameters(c) + adapter;
  const double attention = 12.0 * double(c.num_hidden_layers) * double(c.num_attention_heads) *
                           double(c.head_dim) * double(seq_len);
  return 4.0 * n + 2.0 * trained + attention;
}

double training_flops_per_token(const Transformer& model, int64_t seq_len) {
  const ModelConfig& mc = model.config();
  // GEMM weights at full size (a tp rank holds a piece): the adapters' (LoRA A, B) and
  // the trained ones (the embedding is a lookup unless it is also the LM head).
  double adapter = 0, trained = 0;
  for (const Parameter& p : model.params().all()) {
    const bool gemm = p.full_shape.ndim == 2 &&
                      (p.name != "model.embed_tokens.weight" || mc.tie_word_embeddings);
    if (gemm && p.init == ParamInit::Adapter) adapter += double(p.full_shape.numel());
    if (gemm && p.trainable) trained += double(p.full_shape.numel());
  }
  return model_flops_per_token(mc, seq_len, adapter, trained);
}

double known_peak_tflops(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("H200")) return 989.0;
  if (has("H100")) return has("PCIe") ? 756.0 : 989.0;
  if (has("A100")) return 312.0;
  return 0.0;
}

namespace {

// The per-op table of the profiled steps, per step: calls, seconds, share of the step's
// wall time and, for GEMMs, achieved TFLOP/s.
nlohmann::json profile_json(const ProfilingBackend& profiler, double step_seconds) {
  const double steps = double(profiler.steps());
  nlohmann::json ops = nlohmann::json::array();
  double op_seconds = 0, gemm_flops = 0;
  for (const OpProfileRow& r : profiler.rows()) {
    nlohmann::json op = {{"op", r.op},
                         {"calls_per_step", double(r.calls) / steps},
                         {"seconds_per_step", r.seconds / steps},
                         {"share_of_step", r.seconds / steps / step_seconds}};
    if (!r.shape.empty()) {
      op["shape"] = r.shape;
      op["flops_per_step"] = r.flops / steps;
      op["tflops"] = r.seconds > 0 ? r.flops / r.seconds / 1e12 : 0.0;
    }
    op_seconds += r.seconds / steps;
    gemm_flops += r.flops / steps;
    ops.push_back(op);
  }
  return {{"steps", profiler.steps()},     {"clock", profiler.clock()},
          {"step_seconds", step_seconds},  {"op_seconds_per_step", op_seconds},
          {"gemm_flops_per_step", gemm_flops}, {"ops", ops}};
}

}  // namespace

nlohmann::json run_bench(const RunConfig& c, const BenchOptions& o) {
  validate_run_config(c);
  if (o.steps < 1 || o.warmup_steps < 0) fail("bench: --steps must be >= 1 and --warmup >= 0");
  const ModelConfig mc = model_config_for_run(c);
  auto device_backend = make_backend(c.backend);
  device_backend->set_deterministic(c.train.deterministic);
  // Every op goes through the profiler, which only forwards until the --profile steps.
  ProfilingBackend profiler(*device_backend);
  Backend* backend = &profiler;
  const DType dtype = parse_dtype(c.model.dtype);
  if (backend->device().kind == DeviceKind::CPU && dtype != DType::F32)
    fail("model.dtype={} but the cpu backend computes in f32", c.model.dtype);
  const int64_t rows = c.train.micro_batch_size, S = c.train.seq_len;
  if (S > mc.max_position_embeddings)
    fail("train.seq_len {} exceeds max_position_embeddings {}", S, mc.max_position_embeddings);

  RunConfig rc = c;
  if (!o.peft.empty()) rc.peft.method = o.peft;
  validate_run_config(rc);
  resolve_global_batch(rc, 1);  // one process
  Transformer model(mc, *backend, dtype, 1, {}, true, peft_spec_of(rc));
  model.init_weights(uint64_t(c.seed));
  model.init_adapters(uint64_t(c.seed));
  model.set_recompute(c.train.recompute);
  model.set_loss_chunk(c.train.loss_chunk);
  AdamW optimizer(model.params(), *backend, AdamWConfig{});
  if (model.params().trainable_numel() == 0) fail("bench: nothing trains (peft.method {})", rc.peft.method);

  // Random tokens, one full-length document per row.
  Rng rng(rng_stream(uint64_t(c.seed), RngPurpose::Data, 0xbe7c));
  auto random_batch = [&] {
    BatchBuilder b(rows, S, 0);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int32_t> t(S);
      for (auto& x : t) x = int32_t(rng.below(uint64_t(mc.vocab_size)));
      Document d = causal_document(std::move(t));
      b.add_document(d.tokens, d.targets);
    }
    return b.finish();
  };
  std::vector<MicroBatch> micro;
  for (int64_t i = 0; i < rc.train.grad_accum; ++i) micro.push_back(random_batch());

  log::info("bench: {} ({:.3f}B parameters, {:.3f}M trained) on {}, {} × {} × {} tokens per step, "
            "peft {}", c.model.preset.empty() ? c.model.config : c.model.preset,
            double(mc.num_parameters()) / 1e9, double(model.params().trainable_numel()) / 1e6,
            backend->device_name(), rc.train.grad_accum, rows, S, rc.peft.method);
  std::vector<double> times;
  for (int64_t s = 0; s < o.warmup_steps + o.steps; ++s) {
    backend->synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    train_step(model, optimizer, micro, 1e-5f, 1.0);
    backend->synchronize();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= o.warmup_steps) times.push_back(dt);
  }
  nlohmann::json profile;
  if (o.profile) {  // after the timed steps, so the clock's own cost never touches them
    profiler.set_enabled(true);
    double seconds = 0;
    for (int64_t s = 0; s < o.steps; ++s) {
      backend->synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      train_step(model, optimizer, micro, 1e-5f, 1.0);
      profiler.end_step();  // waits for the device
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    profiler.set_enabled(false);
    profile = profile_json(profiler, seconds / double(o.steps));
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double tokens = double(rc.train.grad_accum * rows * S);
  const double tps = tokens / median;
  const double tflops = tps * training_flops_per_token(model, S) / 1e12;
  const double peak = o.peak_tflops > 0 ? o.peak_tflops : known_peak_tflops(backend->device_name());
  nlohmann::json j = {
      {"model", c.model.preset.empty() ? c.model.config : c.model.preset},
      {"parameters", model.params().numel()},
      {"trainable_parameters", model.params().trainable_numel()},
      {"device", backend->device_name()},
      {"backend", backend->name()},
      {"dtype", c.model.dtype},
      {"mode", rc.peft.method},
      {"peft", peft_spec_to_json(model.peft())},
      {"seq_len", S},
      {"micro_batch_size", rows},
      {"grad_accum", rc.train.grad_accum},
      {"recompute", c.train.recompute},
      {"steps_timed", o.steps},
      {"step_seconds_median", median},
      {"step_seconds_min", times.front()},
      {"tokens_per_s", tps},
      {"tflops", tflops},
      {"peak_memory_bytes", backend->memory().peak_bytes()},
      {"parameter_bytes", model.params().value_bytes()},
  };
  if (model.params().quantized_numel() > 0)  // QLoRA: what the NF4 base costs per weight
    j["nf4_bytes_per_parameter"] =
        double(model.params().quantized_bytes()) / double(model.params().quantized_numel());
  if (peak > 0) {
    j["peak_tflops"] = peak;
    j["mfu"] = tflops / peak;
  }
  if (o.profile) j["profile"] = profile;
  return j;
}

std::string format_bench(const nlohmann::json& r) {
  std::string s = fmt::format(
      "model {} ({:.3f}B params, {:.3f}M trained) | {} {} | {} | seq {} × {} rows × {} accum\n",
      r["model"].get<std::string>(), r["parameters"].get<double>() / 1e9,
      r["trainable_parameters"].get<double>() / 1e6,
      r["device"].get<std::string>(), r["dtype"].get<std::string>(), r["mode"].get<std::string>(),
      r["seq_len"].get<int64_t>(), r["micro_batch_size"].get<int64_t>(),
      r["grad_accum"].get<int64_t>());
  s += fmt::format("step {:.4f} s (median of {}) | {:.0f} tokens/s | {:.2f} TFLOP/s", 
                   r["step_seconds_median"].get<double>(), r["steps_timed"].get<int64_t>(),
                   r["tokens_per_s"].get<double>(), r["tflops"].get<double>());
  if (r.contains("mfu"))
    s += fmt::format(" | MFU {:.1f}% of {:.0f}", 100.0 * r["mfu"].get<double>(),
                     r["peak_tflops"].get<double>());
  else
    s += " | MFU n/a (unknown peak: pass --peak-tflops)";
  s += fmt::format(" | peak memory {:.1f} MiB", double(r["peak_memory_bytes"].get<size_t>()) / 1048576.0);
  if (r.contains("nf4_bytes_per_parameter"))
    s += fmt::format(" | NF4 base {:.4f} bytes/parameter", r["nf4_bytes_per_parameter"].get<double>());
  s += "\n";
  if (r.contains("profile")) s += format_profile(r["profile"]);
  return s;
}

std::string format_profile(const nlohmann::json& p) {
  const double step = p["step_seconds"].get<double>();
  const double ops = p["op_seconds_per_step"].get<double>();
  std::string s = fmt::format(
      "profile: {} steps timed per op with {}: step {:.4f} s, ops {:.4f} s ({:.1f}% of the step)\n",
      p["steps"].get<int64_t>(), p["clock"].get<std::string>(), step, ops, 100.0 * ops / step);
  s += fmt::format("  {:<24} {:<22} {:>8} {:>11} {:>7} {:>9}\n", "op", "GEMM tokens×in → out",
                   "calls", "ms/step", "share", "TFLOP/s");
  for (const auto& op : p["ops"]) {
    const bool gemm = op.contains("shape");
    s += fmt::format("  {:<24} {:<22} {:>8.0f} {:>11.3f} {:>6.1f}% {:>9}\n",
                     op["op"].get<std::string>(), gemm ? op["shape"].get<std::string>() : "",
                     op["calls_per_step"].get<double>(), 1e3 * op["seconds_per_step"].get<double>(),
                     100.0 * op["share_of_step"].get<double>(),
                     gemm ? fmt::format("{:.2f}", op["tflops"].get<double>()) : "");
  }
  return s;
}

}  // namespace temper
