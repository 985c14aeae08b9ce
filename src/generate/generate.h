// Text generation for quick evaluation (`temper generate`, docs/user-guide.md): load a model, run the
// prompt through a CachedDecoder, then pick one token at a time until a stop token, the
// token limit or the end of the context.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "generate/cached_decoder.h"
#include "generate/sampler.h"

namespace temper {

// A Hugging Face model directory (config.json + safetensors) or a .gguf file, loaded for
// inference (no gradient buffer) in `dtype` on `backend`, with a PEFT LoRA / DoRA adapter
// directory on top when `adapter` names one (unmerged). `path` may itself be an adapter
// directory (a LoRA run's final/): the base is then its base_model_name_or_path.
std::unique_ptr<Transformer> load_model_for_generation(const std::string& path, Backend& backend,
                                                       DType dtype, const std::string& adapter = "");
// The base model directory or GGUF file of `path`: itself, or for an adapter directory
// without a config.json, its adapter_config.json's base_model_name_or_path.
std::string generation_base_of(const std::string& path);

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  SamplingOptions sampling;
  std::vector<int32_t> stop_tokens;  // generation ends after producing one of these
  // > 0: only ids below it are picked (a model vocabulary padded past the tokenizer's).
  int64_t vocab_limit = 0;
};

enum class StopReason { StopToken, MaxNewTokens, ContextFull };

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, a final stop token included
  StopReason reason = StopReason::MaxNewTokens;
  double prefill_seconds = 0.0;  // the prompt's forward
  double decode_seconds = 0.0;   // everything after it
};

// Clears the decoder's cache, prefills `prompt` (at least one token) and generates.
// on_token sees each token as soon as it is chosen (for streaming). Stops when the cache
// is full (ContextFull) even before max_new_tokens.
GenerateResult generate(CachedDecoder& decoder, std::span<const int32_t> prompt,
                        const GenerateOptions& options,
                        const std::function<void(int32_t)>& on_token = {});

}  // namespace temper
