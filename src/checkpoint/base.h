// The frozen base of a PEFT checkpoint. A run that trains part of the model (peft.method
// partial or lora) does not write its frozen parameters at every save: the checkpoint
// names the base (/meta base_model: the model directory or GGUF file, or empty for a base
// drawn from the run's seed) and holds one checksum over all frozen tensors (/meta
// base_checksum). A load takes the frozen parameters from wherever the run got its base
// and refuses to go on when their checksum differs: the base changed since the save.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "model/transformer.h"

namespace temper {

class DeviceGrid;

// Σ over the parameters `include` accepts of checksum(tensor) · (2·hash(name) + 1), mod
// 2^64: each tensor's layout-independent checksum (checkpoint/slab.h) of its values in the
// model dtype, weighted by its name so that swapped tensors differ. Each element counts
// once (dp_rank 0 ranks; replicated tensors on tp_rank 0), summed over the ranks of `grid`
// (collective over its world; nullptr: one process).
uint64_t parameter_checksum(Transformer& model, DeviceGrid* grid,
                            const std::function<bool(const Parameter&)>& include);

// Loads a base as a checkpoint's base_model names it into `model`: a Hugging Face
// directory, a GGUF file, a model-only checkpoint (its tensors; adapters keep theirs),
// or, for "", the weights drawn from `seed`. Errors name the base and say it is gone.
void load_base_model(Transformer& model, const std::string& base, uint64_t seed,
                     DeviceGrid* grid = nullptr);

// A checkpoint's model in one process, as it trained: its PEFT structure (/meta/extra
// "peft"), the base it refers to, then its own tensors. Used by export and merge.
std::unique_ptr<Transformer> load_checkpoint_model(const std::string& checkpoint, Backend& backend);

}  // namespace temper
