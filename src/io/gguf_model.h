// A whole model from a GGUF file: the shape from its metadata, every weight dequantised
// to f32, llama's Q/K rows unpermuted, then stored in the model's dtype (each tensor-
// parallel rank taking its slice).
#pragma once
#include <string>

#include "io/gguf.h"
#include "model/transformer.h"

namespace temper {

// Loads every parameter of `model` from `file`; a missing or wrongly shaped tensor is an
// error naming the file and tensor, a tensor the model does not use is a warning.
void load_gguf_weights(Transformer& model, const GgufFile& file);

}  // namespace temper
