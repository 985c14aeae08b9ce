// A PEFT adapter directory's adapter_config.json (peft/adapter_files.h): LoRA, rsLoRA,
// DoRA, IA3, soft prompts, and AdapterHub's bottleneck config. The input is the JSON; the
// directory's weights file is a small valid one, so the config's checks are what is hit.
#include "fuzz_input.h"
#include "io/safetensors.h"
#include "peft/adapter_files.h"

using namespace temper;

namespace {
const std::string& adapter_dir() {
  static const std::string dir = [] {
    SafetensorsFile weights;
    weights.metadata["format"] = "pt";
    const std::vector<float> a(4 * 8, 0.5f), b(8 * 4, 0.25f);
    weights.tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] =
        safetensors_f32(a, {4, 8});
    weights.tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"] =
        safetensors_f32(b, {8, 4});
    write_safetensors(fuzz::scratch_dir() + "/adapter_model.safetensors", weights);
    write_safetensors(fuzz::scratch_dir() + "/adapter.safetensors", weights);
    return fuzz::scratch_dir();
  }();
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = adapter_dir();
  fuzz::write_scratch_file("adapter_config.json",
                           std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::parses(dir, [&] {
    const PeftAdapter adapter = read_peft_adapter(dir);
    PeftSpec spec;
    adopt_adapter_structure(spec, adapter);
  });
  return 0;
}
