// `temper bench`: throughput of training steps for a config's model on random tokens:
// tokens/s, achieved model TFLOP/s, MFU against the device's dense peak, peak memory.
// Model FLOPs per token (docs/user-guide.md, `temper bench`): 2 per weight for the forward GEMMs, 2 for the
// input-gradient GEMMs, 2 more for each trained weight's gradient, plus 12·L·H·Q·T for
// attention: 6·N for full fine-tuning, 4·N + 6·N_lora for LoRA (N: the non-embedding
// parameters plus the LM head; N_lora: the adapters'). The run config's peft section
// chooses the method (`--peft` overrides peft.method).
#pragma once
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/transformer.h"
#include "train/run_config.h"

namespace temper {

struct BenchOptions {
  int64_t warmup_steps = 2;
  int64_t steps = 5;
  std::string peft;  // "": the config's peft.method; else full | partial | lora
  double peak_tflops = 0;  // 0: from the device name, when known
  // Then `steps` more steps with every backend op timed (ProfilingBackend): the result's
  // "profile" holds per-op calls, seconds and share of the step, and GEMM TFLOP/s.
  bool profile = false;
};

// Model FLOPs per trained token: `adapter` extra GEMM weights (LoRA's A and B) beside the
// model's, of which (with the model's) `trained` get weight gradients. Full fine-tuning:
// adapter = 0, trained = N (every GEMM weight).
double model_flops_per_token(const ModelConfig& c, int64_t seq_len, double adapter, double trained);
// The same for a model as built (its adapters and trained weights at full size, whatever
// its tensor-parallel sharding).
double training_flops_per_token(const Transformer& model, int64_t seq_len);
// The GEMM weights of a model (non-embedding parameters plus the LM head: N above).
double gemm_parameters(const ModelConfig& c);
// Dense bf16 peak of a known GPU by its name (H100 SXM/PCIe, H200, A100), else 0.
double known_peak_tflops(const std::string& device_name);

// Runs the benchmark; returns one JSON object with config, hardware and figures.
nlohmann::json run_bench(const RunConfig& config, const BenchOptions& options);
// The figures as a small table for the terminal.
std::string format_bench(const nlohmann::json& result);  // with the profile when present
// The per-op table of a result's "profile".
std::string format_profile(const nlohmann::json& profile);

}  // namespace temper
