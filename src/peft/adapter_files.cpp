#include "peft/adapter_files.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/error.h"
#include "io/hf_model.h"
#include "peft/adapterhub_files.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr const char* kPrefix = "base_model.model.";

bool is_adapter(const Parameter& p) { return p.init == ParamInit::Adapter; }

// The short module name of an adapter parameter: "q_proj" for
// model.layers.3.self_attn.q_proj.lora_A.weight or ...q_proj.ia3_l.
std::string module_of_adapter(const std::string& name) {
  const size_t cut = std::min(name.find(".lora_"), name.find(".ia3_l"));
  const std::string path = name.substr(0, cut);
  return path.substr(path.rfind('.') + 1);
}

template <typename T>
T config_value(const nlohmann::json& c, const char* key, T fallback, const std::string& file) {
  if (!c.contains(key) || c[key].is_null()) return fallback;
  try {
    return c[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: \"{}\" has the wrong type ({})", file, key, c[key].dump());
  }
}

// A list of strings, or one string (PEFT: a regex over module paths) as a one-item list.
std::vector<std::string> string_list(const nlohmann::json& c, const char* key, const std::string& file) {
  if (!c.contains(key) || c[key].is_null()) return {};
  if (c[key].is_string()) return {c[key].get<std::string>()};
  if (!c[key].is_array()) fail("{}: \"{}\" must be a list of names or a string", file, key);
  std::vector<std::string> out;
  for (const auto& v : c[key]) {
    if (!v.is_string()) fail("{}: \"{}\" must hold strings, got {}", file, key, v.dump());
    out.push_back(v.get<std::string>());
  }
  return out;
}

SafetensorsFile read_weights(const std::string& dir) {
  const fs::path weights = fs::path(dir) / kWeightsFile;
  if (!fs::exists(weights)) {
    if (fs::exists(fs::path(dir) / "adapter_model.bin"))
      fail("{}: only adapter_model.bin (a pickle) is there; save the adapter with safetensors "
           "(PEFT's default) to load it", dir);
    fail("{}: no {}", dir, kWeightsFile);
  }
  return read_safetensors(weights.string());
}

// PEFT's shape of each adapter parameter of the model: its own, except IA3's vectors,
// [out, 1] on an output and [1, in] on a feed-forward input.
std::map<size_t, std::vector<int64_t>> peft_shapes(const Transformer& model) {
  std::map<size_t, std::vector<int64_t>> out;
  const ParameterSet& params = model.params();
  for (size_t i = 0; i < params.size(); ++i) {
    const Parameter& p = params[i];
    out[i].assign(p.full_shape.dims.begin(), p.full_shape.dims.begin() + p.full_shape.ndim);
  }
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l)
    for (int s = 0; s < 7; ++s) {
      const Ia3Attachment& a = kProjectionSites[s].column_parallel ? model.column_projection(l, s).ia3()
                                                                   : model.row_projection(l, s).ia3();
      if (!a.defined()) continue;
      const int64_t n = params[a.scale].full_shape[0];
      out[a.scale] = a.feedforward ? std::vector<int64_t>{1, n} : std::vector<int64_t>{n, 1};
    }
  return out;
}

constexpr const char* kPromptKey = "prompt_embeddings";

// PEFT's "prompt_embeddings" into the model (prompt tuning's table, or P-tuning v2's
// per-layer keys and values), with its shape checked against the model's.
void load_prompt_embeddings(Transformer& model, const SafetensorsFile& weights, const std::string& file) {
  const ModelConfig& c = model.config();
  const PromptSpec& ps = model.peft().prompt;
  const bool prefix = model.peft().method == PeftMethod::PrefixTuning;
  const std::vector<int64_t> want = {ps.num_virtual_tokens,
                                     prefix ? c.num_hidden_layers * 2 * c.kv_dim() : c.hidden_size};
  for (const auto& [key, e] : weights.tensors)
    if (key != kPromptKey)
      fail("{}: tensor '{}' is not part of a soft prompt (expected only '{}')", file, key, kPromptKey);
  if (!weights.tensors.count(kPromptKey)) fail("{}: tensor '{}' is missing", file, kPromptKey);
  const SafetensorsEntry& e = weights.tensors.at(kPromptKey);
  if (e.shape != want)
    fail("{}: tensor '{}' has shape [{}], this model needs [{}]{}", file, kPromptKey, fmt::join(e.shape, ", "),
         fmt::join(want, ", "), prefix ? " (virtual tokens, layers × 2 × kv heads × head dim)"
                                       : " (virtual tokens, hidden size)");
  if (e.dtype != "F32" && e.dtype != "BF16" && e.dtype != "F16")
    fail("{}: tensor '{}' has dtype {} (expected F32, BF16 or F16)", file, kPromptKey, e.dtype);
  model.set_soft_prompt_embeddings(e.to_f32());
}

// A soft prompt as PEFT saves it in inference mode: what the method feeds the model.
void save_prompt_adapter(Transformer& model, const std::string& dir, const std::string& base_model, bool write) {
  const std::vector<float> values = model.soft_prompt_embeddings();  // collective over tp
  if (!write) return;
  const ModelConfig& mc = model.config();
  const PeftSpec& spec = model.peft();
  const PromptSpec& ps = spec.prompt;
  const bool prefix = spec.method == PeftMethod::PrefixTuning;
  const int64_t width = prefix ? mc.num_hidden_layers * 2 * mc.kv_dim() : mc.hidden_size;
  SafetensorsFile f;
  f.metadata["format"] = "pt";
  f.tensors.emplace(kPromptKey, safetensors_f32(values, {ps.num_virtual_tokens, width}));
  fs::create_directories(dir);
  const fs::path st = fs::path(dir) / kWeightsFile;
  write_safetensors(st.string() + ".tmp", f);
  fs::rename(st.string() + ".tmp", st);
  const int64_t hidden = ps.encoder_hidden_size > 0 ? ps.encoder_hidden_size : mc.hidden_size;
  nlohmann::json c = {
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", base_model},
      {"inference_mode", true},
      {"num_attention_heads", prefix ? mc.num_key_value_heads : mc.num_attention_heads},
      {"num_layers", mc.num_hidden_layers},
      {"num_transformer_submodules", 1},
      {"num_virtual_tokens", ps.num_virtual_tokens},
      {"revision", nullptr},
      {"task_type", "CAUSAL_LM"},
      {"token_dim", prefix ? mc.kv_dim() : mc.hidden_size},  // PEFT's for grouped-query prefixes
  };
  if (spec.method == PeftMethod::PromptTuning) {
    c["peft_type"] = "PROMPT_TUNING";
    c["prompt_tuning_init"] = ps.init_text.empty() ? "RANDOM" : "TEXT";
    c["prompt_tuning_init_text"] = ps.init_text.empty() ? nlohmann::json(nullptr) : nlohmann::json(ps.init_text);
    c["tokenizer_name_or_path"] = ps.init_text.empty() ? nlohmann::json(nullptr) : nlohmann::json(base_model);
    c["tokenizer_kwargs"] = nullptr;
  } else if (spec.method == PeftMethod::PTuning) {
    c["peft_type"] = "P_TUNING";
    c["encoder_reparameterization_type"] = "MLP";
    c["encoder_hidden_size"] = hidden;
    c["encoder_num_layers"] = 2;
    c["encoder_dropout"] = 0.0;
  } else {
    c["peft_type"] = "PREFIX_TUNING";
    c["encoder_hidden_size"] = hidden;
    c["prefix_projection"] = ps.prefix_projection;
  }
  std::ofstream(fs::path(dir) / kConfigFile) << c.dump(2) << "\n";
}

}  // namespace

std::string peft_key(const std::string& name) { return kPrefix + name; }

std::string name_of_peft_key(const std::string& key) {
  return key.starts_with(kPrefix) ? key.substr(std::string(kPrefix).size()) : std::string();
}

bool is_peft_adapter_dir(const std::string& dir) {
  return fs::is_directory(dir) && fs::exists(fs::path(dir) / kConfigFile);
}

PeftAdapter read_peft_adapter(const std::string& dir) {
  PeftAdapter a;
  a.dir = dir;
  const std::string cfg_file = (fs::path(dir) / kConfigFile).string();
  if (!fs::is_directory(dir)) fail("model.adapter: '{}' is not a directory", dir);
  if (!fs::exists(cfg_file))
    fail("{}: no {} (a Hugging Face PEFT adapter directory has adapter_config.json and "
         "adapter_model.safetensors)", dir, kConfigFile);
  try {
    std::ifstream(cfg_file) >> a.config;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", cfg_file, e.what());
  }
  const nlohmann::json& c = a.config;
  if (!c.is_object()) fail("{}: expected a JSON object", cfg_file);
  if (is_adapterhub_config(c)) {
    a.method = PeftMethod::Adapter;
    a.bottleneck = read_adapterhub_config(c, cfg_file);
    a.weights = read_adapterhub_weights(dir, c);
    return a;
  }
  const std::string type = config_value<std::string>(c, "peft_type", "", cfg_file);
  if (type.empty()) fail("{}: no \"peft_type\"", cfg_file);
  if (type == "PROMPT_TUNING" || type == "P_TUNING" || type == "PREFIX_TUNING") {
    a.method = type == "PREFIX_TUNING" ? PeftMethod::PrefixTuning : PeftMethod::PromptTuning;
    a.prompt.num_virtual_tokens = config_value<int64_t>(c, "num_virtual_tokens", 0, cfg_file);
    if (a.prompt.num_virtual_tokens <= 0)
      fail("{}: \"num_virtual_tokens\" = {} must be > 0", cfg_file, a.prompt.num_virtual_tokens);
    if (config_value<int64_t>(c, "num_transformer_submodules", 1, cfg_file) != 1)
      fail("{}: \"num_transformer_submodules\" must be 1 (a decoder-only model)", cfg_file);
    a.weights = read_weights(dir);
    return a;
  }
  if (type != "LORA" && type != "IA3")
    fail("{}: peft_type \"{}\" is not supported here: Temper reads LORA (LoRA, rsLoRA, DoRA), "
         "IA3, PROMPT_TUNING, P_TUNING and PREFIX_TUNING adapters", cfg_file, type);
  a.modules_to_save = string_list(c, "modules_to_save", cfg_file);
  if (config_value<bool>(c, "fan_in_fan_out", false, cfg_file))
    fail("{}: \"fan_in_fan_out\": true (GPT-2 Conv1D layers) is not supported", cfg_file);
  if (type == "IA3") {
    a.method = PeftMethod::Ia3;
    a.ia3.target_modules = string_list(c, "target_modules", cfg_file);
    a.ia3.feedforward_modules = string_list(c, "feedforward_modules", cfg_file);
    if (a.ia3.target_modules.empty()) fail("{}: no \"target_modules\"", cfg_file);
    a.weights = read_weights(dir);
    return a;
  }
  LoraSpec& l = a.lora;
  l.r = config_value<int64_t>(c, "r", 8, cfg_file);  // PEFT's defaults when absent
  l.alpha = config_value<double>(c, "lora_alpha", 8.0, cfg_file);
  l.dropout = config_value<double>(c, "lora_dropout", 0.0, cfg_file);
  l.rslora = config_value<bool>(c, "use_rslora", false, cfg_file);
  l.dora = config_value<bool>(c, "use_dora", false, cfg_file);
  if (l.r <= 0) fail("{}: \"r\" = {} must be > 0", cfg_file, l.r);
  l.target_modules = string_list(c, "target_modules", cfg_file);
  if (l.target_modules.empty()) fail("{}: no \"target_modules\"", cfg_file);
  if (c.contains("layers_to_transform") && !c["layers_to_transform"].is_null()) {
    const auto& v = c["layers_to_transform"];
    if (v.is_number_integer()) l.layers.push_back(v.get<int64_t>());
    else for (const auto& x : v) l.layers.push_back(x.get<int64_t>());
  }
  // What PEFT can express and we do not compute: refuse rather than load another model.
  if (config_value<bool>(c, "lora_bias", false, cfg_file))
    fail("{}: \"lora_bias\": true is not supported", cfg_file);
  if (const std::string bias = config_value<std::string>(c, "bias", "none", cfg_file); bias != "none")
    fail("{}: \"bias\": \"{}\" is not supported (only \"none\")", cfg_file, bias);
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (c.contains(key) && c[key].is_object() && !c[key].empty())
      fail("{}: \"{}\" (per-module ranks or alphas) is not supported", cfg_file, key);
  a.weights = read_weights(dir);
  return a;
}

void adopt_adapter_structure(PeftSpec& spec, const PeftAdapter& a) {
  const double dropout = spec.lora.dropout;
  const bool gaussian = spec.lora.gaussian_init;
  spec.method = a.method;
  spec.prompt = a.prompt;  // (no init text, no projection: the file holds their result)
  spec.bottleneck = a.bottleneck;
  spec.ia3 = a.ia3;
  spec.lora = a.lora;
  spec.lora.dropout = dropout;
  spec.lora.gaussian_init = gaussian;
  spec.modules_to_save = a.modules_to_save;
}

void load_peft_adapter(Transformer& model, const PeftAdapter& a) {
  const std::string file = (fs::path(a.dir) / (a.method == PeftMethod::Adapter ? "adapter.safetensors" : kWeightsFile)).string();
  if (model.peft().method == PeftMethod::PromptTuning || model.peft().method == PeftMethod::PrefixTuning)
    return load_prompt_embeddings(model, a.weights, file);
  ParameterSet& params = model.params();
  const auto shapes = peft_shapes(model);
  std::set<std::string> used;
  for (size_t i = 0; i < params.size(); ++i) {
    Parameter& p = params[i];
    if (!p.trainable && !is_adapter(p)) continue;  // the frozen base: not in an adapter
    // PEFT keeps the magnitude's ".weight" off in files; accept it on as well.
    std::string key = peft_key(p.name);
    if (!a.weights.tensors.count(key) && a.weights.tensors.count(key + ".weight")) key += ".weight";
    if (!a.weights.tensors.count(key))
      fail("{}: tensor '{}' is missing (the adapter has other target modules or layers than "
           "its adapter_config.json says, or is for another model)", file, key);
    const SafetensorsEntry& e = a.weights.tensors.at(key);
    const std::vector<int64_t>& want = shapes.at(i);
    if (e.shape != want)
      fail("{}: tensor '{}' has shape [{}], this model needs [{}]: an adapter for another base "
           "model or rank", file, key, fmt::join(e.shape, ", "), fmt::join(want, ", "));
    if (e.dtype != "F32" && e.dtype != "BF16" && e.dtype != "F16")
      fail("{}: tensor '{}' has dtype {} (expected F32, BF16 or F16)", file, key, e.dtype);
    set_parameter(model.backend(), p, e.to_f32());
    used.insert(key);
  }
  for (const auto& [key, e] : a.weights.tensors)
    if (!used.count(key))
      fail("{}: tensor '{}' is not a parameter of this model's adapter (an adapter for another "
           "base model, or target modules its adapter_config.json does not list)", file, key);
}

void save_peft_adapter(Transformer& model, const std::string& dir, const std::string& base_model,
                       const TensorParallel& tp, Communicator* tp_group, bool write) {
  const PeftSpec& spec = model.peft();
  TEMPER_CHECK(spec.adapters(), "save_peft_adapter: the model has no adapters");
  if (spec.virtual_tokens() || spec.method == PeftMethod::PrefixTuning)
    return save_prompt_adapter(model, dir, base_model, write);
  ParameterSet& params = model.params();
  const std::vector<std::vector<uint8_t>> full = gather_full_parameters(params, model.backend(), tp, tp_group);
  if (!write) return;
  if (spec.method == PeftMethod::Adapter) return write_adapterhub_adapter(model, dir, base_model, full);
  const auto shapes = peft_shapes(model);
  SafetensorsFile f;
  f.metadata["format"] = "pt";
  std::set<std::string> targets, feedforward;
  for (size_t i = 0; i < params.size(); ++i) {
    const Parameter& p = params[i];
    if (!p.trainable) continue;
    if (is_adapter(p)) targets.insert(module_of_adapter(p.name));
    if (is_adapter(p) && shapes.at(i).size() == 2 && shapes.at(i)[0] == 1)
      feedforward.insert(module_of_adapter(p.name));
    SafetensorsEntry e;
    e.dtype = p.value.dtype() == DType::F32 ? "F32" : p.value.dtype() == DType::BF16 ? "BF16" : "F16";
    e.shape = shapes.at(i);
    e.data = full[i];
    f.tensors.emplace(peft_key(p.name), std::move(e));
  }
  fs::create_directories(dir);
  const fs::path st = fs::path(dir) / kWeightsFile;
  write_safetensors(st.string() + ".tmp", f);
  fs::rename(st.string() + ".tmp", st);
  const nlohmann::json to_save = spec.modules_to_save.empty() ? nlohmann::json(nullptr)
                                                              : nlohmann::json(spec.modules_to_save);
  if (spec.method == PeftMethod::Ia3) {
    const nlohmann::json c = {
        {"auto_mapping", nullptr},
        {"base_model_name_or_path", base_model},
        {"fan_in_fan_out", false},
        {"feedforward_modules", std::vector<std::string>(feedforward.begin(), feedforward.end())},
        {"inference_mode", true},
        {"init_ia3_weights", true},
        {"modules_to_save", to_save},
        {"peft_type", "IA3"},
        {"revision", nullptr},
        {"target_modules", std::vector<std::string>(targets.begin(), targets.end())},
        {"task_type", "CAUSAL_LM"},
    };
    std::ofstream(fs::path(dir) / kConfigFile) << c.dump(2) << "\n";
    return;
  }
  const LoraSpec& l = spec.lora;
  nlohmann::json c = {
      {"alpha_pattern", nlohmann::json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", base_model},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", l.gaussian_init ? nlohmann::json("gaussian") : nlohmann::json(true)},
      {"layer_replication", nullptr},
      {"layers_pattern", nullptr},
      {"layers_to_transform", l.layers.empty() ? nlohmann::json(nullptr) : nlohmann::json(l.layers)},
      {"loftq_config", nlohmann::json::object()},
      {"lora_alpha", l.alpha},
      {"lora_dropout", l.dropout},
      {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"modules_to_save", to_save},
      {"peft_type", "LORA"},
      {"r", l.r},
      {"rank_pattern", nlohmann::json::object()},
      {"revision", nullptr},
      {"target_modules", std::vector<std::string>(targets.begin(), targets.end())},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", l.dora},
      {"use_rslora", l.rslora},
  };
  std::ofstream(fs::path(dir) / kConfigFile) << c.dump(2) << "\n";
}

}  // namespace temper
