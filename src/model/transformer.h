// The Llama-family decoder: embedding → N × (RMSNorm → attention with RoPE and GQA →
// residual → RMSNorm → SwiGLU MLP → residual) → RMSNorm → LM head (tied or not), with
// an explicit backward pass per block (no autograd) and optional activation recompute.
// The model knows nothing about parallelism or the optimizer.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "data/batch.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/parameters.h"
#include "parallel/tensor_parallel.h"
#include "peft/peft.h"
#include "peft/prompts.h"

namespace temper {

class Transformer {
 public:
  // pad_multiple: the flat parameter and gradient buffers are padded to a multiple of it
  // (ZeRO needs equal shards). tp: this rank's place in a tensor-parallel group; the
  // parameters are then this rank's shards (heads, MLP columns, vocabulary rows).
  // gradient_buffer = false: no flat gradient buffer; the grad-bind hook provides
  // gradient storage group by group during backward (ZeRO-2). peft: what trains, and the
  // adapters the projections carry (src/peft); the default trains every weight.
  Transformer(const ModelConfig& config, Backend& backend, DType dtype, int64_t pad_multiple = 1,
              TensorParallel tp = {}, bool gradient_buffer = true, const PeftSpec& peft = {});
  ~Transformer();

  const ModelConfig& config() const { return config_; }
  ParameterSet& params() { return params_; }
  const ParameterSet& params() const { return params_; }
  Backend& backend() { return backend_; }
  void init_weights(uint64_t seed);  // the base weights (not the adapters)
  // Adapters: LoRA A and B from `seed` (B = 0, so the model is unchanged), DoRA's magnitude
  // from the base weights as they are now (load them first).
  void init_adapters(uint64_t seed);
  // Prompt tuning's TEXT init (PEFT's prompt_tuning_init_text): the virtual token table
  // becomes the embeddings of `ids` (already repeated or cut to the table's length), looked
  // up as the forward does (vocab-parallel under tp). Collective over the tp group.
  void init_prompt_from_tokens(const std::vector<int32_t>& ids);
  // The soft prompt as PEFT saves it ("prompt_embeddings"): virtual token embeddings
  // [N, C] (P-tuning: the encoder's output) or prefix keys and values [N, L·2·kv_dim]
  // (peft/prompts.h). Collective over the tp group. set_: prompt tuning, P-tuning v2.
  std::vector<float> soft_prompt_embeddings();
  void set_soft_prompt_embeddings(const std::vector<float>& values);
  const PeftSpec& peft() const { return peft_; }
  // Dropout masks are drawn from (seed, projection, micro-batch index, element): the index
  // is the global position of the next forward_backward's micro-batch in the run (step ×
  // micro-batches per step + its index in the global batch), so every layout draws alike.
  void set_dropout_seed(uint64_t seed) { dropout_seed_ = seed; }
  void set_micro_batch_index(uint64_t index) { micro_batch_index_ = index; }
  // The projection units of block `layer`, in kProjectionSites order (generation uses them).
  const ColumnParallelProjection& column_projection(int64_t layer, int site) const;
  const RowParallelProjection& row_projection(int64_t layer, int site) const;

  // Activation recompute: keep only each block's input and re-run the block's forward
  // inside its backward.
  void set_recompute(bool on) { recompute_ = on; }
  bool recompute() const { return recompute_; }
  // Tokens per LM-head chunk (the [chunk × V] logits buffer bounds memory).
  void set_loss_chunk(int64_t chunk) { loss_chunk_ = chunk; }

  // Forward and backward on one micro-batch: parameter gradients are ACCUMULATED with
  // d(grad_scale · summed loss). Returns the summed loss and target count.
  LossSum forward_backward(const MicroBatch& batch, float grad_scale);
  // Forward only (evaluation).
  LossSum forward_loss(const MicroBatch& batch);
  // Full logits [T, V] f32 on the host (tests and generation; materialises T×V; not
  // with tensor parallelism).
  std::vector<float> logits(const MicroBatch& batch);

  // Called inside forward_backward as soon as the gradients of parameters [first, last)
  // (indices into params()) are final for that call, in backward order; data parallelism
  // uses it to start reducing them while backward goes on.
  using GradReadyHook = std::function<void(size_t first, size_t last)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_ = std::move(hook); }
  // Called before backward first writes the gradients of parameters [first, last), for
  // the same groups as the ready hook; bind and ready calls nest (last bound, first ready).
  void set_grad_bind_hook(GradReadyHook hook) { grad_bind_ = std::move(hook); }
  // The parameter groups the hooks report, in the order their gradients become final:
  // final norm (+ untied head), blocks L-1 … 0, embedding.
  std::vector<std::pair<size_t, size_t>> gradient_groups() const;

  // Peak bytes of activations and scratch seen so far.
  size_t activation_peak_bytes() const;

 private:
  struct LayerParams;  // indices of one block's parameters
  struct Acts;         // one block's saved activations [T, ...]
  struct Inputs;       // the micro-batch on the device

  void declare_parameters();
  Inputs upload(const MicroBatch& batch);
  // One block's activations; adapter tensors for block `layer`, or for any block (-1).
  void allocate_acts(Acts& a, int64_t T, int64_t layer);
  // Forward of block l from res_in[T,C] into res_out[T,C], saving into `a`.
  void block_forward(int l, Tensor res_in, Tensor res_out, Acts& a, const Inputs& in);
  // dres[T,C]: gradient w.r.t. the block output on entry, w.r.t. its input on exit.
  void block_backward(int l, Tensor res_in, Tensor dres, Acts& a, const Inputs& in);
  // Embedding and all blocks; leaves the final-norm input in residuals_[L].
  void forward_trunk(Inputs& in, bool for_backward);
  Tensor grad_or_none(size_t index);
  // LM head + cross-entropy over token chunks: the fused backend op, or with tensor
  // parallelism the vocab-parallel form (partials exchanged, logits never gathered).
  LossSum lm_head_loss(const Inputs& in, Tensor dx, Tensor dweight, float grad_scale);
  ProjectionContext projection_context(bool training);

  ModelConfig config_;
  Backend& backend_;
  PeftSpec peft_;
  TensorParallel tp_;
  int64_t heads_ = 0, kv_heads_ = 0, ffn_ = 0, vocab_ = 0;  // this rank's share
  DType dtype_;
  ParameterSet params_;
  std::vector<LayerParams> layers_;
  size_t embed_ = 0, final_norm_ = 0, lm_head_ = 0;
  size_t embed_group_end_ = 0;  // the embedding's gradient group: it and the soft prompts
  VirtualTokens virtual_;       // prompt tuning, P-tuning
  PrefixKv prefix_;             // prefix tuning, P-tuning v2
  bool recompute_ = false;
  bool training_ = false;  // forward_backward: dropout on
  int64_t lowest_trained_block_ = 0;  // backward stops there (a frozen embedding needs no more)
  GradReadyHook grad_ready_, grad_bind_;
  int64_t loss_chunk_ = 256;
  uint64_t dropout_seed_ = 0, micro_batch_index_ = 0;

  std::unique_ptr<Arena> const_arena_;  // rope tables
  std::unique_ptr<Arena> act_arena_;    // per-micro-batch activations, reset each call
  Tensor rope_cos_, rope_sin_;          // [P, D/2] f32
};

}  // namespace temper
