// Inference over a Transformer's weights with a key/value cache: the prompt is run once
// (prefill), then each new token attends to the cached keys/values of all earlier ones, so
// a step costs one token's forward instead of the whole sequence's.
//
// The decoder reads the model's parameters by their Hugging Face names and runs the
// model's own projection units (so LoRA / DoRA adapters apply, unmerged) and the same
// backend ops as the training forward (so CPU and CUDA both run it); the cache enters
// attention as the op's prefix keys and values (kernels/backend.h: a prefix sees no causal
// mask and gets no RoPE, so cached keys are stored after RoPE at their own positions).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "model/transformer.h"

namespace temper {

class CachedDecoder {
 public:
  // capacity: the most tokens (prompt + generated) the cache holds; at most the model's
  // max_position_embeddings. The decoder reads the model's weights in place, so the model
  // must outlive it. Not available for a tensor-parallel shard of a model.
  CachedDecoder(Transformer& model, int64_t capacity);
  ~CachedDecoder();

  int64_t length() const { return length_; }      // tokens in the cache
  int64_t capacity() const { return capacity_; }
  void clear() { length_ = 0; }                    // start a new sequence

  // Runs `tokens` at positions [length, length + n), appends their keys and values to the
  // cache and returns f32 logits on the host: [V] for the last token, or [n, V] (every
  // token, row-major) when all_positions. Throws when the cache would overflow.
  std::vector<float> forward(std::span<const int32_t> tokens, bool all_positions = false);

 private:
  struct Layer;  // one block's weights and cache

  // Runs tokens at positions [length, length + n) and appends them to the cache; writes
  // the logits of the last `logit_rows` of them (0, 1 or n) to host[logit_rows, V].
  void run_chunk(std::span<const int32_t> tokens, int64_t logit_rows, float* host);

  Transformer& model_;
  Backend& backend_;
  ModelConfig config_;
  TensorParallel no_tp_;  // generation runs the whole model in one process
  DType dtype_;
  int64_t capacity_ = 0, length_ = 0;
  std::vector<Layer> layers_;
  Tensor embed_, final_norm_, lm_head_;     // [V, C], [C], [V, C] (tied: the embedding)
  std::unique_ptr<Arena> cache_arena_;      // rope tables and the key/value cache
  std::unique_ptr<Arena> scratch_;          // per-call activations, reset each call
  Tensor rope_cos_, rope_sin_;              // [capacity, D/2] f32
};

}  // namespace temper
