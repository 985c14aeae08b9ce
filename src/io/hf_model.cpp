#include "io/hf_model.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

namespace temper {

void save_hf_model(Transformer& model, const std::string& dir) {
  std::filesystem::create_directories(dir);
  Backend& backend = model.backend();
  SafetensorsFile f;
  f.metadata["format"] = "pt";
  for (const Parameter& p : model.params().all()) {
    SafetensorsEntry e;
    switch (p.value.dtype()) {
      case DType::F32: e.dtype = "F32"; break;
      case DType::BF16: e.dtype = "BF16"; break;
      case DType::F16: e.dtype = "F16"; break;
      default: fail("save_hf_model: {} has dtype {}", p.name, dtype_name(p.value.dtype()));
    }
    e.shape.assign(p.shape.dims.begin(), p.shape.dims.begin() + p.shape.ndim);
    e.data.resize(p.value.nbytes());
    backend.copy_to_host(e.data.data(), p.value);
    f.tensors.emplace(p.name, std::move(e));
  }
  // Write next to the target and rename, so a crash never leaves a half-written model.
  const std::filesystem::path st = std::filesystem::path(dir) / "model.safetensors";
  write_safetensors(st.string() + ".tmp", f);
  std::filesystem::rename(st.string() + ".tmp", st);
  nlohmann::json cfg = model_config_to_hf_json(model.config());
  cfg["torch_dtype"] = model.params().flat_values().dtype() == DType::F32 ? "float32"
                       : model.params().flat_values().dtype() == DType::BF16 ? "bfloat16"
                                                                             : "float16";
  std::ofstream(std::filesystem::path(dir) / "config.json") << cfg.dump(2) << "\n";
}

}  // namespace temper
