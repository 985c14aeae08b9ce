// Deterministic training state for checkpoint tests: every element of every tensor has a
// value that depends only on (tensor name, kind, its flat index in the full tensor), so a
// model and optimizer under any tp / dp / ZeRO layout can be filled and later checked
// element by element after a load under another layout. The local -> full index mapping
// here is written independently of the checkpoint code's hyperslabs.
#pragma once
#include <string>

#include "model/transformer.h"
#include "optim/adamw.h"

namespace temper::test {

enum StateKind { kMaster = 0, kMomentM = 1, kMomentV = 2, kModel = 3 };

// Flat index in the full tensor of element i of this rank's tensor-parallel shard of p.
int64_t full_index(const Parameter& p, int64_t i);
// The value of element `index` of tensor `name` for `kind`.
float state_value(const std::string& name, StateKind kind, int64_t index);
// What a model of dtype `t` stores for the value x (rounded for bf16 / f16).
float stored_as(DType t, float x);

// Sets the parameters (bf16 / f16: kModel values; f32: kMaster, as the optimizer's master
// weights are the parameters themselves) and, when given, master / m / v of every piece.
void fill_training_state(Transformer& model, AdamW* optimizer);

// The first element that differs from what a load of a checkpoint filled by
// fill_training_state from a model of dtype `written` should give, or "" when all match.
// `file_has_optimizer`: an f32 model then holds the master weights.
std::string check_training_state(Transformer& model, AdamW* optimizer, DType written,
                                 bool file_has_optimizer);

}  // namespace temper::test
