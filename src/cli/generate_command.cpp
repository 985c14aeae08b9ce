#include "cli/generate_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/model_tokenizer.h"
#include "generate/generate.h"
#include "generate/text_stream.h"

namespace temper {
namespace {

struct GenerateArgs {
  std::string model, adapter, prompt, system, chat_template, backend = "auto", dtype;
  bool chat = false;
  GenerateOptions options;
};

const char* reason_text(StopReason r) {
  switch (r) {
    case StopReason::StopToken: return "stop token";
    case StopReason::MaxNewTokens: return "--max-new-tokens";
    case StopReason::ContextFull: return "context full";
  }
  return "?";
}

// The prompt's token ids and the tokens that end the reply.
std::vector<int32_t> prompt_tokens(const GenerateArgs& a, const ModelTokenizer& mt,
                                   std::vector<int32_t>& stops) {
  const Tokenizer& tok = mt.tokenizer;
  if (mt.eos_id) stops.push_back(*mt.eos_id);
  if (!a.chat) {
    if (!a.system.empty()) fail("--system needs --chat");
    std::vector<int32_t> ids;
    if (mt.add_bos && mt.bos_id) ids.push_back(*mt.bos_id);
    const std::vector<int32_t> text = tok.encode(a.prompt);
    ids.insert(ids.end(), text.begin(), text.end());
    return ids;
  }
  const ChatTemplate tmpl = a.chat_template.empty()
                                ? detect_chat_template(mt.chat_template, a.model)
                                : chat_template_by_name(a.chat_template);
  std::vector<ChatMessage> messages;
  if (!a.system.empty()) messages.push_back({"system", a.system});
  messages.push_back({"user", a.prompt});
  // The rendered text carries the template's own BOS text, so no BOS is added here.
  const std::vector<int32_t> ids = tok.encode(render_chat(tmpl, messages, true));
  const std::string eot = end_of_turn_text(tmpl);
  if (auto id = tok.token_to_id(eot)) stops.push_back(*id);
  else fail("{}: the chat template's end-of-turn marker '{}' is not a token of the model's tokenizer",
            a.model, eot);
  return ids;
}

void run_generate(const GenerateArgs& a) {
  a.options.sampling.validate();
  const std::string backend_name =
      a.backend == "auto" ? (cuda_backend_available() ? "cuda" : "cpu") : a.backend;
  auto backend = make_backend(backend_name);
  const bool gpu = backend->device().kind == DeviceKind::CUDA;
  if (!a.dtype.empty() && a.dtype != "f32" && a.dtype != "bf16" && a.dtype != "f16")
    fail("--dtype {}: choose f32, bf16 or f16 (bf16 and f16 on the cuda backend only)", a.dtype);
  if (!gpu && !a.dtype.empty() && a.dtype != "f32")
    fail("--dtype {}: the {} backend computes in f32 only; use --dtype f32 (the default there), or "
         "bf16 / f16 with --backend cuda", a.dtype, backend->name());
  const DType dtype = a.dtype.empty() ? (gpu ? DType::BF16 : DType::F32) : parse_dtype(a.dtype);

  // A LoRA run's final/ carries the tokenizer; another adapter directory may not: its base's.
  namespace fs = std::filesystem;
  const bool own_tokenizer = fs::exists(fs::path(a.model) / "tokenizer.json") ||
                             fs::exists(fs::path(a.model) / "tokenizer.model");
  const ModelTokenizer mt =
      load_model_tokenizer(own_tokenizer ? a.model : generation_base_of(a.model));
  GenerateOptions options = a.options;
  const std::vector<int32_t> ids = prompt_tokens(a, mt, options.stop_tokens);
  std::unique_ptr<Transformer> model = load_model_for_generation(a.model, *backend, dtype, a.adapter);
  const ModelConfig& c = model->config();
  options.vocab_limit = mt.tokenizer.vocab_size();  // ids past it have no text
  if (options.stop_tokens.empty() && c.eos_token_id >= 0)
    options.stop_tokens.push_back(int32_t(c.eos_token_id));
  if (int64_t(ids.size()) >= c.max_position_embeddings)
    fail("the prompt has {} tokens; the model's context holds {}", ids.size(),
         c.max_position_embeddings);
  const int64_t capacity =
      std::min<int64_t>(c.max_position_embeddings, int64_t(ids.size()) + options.max_new_tokens);
  CachedDecoder decoder(*model, std::max<int64_t>(capacity, int64_t(ids.size())));

  TextStream stream(mt.tokenizer);
  auto write = [](const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  const GenerateResult r = generate(decoder, ids, options, [&](int32_t t) { write(stream.push(t)); });
  write(stream.finish() + "\n");

  const auto rate = [](size_t n, double s) { return s > 0 ? double(n) / s : 0.0; };
  fmt::print(stderr,
             "prompt: {} tokens in {:.2f} s ({:.1f} tokens/s); generated: {} tokens in {:.2f} s "
             "({:.1f} tokens/s); stopped by {} ({}, {})\n",
             ids.size(), r.prefill_seconds, rate(ids.size(), r.prefill_seconds), r.tokens.size(),
             r.decode_seconds, rate(r.tokens.size(), r.decode_seconds), reason_text(r.reason),
             backend->device_name(), dtype_name(dtype));
}

}  // namespace

Subcommand add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* g = app.add_subcommand(
      "generate", "Generate text from a model (Hugging Face directory or .gguf) with a KV cache");
  g->add_option("model", args->model,
                "Hugging Face model directory, .gguf file, or a PEFT adapter directory (a LoRA "
                "run's final/) whose base it names")
      ->required();
  g->add_option("--adapter", args->adapter,
                "a Hugging Face PEFT LoRA / DoRA adapter directory applied to the model (unmerged)");
  g->add_option("--prompt", args->prompt, "the prompt (the user message with --chat)")->required();
  g->add_flag("--chat", args->chat, "render the prompt through the model's chat template");
  g->add_option("--system", args->system, "system message (with --chat)");
  g->add_option("--chat-template", args->chat_template,
                "template by name instead of the model's: chatml, smollm2, qwen2, llama3, "
                "llama2, mistral, gemma");
  g->add_option("--max-new-tokens", args->options.max_new_tokens, "most tokens to generate")
      ->capture_default_str();
  g->add_option("--temperature", args->options.sampling.temperature, "0 = greedy")
      ->capture_default_str();
  g->add_option("--top-k", args->options.sampling.top_k, "sample among the k most likely; 0 = all")
      ->capture_default_str();
  g->add_option("--top-p", args->options.sampling.top_p,
                "sample within the smallest set of mass >= p; 1 = all")
      ->capture_default_str();
  g->add_option("--seed", args->options.sampling.seed, "sampling seed (the same seed, the same text)")
      ->capture_default_str();
  g->add_option("--backend", args->backend, "auto (cuda when available), cpu, cuda or cuda:N")
      ->capture_default_str();
  g->add_option("--dtype", args->dtype, "f32 | bf16 | f16 (default f32 on cpu, bf16 on cuda)");
  return {g, [args] { run_generate(*args); }};
}

}  // namespace temper
