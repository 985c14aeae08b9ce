#include "checkpoint/convert.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "checkpoint/base.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/tokenizer_store.h"
#include "core/error.h"
#include "core/log.h"
#include "data/model_tokenizer.h"
#include "data/tokenizer_export.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/hf_model.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "peft/adapter_files.h"
#include "peft/merge.h"

namespace fs = std::filesystem;

namespace temper {

std::string convert_to_checkpoint(const std::string& input, const std::string& out,
                                  const std::string& dtype_name_in) {
  const bool gguf = !fs::is_directory(input) && is_gguf_file(input);
  if (!gguf && !fs::is_directory(input))
    fail("temper convert: '{}' is neither a Hugging Face model directory nor a .gguf file", input);
  auto backend = make_backend("cpu");
  GgufFile g;
  ModelConfig mc;
  DType dtype = DType::F32;
  if (gguf) {
    g = read_gguf(input);
    mc = model_config_from_gguf(g);
  } else {
    mc = load_hf_config((fs::path(input) / "config.json").string());
    dtype = hf_weights_dtype(input);
  }
  if (!dtype_name_in.empty()) dtype = parse_dtype(dtype_name_in);
  // No gradient buffer: the model is only a container for the weights here.
  Transformer model(mc, *backend, dtype, 1, {}, false);
  if (gguf) load_gguf_weights(model, g);
  else load_hf_weights(model, input);
  CheckpointMeta meta;
  meta.source = fs::absolute(input).lexically_normal().string();
  const std::string tmp = out + ".tmp";
  write_checkpoint(tmp, meta, model, nullptr, RankState{}, nullptr);
  // The model's config is in /meta; its tokenizer goes in too (checkpoint/tokenizer_store.h),
  // so a run started from this file needs neither a preset nor the original model.
  const fs::path staging = out + ".tokenizer.tmp";
  fs::remove_all(staging);
  const TokenizerCopy tokenizer = copy_model_tokenizer(input, staging);
  if (!tokenizer.files.empty()) store_tokenizer_files(tmp, tokenizer.files);
  else log::warn("{}: written without a tokenizer ({})", out, tokenizer.why_not);
  fs::remove_all(staging);
  fs::rename(tmp, out);
  return fmt::format("{}: {} tensors, {:.3f}M parameters ({}){} from {}", out, model.params().size(),
                     double(model.params().numel()) / 1e6, dtype_name(dtype),
                     tokenizer.files.empty() ? "" : ", the config and tokenizer", input);
}

namespace {

// The tokenizer of the model the checkpoint came from into `dir`
// (checkpoint/tokenizer_store.h). Without one the export goes on, with a warning. Returns
// ", files from SOURCE" or "".
std::string add_tokenizer(const std::string& checkpoint, const std::string& dir) {
  const TokenizerCopy t = copy_model_tokenizer(checkpoint, dir);
  if (t.files.empty()) {
    log::warn("{}: exported without a tokenizer: {}", dir, t.why_not);
    return "";
  }
  std::string names;
  for (const fs::path& f : t.files) names += (names.empty() ? "" : ", ") + f.filename().string();
  return ", " + names + " from " + t.from;
}

}  // namespace

std::string export_hf(const std::string& checkpoint, const std::string& dir) {
  const CheckpointMeta meta = read_checkpoint_meta(checkpoint);
  auto backend = make_backend("cpu");
  std::unique_ptr<Transformer> model = load_checkpoint_model(checkpoint, *backend);
  if (model->peft().adapters())
    fail("{}: a {} checkpoint: `temper export --to peft` writes its adapter, `temper merge` "
         "a full model with the adapter folded in", checkpoint, peft_method_name(model->peft().method));
  save_hf_model(*model, dir);
  const std::string tokenizer = add_tokenizer(checkpoint, dir);
  return fmt::format("{}: config.json, model.safetensors ({} tensors, {}){} from {} (step {})", dir,
                     model->params().size(), meta.model_dtype, tokenizer, checkpoint, meta.step);
}

std::string export_peft(const std::string& checkpoint, const std::string& dir) {
  const CheckpointMeta meta = read_checkpoint_meta(checkpoint);
  auto backend = make_backend("cpu");
  std::unique_ptr<Transformer> model = load_checkpoint_model(checkpoint, *backend);
  if (!model->peft().adapters())
    fail("{}: not an adapter checkpoint (peft.method {}): export it with --to hf",
         checkpoint, peft_method_name(model->peft().method));
  save_peft_adapter(*model, dir, meta.base_model.empty() ? source_model_of(checkpoint) : meta.base_model);
  const std::string tokenizer = add_tokenizer(checkpoint, dir);
  const bool hub = model->peft().method == PeftMethod::Adapter;  // AdapterHub's layout
  return fmt::format("{}: adapter_config.json, {} ({} trained tensors, {}){} from "
                     "{} (step {})", dir, hub ? "adapter.safetensors" : "adapter_model.safetensors",
                     model->params().size() - size_t(std::count_if(
                         model->params().all().begin(), model->params().all().end(),
                         [](const Parameter& p) { return !p.trainable; })),
                     meta.model_dtype, tokenizer, checkpoint, meta.step);
}

std::string merge_checkpoint(const std::string& checkpoint, const std::string& dir) {
  const CheckpointMeta meta = read_checkpoint_meta(checkpoint);
  auto backend = make_backend("cpu");
  std::unique_ptr<Transformer> adapted = load_checkpoint_model(checkpoint, *backend);
  if (!adapted->peft().adapters())
    fail("{}: no adapter to merge (peft.method {}): export it with --to hf", checkpoint,
         peft_method_name(adapted->peft().method));
  Transformer plain(adapted->config(), *backend, adapted->params().dtype(), 1, {}, false);
  merge_adapters(*adapted, plain);
  save_hf_model(plain, dir);
  const std::string tokenizer = add_tokenizer(checkpoint, dir);
  const PeftSpec& spec = adapted->peft();
  const std::string kind = spec.method == PeftMethod::Ia3 ? "IA3" : spec.lora.dora ? "DoRA" : "LoRA";
  return fmt::format("{}: config.json, model.safetensors ({}; {} merged){} from {} (step {})", dir,
                     meta.model_dtype, kind, tokenizer,
                     checkpoint, meta.step);
}

}  // namespace temper
