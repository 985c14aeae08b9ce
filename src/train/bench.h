// `temper bench`: throughput of training steps for a config's model on random tokens:
// tokens/s, achieved model TFLOP/s, MFU against the device's dense peak, peak memory.
// Model FLOPs per token follow DESIGN §10: 6·N + 12·L·H·Q·T for full fine-tuning and
// 4·N + 12·L·H·Q·T with a frozen base (no weight-gradient GEMMs), where N counts the
// non-embedding parameters plus the LM head.
#pragma once
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "train/run_config.h"

namespace temper {

struct BenchOptions {
  int64_t warmup_steps = 2;
  int64_t steps = 5;
  bool frozen_base = false;
  double peak_tflops = 0;  // 0: from the device name, when known
};

// Model FLOPs per trained token.
double model_flops_per_token(const ModelConfig& c, int64_t seq_len, bool frozen_base);
// Dense bf16 peak of a known GPU by its name (H100 SXM/PCIe, H200, A100), else 0.
double known_peak_tflops(const std::string& device_name);

// Runs the benchmark; returns one JSON object with config, hardware and figures.
nlohmann::json run_bench(const RunConfig& config, const BenchOptions& options);
// The figures as a small table for the terminal.
std::string format_bench(const nlohmann::json& result);

}  // namespace temper
