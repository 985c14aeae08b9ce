// The model as a Hugging Face directory: config.json + model.safetensors with the same
// tensor names, shapes and dtype as the model holds ({"format": "pt"} metadata).
#pragma once
#include <string>

#include "model/transformer.h"

namespace temper {

// With tensor parallelism every rank of the tp group must call it (the shards are
// gathered over `tp_group`); only a caller with write = true writes the files.
void save_hf_model(Transformer& model, const std::string& dir, const TensorParallel& tp = {},
                   Communicator* tp_group = nullptr, bool write = true);

}  // namespace temper
