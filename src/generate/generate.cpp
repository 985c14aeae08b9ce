#include "generate/generate.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <limits>
#include <optional>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/hf_model.h"
#include "peft/adapter_files.h"

namespace temper {

namespace fs = std::filesystem;

std::string generation_base_of(const std::string& path) {
  if (!is_peft_adapter_dir(path) || fs::exists(fs::path(path) / "config.json")) return path;
  const PeftAdapter a = read_peft_adapter(path);
  const std::string base = a.config.value("base_model_name_or_path", std::string());
  if (base.empty())
    fail("{}: a PEFT adapter whose adapter_config.json names no base_model_name_or_path; give "
         "the base model and --adapter {}", path, path);
  return base;
}

std::unique_ptr<Transformer> load_model_for_generation(const std::string& path, Backend& backend,
                                                       DType dtype, const std::string& adapter_dir) {
  const std::string base = generation_base_of(path);
  const std::string adapter_path = adapter_dir.empty() && base != path ? path : adapter_dir;
  PeftSpec spec;
  std::optional<PeftAdapter> adapter;
  if (!adapter_path.empty()) {
    adapter = read_peft_adapter(adapter_path);
    adopt_adapter_structure(spec, *adapter);
  }
  std::unique_ptr<Transformer> model;
  if (base.ends_with(".gguf")) {
    const GgufFile file = read_gguf(base);
    model = std::make_unique<Transformer>(model_config_from_gguf(file), backend, dtype, 1,
                                          TensorParallel{}, /*gradient_buffer=*/false, spec);
    load_gguf_weights(*model, file);
  } else {
    if (!fs::is_directory(base))
      fail("'{}' is neither a Hugging Face model directory nor a .gguf file", base);
    model = std::make_unique<Transformer>(load_hf_config((fs::path(base) / "config.json").string()),
                                          backend, dtype, 1, TensorParallel{}, false, spec);
    load_hf_weights(*model, base);
  }
  if (adapter) load_peft_adapter(*model, *adapter);
  return model;
}

GenerateResult generate(CachedDecoder& decoder, std::span<const int32_t> prompt,
                        const GenerateOptions& options,
                        const std::function<void(int32_t)>& on_token) {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  if (options.max_new_tokens < 0)
    fail("--max-new-tokens must be >= 0, got {}", options.max_new_tokens);
  if (int64_t(prompt.size()) > decoder.capacity())
    fail("generate: the prompt has {} tokens, more than the {} the context holds", prompt.size(),
         decoder.capacity());
  Sampler sampler(options.sampling);
  GenerateResult result;
  decoder.clear();
  const auto t0 = Clock::now();
  std::vector<float> logits = decoder.forward(prompt);
  const auto t1 = Clock::now();
  result.prefill_seconds = seconds(t0, t1);
  result.reason = StopReason::MaxNewTokens;
  while (int64_t(result.tokens.size()) < options.max_new_tokens) {
    if (options.vocab_limit > 0 && options.vocab_limit < int64_t(logits.size()))
      std::fill(logits.begin() + options.vocab_limit, logits.end(),
                -std::numeric_limits<float>::infinity());
    const int32_t token = sampler.next(logits);
    result.tokens.push_back(token);
    if (on_token) on_token(token);
    const auto& stops = options.stop_tokens;
    if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
      result.reason = StopReason::StopToken;
      break;
    }
    if (int64_t(result.tokens.size()) == options.max_new_tokens) break;
    if (decoder.length() == decoder.capacity()) {
      result.reason = StopReason::ContextFull;
      break;
    }
    const int32_t one[1] = {token};
    logits = decoder.forward(one);
  }
  result.decode_seconds = seconds(t1, Clock::now());
  return result;
}

}  // namespace temper
