#include "io/hf_model.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <fmt/ranges.h>
#include <algorithm>
#include <map>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "peft/nf4.h"

namespace temper {

void save_hf_model(Transformer& model, const std::string& dir, const TensorParallel& tp,
                   Communicator* tp_group, bool write) {
  Backend& backend = model.backend();
  std::vector<std::vector<uint8_t>> full = gather_full_parameters(model.params(), backend, tp, tp_group);
  if (!write) return;
  std::filesystem::create_directories(dir);
  SafetensorsFile f;
  f.metadata["format"] = "pt";
  for (size_t i = 0; i < model.params().size(); ++i) {
    const Parameter& p = model.params()[i];
    if (p.init == ParamInit::Adapter) continue;  // the base model only (adapters: peft/adapter_files)
    SafetensorsEntry e;
    switch (p.value.dtype()) {
      case DType::F32: e.dtype = "F32"; break;
      case DType::BF16: e.dtype = "BF16"; break;
      case DType::F16: e.dtype = "F16"; break;
      default: fail("save_hf_model: {} has dtype {}", p.name, dtype_name(p.value.dtype()));
    }
    e.shape.assign(p.full_shape.dims.begin(), p.full_shape.dims.begin() + p.full_shape.ndim);
    e.data = std::move(full[i]);
    f.tensors.emplace(p.name, std::move(e));
  }
  // Write next to the target and rename, so a crash never leaves a half-written model.
  const std::filesystem::path st = std::filesystem::path(dir) / "model.safetensors";
  write_safetensors(st.string() + ".tmp", f);
  std::filesystem::rename(st.string() + ".tmp", st);
  nlohmann::json cfg = model_config_to_hf_json(model.config());
  cfg["torch_dtype"] = model.params().dtype() == DType::F32 ? "float32"
                       : model.params().dtype() == DType::BF16 ? "bfloat16"
                                                                             : "float16";
  std::ofstream(std::filesystem::path(dir) / "config.json") << cfg.dump(2) << "\n";
}

namespace {

// name -> file for every tensor of the checkpoint in `dir`.
std::map<std::string, std::string> weight_files(const std::filesystem::path& dir) {
  std::map<std::string, std::string> map;
  const auto index = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(index)) {
    nlohmann::json j;
    try {
      std::ifstream(index) >> j;
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", index.string(), e.what());
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      fail("{}: no \"weight_map\" object", index.string());
    for (auto& [name, file] : j["weight_map"].items()) map[name] = (dir / file.get<std::string>()).string();
    return map;
  }
  const auto single = dir / "model.safetensors";
  if (!std::filesystem::exists(single))
    fail("{}: neither model.safetensors nor model.safetensors.index.json", dir.string());
  return {{"*", single.string()}};
}

}  // namespace

DType hf_weights_dtype(const std::string& dir) {
  std::set<std::string> dtypes, files;
  for (const auto& [name, file] : weight_files(dir)) files.insert(file);
  for (const std::string& file : files)
    for (const auto& [name, e] : read_safetensors(file, false).tensors) dtypes.insert(e.dtype);
  if (dtypes.size() == 1 && *dtypes.begin() == "BF16") return DType::BF16;
  if (dtypes.size() == 1 && *dtypes.begin() == "F16") return DType::F16;
  return DType::F32;
}

std::vector<float> take_shard(const std::vector<float>& full, const Parameter& p) {
  if (p.split_dim < 0 || p.shards == 1) return full;
  const int64_t n = p.shape.numel();
  std::vector<float> out(size_t(n), 0.0f);
  if (p.split_dim == 0) {
    std::copy(full.begin() + p.shard * n, full.begin() + (p.shard + 1) * n, out.begin());
  } else {
    const int64_t rows = p.shape[0], cols = n / rows, full_cols = cols * p.shards;
    for (int64_t r = 0; r < rows; ++r)
      std::copy(full.begin() + r * full_cols + p.shard * cols,
                full.begin() + r * full_cols + (p.shard + 1) * cols, out.begin() + r * cols);
  }
  return out;
}

void set_parameter(Backend& backend, Parameter& p, const std::vector<float>& full) {
  if (p.quantized)  // QLoRA: the whole tensor quantized, this rank's blocks kept
    return set_nf4_parameter(backend, p, nf4_quantize(full.data(), int64_t(full.size()), p.double_quant));
  std::vector<float> values = take_shard(full, p);
  const DType t = p.value.dtype();
  if (t == DType::F32) {
    backend.copy_from_host(p.value, values.data());
    return;
  }
  // Host-side conversion to the parameter dtype, then one copy to the device.
  std::vector<uint16_t> raw(values.size());
  for (size_t i = 0; i < raw.size(); ++i)
    raw[i] = t == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
  backend.copy_from_host(p.value, raw.data());
}

namespace {

// Tensors a checkpoint may hold that the model need not load: rotary inverse frequencies
// (recomputed from rope_theta), and a tied model's lm_head.weight when it is the embedding.
template <typename FileFor>
bool ignorable(Transformer& model, const std::string& name, FileFor& file_for) {
  if (name.ends_with("rotary_emb.inv_freq")) return true;
  if (name != "lm_head.weight" || !model.config().tie_word_embeddings) return false;
  const auto* head = file_for(name);
  const auto* embed = file_for("model.embed_tokens.weight");
  if (!head || !embed || !head->tensors.count(name) || !embed->tensors.count("model.embed_tokens.weight"))
    return false;
  return head->tensors.at(name).to_f32() == embed->tensors.at("model.embed_tokens.weight").to_f32();
}

}  // namespace

void load_hf_weights(Transformer& model, const std::string& dir) {
  const std::map<std::string, std::string> files = weight_files(dir);
  std::map<std::string, SafetensorsFile> opened;
  auto file_for = [&](const std::string& name) -> const SafetensorsFile* {
    auto it = files.find(files.count("*") ? "*" : name);
    if (it == files.end()) return nullptr;
    auto f = opened.find(it->second);
    if (f == opened.end()) f = opened.emplace(it->second, read_safetensors(it->second)).first;
    return &f->second;
  };
  Backend& backend = model.backend();
  std::set<std::string> used;
  auto entry = [&](const std::string& key) -> const SafetensorsEntry* {
    const SafetensorsFile* f = file_for(key);
    return f && f->tensors.count(key) ? &f->tensors.at(key) : nullptr;
  };
  for (Parameter& p : model.params().all()) {
    if (p.init == ParamInit::Adapter) continue;  // PEFT adapters are not part of the base
    const SafetensorsFile* f = file_for(p.name);
    if (!f || !f->tensors.count(p.name))
      fail("{}: tensor '{}' is missing from the checkpoint", dir, p.name);
    const SafetensorsEntry& e = f->tensors.at(p.name);
    const std::vector<int64_t> want(p.full_shape.dims.begin(), p.full_shape.dims.begin() + p.full_shape.ndim);
    if (entry(p.name + ".quant_state.bitsandbytes__nf4")) {  // a bitsandbytes 4-bit weight
      const Nf4Tensor q = nf4_from_bitsandbytes(p.name, want, entry, dir);
      if (p.quantized) {
        set_nf4_parameter(backend, p, q);  // as stored: not quantized again
      } else {
        std::vector<float> dense(size_t(q.numel));
        nf4_dequantize(q, dense.data());
        set_parameter(backend, p, dense);
      }
      used.insert(p.name);
      for (const std::string& k : bitsandbytes_nf4_keys(p.name)) used.insert(k);
      continue;
    }
    if (e.shape != want)
      fail("{}: tensor '{}' has shape [{}], the model expects {}", dir, p.name,
           fmt::join(e.shape, ", "), p.full_shape.str());
    if (e.dtype != "F32" && e.dtype != "BF16" && e.dtype != "F16")
      fail("{}: tensor '{}' has dtype {} (expected F32, BF16 or F16)", dir, p.name, e.dtype);
    set_parameter(backend, p, e.to_f32());
    used.insert(p.name);
  }
  // Every tensor the checkpoint holds must be used: one the model ignores (say o_proj.bias
  // of a Llama with attention_bias) would make it compute something else than the original.
  std::vector<std::string> names;  // all of the checkpoint's tensors
  if (files.count("*"))
    for (const auto& [name, t] : file_for("*")->tensors) names.push_back(name);
  else
    for (const auto& [name, file] : files) names.push_back(name);
  std::vector<std::string> unused;
  for (const std::string& name : names)
    if (!used.count(name) && !ignorable(model, name, file_for)) unused.push_back(name);
  if (!unused.empty())
    fail("{}: tensor '{}' is not used by this model{}: loading without it would give another "
         "model than the checkpoint's (does config.json describe it, e.g. attention_bias, "
         "tie_word_embeddings?)", dir, unused.front(),
         unused.size() > 1 ? fmt::format(" (nor are {} more: {})", unused.size() - 1,
                                         fmt::join(unused.begin() + 1, unused.begin() + std::min<size_t>(unused.size(), 4), ", "))
                           : "");
}

}  // namespace temper
