// Soft prompts (docs/peft.md): learned vectors that enter the model beside the base weights.
//   prompt tuning  N virtual token embeddings before every document's tokens
//   P-tuning       the same, made by PEFT's prompt encoder: embedding → Linear → ReLU →
//                  Linear → ReLU → Linear (the MLP of PEFT's PromptEncoder)
//   prefix tuning  per layer N learned keys and values every query attends to (the
//                  attention op's prefix inputs); with prefix_projection PEFT's
//                  reparameterisation embedding → Linear → tanh → Linear makes all of them
//                  at once, without it they are parameters themselves (P-tuning v2)
// The networks are small and replicated over tp; prefix keys and values are split by kv
// head. All parameters are declared by the model, initialised here, and trained like any
// other (PEFT's initialisations: nn.Embedding N(0, 1), nn.Linear U(±1/sqrt(fan_in))).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "kernels/backend.h"
#include "model/parameters.h"
#include "parallel/tensor_parallel.h"

namespace temper {

// Linear layers with an activation between each pair: widths[0] → widths[1] → ...
class SmallMlp {
 public:
  SmallMlp() = default;
  // Declares `prefix`.{2i}.weight [widths[i+1], widths[i]] and .bias (PyTorch Sequential
  // numbering: the activations take the odd indices), replicated.
  SmallMlp(ParameterSet& params, const std::string& prefix, const std::vector<int64_t>& widths,
           Backend::Activation act);
  bool defined() const { return !weights_.empty(); }
  void init(ParameterSet& params, uint64_t seed) const;
  // out [n, widths.back()] = mlp(x [n, widths[0]]); layer inputs and pre-activations are
  // kept in `arena` for backward.
  Tensor forward(Backend& be, const ParameterSet& params, Arena& arena, Tensor x);
  // Parameter gradients +=; dx [n, widths[0]] += when defined.
  void backward(Backend& be, ParameterSet& params, Arena& arena, Tensor dout, Tensor dx);

 private:
  std::vector<size_t> weights_, biases_;
  Backend::Activation act_ = Backend::Activation::Relu;
  std::vector<Tensor> inputs_, pre_;  // of the last forward: layer inputs, pre-activations
};

// Virtual token embeddings [N, C]: prompt tuning's table, or P-tuning's encoder output.
class VirtualTokens {
 public:
  VirtualTokens() = default;
  // p_tuning: the encoder with hidden width `encoder_hidden` (0: C).
  VirtualTokens(ParameterSet& params, int64_t n, int64_t C, bool p_tuning, int64_t encoder_hidden);
  bool defined() const { return count_ > 0; }
  int64_t count() const { return count_; }
  size_t table() const { return table_; }  // prompt_embeddings / prompt_encoder.embedding
  bool p_tuning() const { return encoder_.defined(); }
  void init(ParameterSet& params, uint64_t seed) const;
  // [N, C] for this forward (the table, or the encoder's output, kept for backward).
  Tensor forward(Backend& be, const ParameterSet& params, Arena& arena);
  // d[N, C] summed over every use of the prompt in the micro-batch.
  void backward(Backend& be, ParameterSet& params, Arena& arena, Tensor d);
  // PEFT's saved "prompt_embeddings" [N, C] on the host: the table, or the encoder's output.
  std::vector<float> peft_embeddings(Backend& be, const ParameterSet& params, Arena& arena);
  void set_from_peft(Backend& be, ParameterSet& params, const std::vector<float>& table) const;  // not P-tuning

 private:
  int64_t count_ = 0;
  size_t table_ = size_t(-1);
  SmallMlp encoder_;
};

// Per-layer prefix keys and values, [N, Hkv·D] each, this rank's kv heads.
class PrefixKv {
 public:
  PrefixKv() = default;
  // N prefix entries for `layers` layers; kv_dim is the whole model's (kv heads × head dim),
  // split by heads over tp.
  PrefixKv(int64_t n, int64_t layers, int64_t kv_dim, int tp_size, int tp_rank);
  // projection: PEFT's reparameterisation MLP (hidden `encoder_hidden`, 0: C) over an
  // embedding [N, kv_dim] (declared with the embedding, their gradients final last).
  void declare_encoder(ParameterSet& params, int64_t C, int64_t encoder_hidden);
  // Without projection: prefix.layers.<l>.{key,value} [N, kv_dim], declared with block l.
  void declare_layer(ParameterSet& params, int64_t layer);
  bool defined() const { return count_ > 0; }
  int64_t count() const { return count_; }
  void init(ParameterSet& params, uint64_t seed) const;
  // Makes this forward's keys and values (runs the MLP when there is one).
  void forward(Backend& be, const ParameterSet& params, Arena& arena);
  Tensor key(const ParameterSet& params, int64_t layer) const;    // [N, Hkv_local·D]
  Tensor value(const ParameterSet& params, int64_t layer) const;
  // Where layer `layer`'s key / value gradients go (accumulated by the attention op).
  Tensor key_grad(const ParameterSet& params, int64_t layer) const;
  Tensor value_grad(const ParameterSet& params, int64_t layer) const;
  // After every layer's backward: the MLP's backward (the gradient of its whole output is
  // summed over tp first: each rank filled its own heads' columns).
  void backward(Backend& be, ParameterSet& params, Arena& arena, const TensorParallel& tp);
  // The whole prefix in PEFT's layout [N, L·2·kv_dim] (layer l's keys at columns
  // [2l·kv_dim, (2l+1)·kv_dim), its values next; PEFT's saved "prompt_embeddings"), on the
  // host. Runs the MLP when there is one; collective over tp (each rank has its heads).
  std::vector<float> peft_embeddings(Backend& be, const ParameterSet& params, Arena& arena,
                                     const TensorParallel& tp);
  // Without projection: every layer's keys and values from PEFT's layout [N, L·2·kv_dim].
  void set_from_peft(Backend& be, ParameterSet& params, const std::vector<float>& flat) const;

 private:
  int64_t count_ = 0, layers_ = 0, kv_dim_ = 0, kv_local_ = 0;
  int tp_size_ = 1, tp_rank_ = 0;
  // out [N, L·2·kv_dim] (zeroed first) gets this rank's columns of (d)keys / (d)values.
  void to_peft_layout(Backend& be, Tensor out, Tensor keys, Tensor values) const;
  std::vector<size_t> per_layer_;  // no projection: key, value of layer 0, 1, ...
  size_t embedding_ = size_t(-1);
  SmallMlp mlp_;
  Tensor keys_, values_, dkeys_, dvalues_;  // projection: [L, N, kv_local] of this forward
};

}  // namespace temper

namespace temper {

struct MicroBatch;

// A micro-batch as the model runs it with soft prompts: every document (cu_seqlens
// segment) gets `virtual_tokens` slots before its tokens (id −1: no embedding row; the
// prompt is written there), whose targets are −100 (the loss is never taken on them, and
// the first real token is not predicted from them); every token's position moves up by
// `shift` (the virtual tokens, or prefix tuning's entries, take positions 0..N−1, as PEFT
// and transformers give them). `starts` gets each segment's first virtual row, `real`
// the row of every original token. A position past max_positions is an error naming
// peft.num_virtual_tokens.
MicroBatch with_soft_prompt(const MicroBatch& batch, int64_t virtual_tokens, int64_t shift,
                            int64_t max_positions, std::vector<int64_t>* starts,
                            std::vector<int64_t>* real);

}  // namespace temper
