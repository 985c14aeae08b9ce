// AdapterHub `adapters` directories for bottleneck adapters (peft.method: adapter), out and in:
//   adapter_config.json   {"config": BnConfig, "hidden_size", "model_class", "model_name",
//                          "model_type", "name", "version"} as adapters 1.0 writes it
//   adapter.safetensors   <module path>.{attention,output}_adapters.adapters.<name>.
//                          adapter_{down.0,up}.{weight,bias}
// so model.load_adapter(dir, use_safetensors=True) loads what we write. Our adapter is the
// BnConfig with the Houlsby block's settings (swish; the sublayer's output is the adapter's
// input; the residual added after), mh_adapter false for the Pfeiffer placement; a config
// that computes anything else is refused, naming the key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/transformer.h"
#include "peft/peft.h"

namespace temper {

// An adapter_config.json of AdapterHub's (rather than PEFT's).
bool is_adapterhub_config(const nlohmann::json& c);

// The bottleneck spec of an AdapterHub config (cfg_file names it in errors), and its
// weights with their keys renamed to PEFT's (base_model.model.<our name>).
BottleneckSpec read_adapterhub_config(const nlohmann::json& c, const std::string& cfg_file);
SafetensorsFile read_adapterhub_weights(const std::string& dir, const nlohmann::json& c);

// Writes the directory from the full (tp-gathered) parameter values, in declaration order.
void write_adapterhub_adapter(const Transformer& model, const std::string& dir, const std::string& base_model,
                              const std::vector<std::vector<uint8_t>>& full);

}  // namespace temper
