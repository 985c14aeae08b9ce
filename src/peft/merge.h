// `temper merge`: LoRA / DoRA folded into the base weights, so the result is a plain model
// (PEFT's merge_and_unload):
//   LoRA  W = W0 + s·B·A
//   DoRA  W = m / ‖W0 + s·B·A‖_row ⊙ (W0 + s·B·A)      (each output row rescaled)
//   IA3   W[o, :] ·= l[o], b ·= l (output scale); W[:, i] ·= l[i] (input scale)
// Biases are unchanged. The sums are formed in the models' dtype by the backend's GEMM. An
// NF4 base (QLoRA) is merged onto its dequantized values, the weights the adapter trained on.
#pragma once
#include "model/transformer.h"

namespace temper {

// Sets every parameter of `plain` (the same config and dtype, no adapters, one process)
// from `adapted`: base tensors copied, adapted projections merged.
void merge_adapters(Transformer& adapted, Transformer& plain);

}  // namespace temper
