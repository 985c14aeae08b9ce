#include "generate/generate.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/hf_model.h"

namespace temper {

std::unique_ptr<Transformer> load_model_for_generation(const std::string& path, Backend& backend,
                                                       DType dtype) {
  namespace fs = std::filesystem;
  std::unique_ptr<Transformer> model;
  if (path.ends_with(".gguf")) {
    const GgufFile file = read_gguf(path);
    model = std::make_unique<Transformer>(model_config_from_gguf(file), backend, dtype, 1,
                                          TensorParallel{}, /*gradient_buffer=*/false);
    load_gguf_weights(*model, file);
  } else {
    if (!fs::is_directory(path))
      fail("'{}' is neither a Hugging Face model directory nor a .gguf file", path);
    model = std::make_unique<Transformer>(load_hf_config((fs::path(path) / "config.json").string()),
                                          backend, dtype, 1, TensorParallel{}, false);
    load_hf_weights(*model, path);
  }
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
