// The model as a Hugging Face directory: config.json + model.safetensors with the same
// tensor names, shapes and dtype as the model holds ({"format": "pt"} metadata).
#pragma once
#include <string>

#include "model/transformer.h"

namespace temper {

void save_hf_model(Transformer& model, const std::string& dir);

}  // namespace temper
