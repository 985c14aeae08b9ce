#include "io/hf_model.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"

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
  cfg["torch_dtype"] = model.params().flat_values().dtype() == DType::F32 ? "float32"
                       : model.params().flat_values().dtype() == DType::BF16 ? "bfloat16"
                                                                             : "float16";
  std::ofstream(std::filesystem::path(dir) / "config.json") << cfg.dump(2) << "\n";
}

}  // namespace temper
