// The valid files the HDF5 fuzz targets start from, shared by the targets (their edit mode
// writes them once per process) and make_seeds.cpp (the committed seed corpus).
#pragma once
#include <string>

#include "data/dataset.h"
#include "model/config.h"

namespace temper::fuzz {

// A very small Llama: vocab 16, hidden 8, one block, 2 heads over 1 kv head.
ModelConfig seed_model_config();
// Three documents (one held out) of a 32-token vocabulary, as text or as conversations.
TokenDataset seed_dataset(bool chat);
// A checkpoint of seed_model_config() at step 3, model only or with AdamW state.
void write_seed_checkpoint(const std::string& path, bool with_optimizer);

}  // namespace temper::fuzz
