// Hugging Face PEFT adapter directories, out and in (shared/reference/peft.md §1.3):
//   adapter_config.json        LoraConfig or IA3Config as PEFT 0.13 writes them
//   adapter_model.safetensors  base_model.model.<module>.lora_A.weight [r, in],
//                              ...lora_B.weight [out, r], ...lora_magnitude_vector [out]
//                              (DoRA); IA3: ...ia3_l [out, 1] or, feed-forward, [1, in];
//                              base_model.model.<param> (modules_to_save), and
//                              {"format": "pt"} metadata; soft prompts (PROMPT_TUNING,
//                              P_TUNING, PREFIX_TUNING): one tensor prompt_embeddings,
//                              what PEFT runs in inference mode (the virtual token
//                              embeddings [N, C], P-tuning's encoder output, or the
//                              flattened prefix [N, L·2·kv_dim], the projection's output)
// so PeftModel.from_pretrained loads what we write and we load what PEFT saves. Errors
// name the file and the key or tensor that is wrong.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/transformer.h"
#include "peft/peft.h"

namespace temper {

struct PeftAdapter {
  std::string dir;
  nlohmann::json config;          // adapter_config.json as read
  PeftMethod method = PeftMethod::Lora;  // peft_type LORA or IA3
  LoraSpec lora;                  // LORA: r, alpha, rslora, dora, targets, layers
  Ia3Spec ia3;                    // IA3: targets, feed-forward modules
  PromptSpec prompt;              // soft prompts: num_virtual_tokens
  BottleneckSpec bottleneck;      // an AdapterHub bottleneck adapter (peft/adapterhub_files.h)
  std::vector<std::string> modules_to_save;
  SafetensorsFile weights;        // adapter_model.safetensors, PEFT's keys
};

// Reads and validates an adapter directory: peft_type LORA (LoRA, rsLoRA, DoRA) with the
// LoraConfig fields we support (errors name those we do not: rank_pattern, lora_bias, ...),
// IA3, or a soft prompt; or an AdapterHub bottleneck adapter (its weights' keys renamed
// to PEFT's form).
PeftAdapter read_peft_adapter(const std::string& dir);
bool is_peft_adapter_dir(const std::string& dir);

// A run that continues an adapter takes its structure from it: method lora and the
// adapter's r, alpha, rsLoRA, DoRA, targets, layers and modules_to_save (dropout and init
// stay the run's). A soft prompt continues as what its file holds: P-tuning's encoder
// output as a prompt-tuning table, a projected prefix as P-tuning v2's keys and values.
void adopt_adapter_structure(PeftSpec& spec, const PeftAdapter& adapter);

// Sets the model's adapter parameters (and modules_to_save weights) from the adapter, each
// tp rank its shard. Every adapter parameter of the model must be in the file with its
// full shape, and every tensor of the file must be one of the model's: an adapter for
// another base (other names or shapes) is an error naming the tensor.
void load_peft_adapter(Transformer& model, const PeftAdapter& adapter);

// Writes dir/adapter_config.json and dir/adapter_model.safetensors from the model's
// trainable adapter parameters and modules_to_save (in the model's dtype). With tensor
// parallelism every rank of the tp group calls it (shards are gathered over tp_group);
// only write = true writes. base_model: adapter_config's base_model_name_or_path.
void save_peft_adapter(Transformer& model, const std::string& dir, const std::string& base_model,
                       const TensorParallel& tp = {}, Communicator* tp_group = nullptr,
                       bool write = true);

// PEFT's file key of one of our parameter names, and back ("" when not an adapter key).
std::string peft_key(const std::string& name);
std::string name_of_peft_key(const std::string& key);

}  // namespace temper
