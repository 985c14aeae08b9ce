#include "peft/adapterhub_files.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "peft/adapter_files.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

constexpr const char* kWeightsFile = "adapter.safetensors";
constexpr const char* kName = "temper";  // the adapter's name in the files we write

// "<path>.attention_adapters.adapter_up.weight" <-> "<path>.attention_adapters.adapters.<name>.adapter_up.weight"
std::string hub_key(const std::string& ours, const std::string& name) {
  const size_t at = ours.find("_adapters.");
  return ours.substr(0, at + 10) + "adapters." + name + "." + ours.substr(at + 10);
}

std::string our_key(const std::string& hub, const std::string& name, const std::string& file) {
  const std::string mid = "_adapters.adapters." + name + ".";
  const size_t at = hub.find(mid);
  if (at == std::string::npos)
    fail("{}: tensor '{}' is not a bottleneck adapter's (expected '...{}...')", file, hub, mid);
  return hub.substr(0, at) + "_adapters." + hub.substr(at + mid.size());
}

// The BnConfig fields we compute, with the only values we accept.
const nlohmann::json& fixed_fields() {
  static const nlohmann::json f = {
      {"adapter_residual_before_ln", false}, {"cross_adapter", false}, {"dropout", 0.0},
      {"init_weights", "bert"}, {"inv_adapter", nullptr}, {"is_parallel", false},
      {"ln_after", false}, {"ln_before", false}, {"non_linearity", "swish"},
      {"original_ln_after", true}, {"original_ln_before", false}, {"output_adapter", true},
      {"phm_layer", false}, {"residual_before_ln", true}, {"scaling", 1.0}, {"use_gating", false}};
  return f;
}

}  // namespace

bool is_adapterhub_config(const nlohmann::json& c) {
  return c.is_object() && c.contains("config") && c["config"].is_object() && c.contains("model_class");
}

BottleneckSpec read_adapterhub_config(const nlohmann::json& c, const std::string& cfg_file) {
  const nlohmann::json& b = c["config"];
  if (b.value("architecture", std::string("bottleneck")) != "bottleneck")
    fail("{}: AdapterHub architecture \"{}\" is not supported (only bottleneck adapters)", cfg_file,
         b.value("architecture", std::string()));
  for (const auto& [key, want] : fixed_fields().items()) {
    if (!b.contains(key)) continue;
    const nlohmann::json& got = b[key];
    const bool same = want.is_number() ? got.is_number() && got.get<double>() == want.get<double>() : got == want;
    if (key == "init_weights") continue;  // how it was initialised does not change the model
    if (!same)
      fail("{}: \"config.{}\" = {} is not supported (Temper's bottleneck adapter has {})", cfg_file, key,
           got.dump(), want.dump());
  }
  if (b.contains("leave_out") && !b["leave_out"].empty())
    fail("{}: \"config.leave_out\" (adapters on some layers only) is not supported", cfg_file);
  if (!b.contains("reduction_factor") || !b["reduction_factor"].is_number())
    fail("{}: \"config.reduction_factor\" must be a number (per-layer factors are not supported)", cfg_file);
  const double rf = b["reduction_factor"].get<double>();
  if (rf < 1 || rf != double(int64_t(rf)))
    fail("{}: \"config.reduction_factor\" = {} must be a whole number >= 1", cfg_file, rf);
  BottleneckSpec s;
  s.reduction_factor = int64_t(rf);
  s.mlp_only = !b.value("mh_adapter", false);
  return s;
}

SafetensorsFile read_adapterhub_weights(const std::string& dir, const nlohmann::json& c) {
  const fs::path path = fs::path(dir) / kWeightsFile;
  if (!fs::exists(path)) {
    if (fs::exists(fs::path(dir) / "pytorch_adapter.bin"))
      fail("{}: only pytorch_adapter.bin (a pickle) is there; save the adapter with "
           "use_safetensors=True to load it", dir);
    fail("{}: no {}", dir, kWeightsFile);
  }
  const std::string name = c.value("name", std::string());
  if (name.empty()) fail("{}: adapter_config.json has no \"name\"", dir);
  SafetensorsFile in = read_safetensors(path.string()), out;
  out.metadata = in.metadata;
  for (auto& [key, e] : in.tensors) out.tensors.emplace(peft_key(our_key(key, name, path.string())), std::move(e));
  return out;
}

void write_adapterhub_adapter(const Transformer& model, const std::string& dir, const std::string& base_model,
                              const std::vector<std::vector<uint8_t>>& full) {
  const ParameterSet& params = model.params();
  SafetensorsFile f;
  for (size_t i = 0; i < params.size(); ++i) {
    const Parameter& p = params[i];
    if (!p.trainable) continue;
    SafetensorsEntry e;
    e.dtype = p.value.dtype() == DType::F32 ? "F32" : p.value.dtype() == DType::BF16 ? "BF16" : "F16";
    e.shape.assign(p.full_shape.dims.begin(), p.full_shape.dims.begin() + p.full_shape.ndim);
    e.data = full[i];
    f.tensors.emplace(hub_key(p.name, kName), std::move(e));
  }
  fs::create_directories(dir);
  const fs::path st = fs::path(dir) / kWeightsFile;
  write_safetensors(st.string() + ".tmp", f);
  fs::rename(st.string() + ".tmp", st);
  const ModelConfig& mc = model.config();
  const BottleneckSpec& b = model.peft().bottleneck;
  nlohmann::json config = fixed_fields();
  config["mh_adapter"] = !b.mlp_only;
  config["reduction_factor"] = b.reduction_factor;
  config["leave_out"] = nlohmann::json::array();
  const nlohmann::json c = {
      {"config", config},
      {"hidden_size", mc.hidden_size},
      {"model_class", model_config_to_hf_json(mc)["architectures"][0]},
      {"model_name", base_model},
      {"model_type", model_config_to_hf_json(mc)["model_type"]},
      {"name", kName},
      {"version", "adapters.1.0.1"},
  };
  std::ofstream(fs::path(dir) / "adapter_config.json") << c.dump(2) << "\n";
}

}  // namespace temper
