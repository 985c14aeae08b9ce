#include "checkpoint/convert.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/hf_model.h"
#include "kernels/backend.h"
#include "model/config.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

// Files of a Hugging Face model directory that travel with an exported model.
constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json",   "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "added_tokens.json", "vocab.json",           "merges.txt",              "generation_config.json",
    "chat_template.jinja"};

// The model directory a checkpoint's weights came from: its `source` (convert), or the
// run config's model.path / checkpoint.load, following checkpoints back a few levels.
std::string source_model_dir(const CheckpointMeta& m, int depth = 0) {
  std::vector<std::string> candidates = {m.source};
  if (!m.config_yaml.empty()) {
    try {
      const YAML::Node c = YAML::Load(m.config_yaml);
      if (c["model"] && c["model"]["path"]) candidates.push_back(c["model"]["path"].as<std::string>());
      if (c["checkpoint"] && c["checkpoint"]["load"]) candidates.push_back(c["checkpoint"]["load"].as<std::string>());
    } catch (const YAML::Exception&) {
      // A config we cannot parse names no directory.
    }
  }
  for (const std::string& c : candidates) {
    if (c.empty()) continue;
    if (fs::is_directory(c)) return c;
    if (depth < 4 && fs::is_regular_file(c) && is_checkpoint_file(c)) {
      const std::string d = source_model_dir(read_checkpoint_meta(c), depth + 1);
      if (!d.empty()) return d;
    }
  }
  return "";
}

}  // namespace

std::string convert_to_checkpoint(const std::string& input, const std::string& out,
                                  const std::string& dtype_name_in) {
  const bool gguf = input.ends_with(".gguf");
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
  fs::rename(tmp, out);
  return fmt::format("{}: {} tensors, {:.3f}M parameters ({}) from {}", out, model.params().size(),
                     double(model.params().numel()) / 1e6, dtype_name(dtype), input);
}

std::string export_hf(const std::string& checkpoint, const std::string& dir) {
  const CheckpointMeta meta = read_checkpoint_meta(checkpoint);
  const ModelConfig mc = with_context(checkpoint + ": /meta model_config", [&] {
    return model_config_from_hf_json(nlohmann::json::parse(meta.model_config_json, nullptr, false),
                                     "config.json text");
  });
  auto backend = make_backend("cpu");
  Transformer model(mc, *backend, parse_dtype(meta.model_dtype), 1, {}, false);
  load_checkpoint(checkpoint, model, nullptr, nullptr);
  save_hf_model(model, dir);
  std::string copied;
  const std::string src = source_model_dir(meta);
  if (!src.empty()) {
    for (const char* name : kTokenizerFiles) {
      const fs::path from = fs::path(src) / name;
      if (!fs::exists(from)) continue;
      fs::copy_file(from, fs::path(dir) / name, fs::copy_options::overwrite_existing);
      copied += std::string(copied.empty() ? "" : ", ") + name;
    }
  }
  return fmt::format("{}: config.json, model.safetensors ({} tensors, {}){} from {} (step {})", dir,
                     model.params().size(), meta.model_dtype,
                     copied.empty() ? "" : ", " + copied + " from " + src, checkpoint, meta.step);
}

}  // namespace temper
