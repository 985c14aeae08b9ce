// The model as a Hugging Face directory: config.json + model.safetensors with the same
// tensor names, shapes and dtype as the model holds ({"format": "pt"} metadata).
#pragma once
#include <string>

#include "model/transformer.h"

namespace temper {

// The base model only: PEFT adapter parameters are left out (peft/adapter_files.h writes
// them). With tensor parallelism every rank of the tp group must call it (the shards are
// gathered over `tp_group`); only a caller with write = true writes the files.
void save_hf_model(Transformer& model, const std::string& dir, const TensorParallel& tp = {},
                   Communicator* tp_group = nullptr, bool write = true);

// Loads the weights of a Hugging Face model directory into `model`: model.safetensors, or
// the files a model.safetensors.index.json names (sharded checkpoints). Every parameter
// must be present with its full shape (a tied head is the embedding and is not looked
// up); F32/BF16/F16 tensors are converted to the model's dtype; under tensor parallelism
// each rank takes its own shard. PEFT adapter parameters are not looked up. Errors name
// the file and tensor. A tensor the model does
// not use is an error too (the loaded model would differ from the checkpoint's), except
// rotary inv_freq buffers and a tied model's lm_head.weight equal to the embedding.
void load_hf_weights(Transformer& model, const std::string& dir);

// The dtype the weights of a Hugging Face directory are stored in (headers only): F32, BF16
// or F16 when every tensor has it, else (mixed or other dtypes) F32, which holds them all.
DType hf_weights_dtype(const std::string& dir);

// This rank's part of a parameter's full (row-major) values under tensor parallelism.
std::vector<float> take_shard(const std::vector<float>& full, const Parameter& p);
// Writes a parameter from its full values: this rank's shard, in the parameter's dtype; an
// NF4 parameter (QLoRA) gets the whole tensor's quantization (its blocks of it).
void set_parameter(Backend& backend, Parameter& p, const std::vector<float>& full);

}  // namespace temper
