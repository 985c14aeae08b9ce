// Internals of the run configuration (run_config.h): the one list of keys, bound to the
// RunConfig fields, and the scalar conversions. The schema (type, default, help) is
// derived from this list, so a key is added in exactly one place.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "train/run_config.h"

namespace temper::config_detail {

// Calls f(key, field, help) for every key, in file order (sections contiguous). `Config`
// is RunConfig or const RunConfig; a field is int64_t, double, bool, std::string, a
// std::optional of one (the model overrides) or a list of strings.
template <typename Config, typename F>
void for_each_config_field(Config& c, F&& f) {
  f("seed", c.seed, "seed of parameter init, synthetic data and shuffling");
  f("out_dir", c.out_dir, "output directory: checkpoints, logs, this config");
  f("backend", c.backend, "compute backend: cpu | cuda | cuda:N");

  auto& m = c.model;
  f("model.preset", m.preset, "model preset: configs/models/<preset>.json");
  f("model.config", m.config, "path to a Hugging Face config.json (instead of a preset)");
  f("model.path", m.path,
    "model to fine-tune: a Hugging Face directory (config.json + safetensors) or a .gguf file");
  f("model.dtype", m.dtype, "parameter / activation dtype: f32 | bf16");
  f("model.adapter", m.adapter,
    "a Hugging Face PEFT adapter directory (LoRA / DoRA) to continue training from");
  f("model.quantize", m.quantize,
    "\"\" | nf4: store the frozen block projections as NF4 (QLoRA, with peft.method lora)");
  f("model.double_quant", m.double_quant, "nf4: quantize the block absmaxes to 8 bits too");
  auto& o = m.overrides;
  f("model.model_type", o.model_type, "override: llama | mistral | qwen2");
  f("model.vocab_size", o.vocab_size, "override: vocabulary size");
  f("model.hidden_size", o.hidden_size, "override: model width");
  f("model.intermediate_size", o.intermediate_size, "override: MLP width");
  f("model.num_hidden_layers", o.num_hidden_layers, "override: transformer blocks");
  f("model.num_attention_heads", o.num_attention_heads, "override: query heads");
  f("model.num_key_value_heads", o.num_key_value_heads, "override: key/value heads (GQA)");
  f("model.head_dim", o.head_dim, "override: per-head dim (0 = hidden / heads)");
  f("model.max_position_embeddings", o.max_position_embeddings, "override: max positions");
  f("model.rms_norm_eps", o.rms_norm_eps, "override: RMSNorm epsilon");
  f("model.rope_theta", o.rope_theta, "override: RoPE base");
  f("model.tie_word_embeddings", o.tie_word_embeddings, "override: LM head = embedding");
  f("model.attention_bias", o.attention_bias, "override: q/k/v biases");
  f("model.sliding_window", o.sliding_window, "override: attention window (0 = full)");
  f("model.initializer_range", o.initializer_range, "override: init std");
  auto& r = o.rope_scaling;
  f("model.rope_scaling.rope_type", r.rope_type, "override: \"\" | default | llama3");
  f("model.rope_scaling.factor", r.factor, "override: llama3 RoPE scaling factor");
  f("model.rope_scaling.low_freq_factor", r.low_freq_factor, "override: llama3 low_freq_factor");
  f("model.rope_scaling.high_freq_factor", r.high_freq_factor,
    "override: llama3 high_freq_factor");
  f("model.rope_scaling.original_max_position_embeddings", r.original_max_position_embeddings,
    "override: llama3 original context length");

  auto& d = c.data;
  f("data.source", d.source,
    "synthetic (generated text) | hdf5 (a token dataset from temper prepare); not given: hdf5 "
    "when data.path is set");
  f("data.path", d.path, "the HDF5 token dataset (data.source=hdf5)");
  f("data.num_docs", d.num_docs, "synthetic: number of documents");
  f("data.val_fraction", d.val_fraction, "share of documents held out for validation");
  f("data.min_doc_tokens", d.min_doc_tokens, "synthetic: shortest document (tokens)");
  f("data.max_doc_tokens", d.max_doc_tokens, "synthetic: longest document (tokens)");
  f("data.packing", d.packing, "pack documents into rows");

  auto& t = c.train;
  f("train.steps", t.steps, "optimizer steps (0 = from train.epochs)");
  f("train.epochs", t.epochs,
    "passes over the training data, fractional allowed (0 = from train.steps; both 0: one epoch)");
  f("train.micro_batch_size", t.micro_batch_size, "rows per micro-batch");
  f("train.grad_accum", t.grad_accum, "micro-batches per optimizer step");
  f("train.global_batch_size", t.global_batch_size,
    "sequences per optimizer step over all data-parallel ranks (0: train.grad_accum says it); "
    "grad_accum = global / (micro_batch_size x dp)");
  f("train.seq_len", t.seq_len, "tokens per row");
  f("train.eval_every", t.eval_every,
    "validate every N steps (0 = never, -1 = every 10% of the run when there is a val split)");
  f("train.eval_batches", t.eval_batches, "micro-batches per validation");
  f("train.recompute", t.recompute, "recompute activations in backward (less memory)");
  f("train.log_every", t.log_every, "log every N steps");
  f("train.loss_chunk", t.loss_chunk, "tokens per LM-head + cross-entropy chunk");
  f("train.progress", t.progress, "progress display: auto | bar | plain");
  f("train.deterministic", t.deterministic,
    "identical bits run to run (ordered reductions, no atomics; may be slower on GPU)");
  f("train.max_nonfinite_steps", t.max_nonfinite_steps,
    "non-finite loss / grad norm steps in a row before the run saves and stops (0 = never)");

  auto& p = c.optim;
  f("optim.lr", p.lr, "peak learning rate");
  f("optim.min_lr_ratio", p.min_lr_ratio, "final lr / peak lr (cosine, linear)");
  f("optim.warmup_steps", p.warmup_steps, "linear warmup steps");
  f("optim.schedule", p.schedule, "lr schedule: cosine | linear | constant");
  f("optim.weight_decay", p.weight_decay, "AdamW decoupled weight decay");
  f("optim.beta1", p.beta1, "AdamW beta1");
  f("optim.beta2", p.beta2, "AdamW beta2");
  f("optim.eps", p.eps, "AdamW epsilon");
  f("optim.grad_clip", p.grad_clip, "max global gradient L2 norm (0 = no clipping)");
  f("optim.loss_scale_init", p.loss_scale_init,
    "f16 only: initial dynamic loss scale (halved on overflow)");
  f("optim.loss_scale_window", p.loss_scale_window,
    "f16 only: steps without overflow before the loss scale doubles");
  f("optim.decay_norms_and_biases", p.decay_norms_and_biases,
    "apply weight decay to norm weights and biases too");

  auto& q = c.parallel;
  f("parallel.tp", q.tp, "tensor-parallel ranks (dp = world size / tp)");
  f("parallel.zero", q.zero, "ZeRO stage: 0 (replicated AdamW state), 1 or 2");
  f("parallel.bucket_mb", q.bucket_mb, "gradient all-reduce bucket size (MiB)");
  f("parallel.timeout_s", q.timeout_s, "a collective not done in this time aborts the job");

  auto& e = c.peft;
  f("peft.method", e.method,
    "what trains: full | partial | lora | ia3 | prompt_tuning | p_tuning | prefix_tuning | "
    "adapter (see docs/peft.md)");
  f("peft.trainable", e.trainable,
    "partial: rules of what trains, regexes over parameter names or head, embed, norm, bias, "
    "last:N");
  f("peft.r", e.r, "lora: rank");
  f("peft.alpha", e.alpha, "lora: lora_alpha (scale alpha / r, or alpha / sqrt(r) with rslora)");
  f("peft.dropout", e.dropout, "lora: dropout on the adapter's input");
  f("peft.target_modules", e.target_modules,
    "lora, ia3: projections to adapt, e.g. [q_proj, v_proj], or all-linear (empty: PEFT's "
    "default, lora [q_proj, v_proj], ia3 [k_proj, v_proj, down_proj])");
  f("peft.feedforward_modules", e.feedforward_modules,
    "ia3: targets whose input is scaled (empty with empty targets: [down_proj])");
  f("peft.layers", e.layers, "lora: block indices to adapt (empty = all)");
  f("peft.modules_to_save", e.modules_to_save,
    "lora: modules trained in full besides the adapters: lm_head, embed_tokens");
  f("peft.use_rslora", e.use_rslora, "lora: scale alpha / sqrt(r) instead of alpha / r");
  f("peft.use_dora", e.use_dora, "lora: DoRA (a trained magnitude per output row)");
  f("peft.init", e.init, "lora: A's init: default (Kaiming-uniform) | gaussian (N(0, 1/r))");
  f("peft.num_virtual_tokens", e.num_virtual_tokens, "prompt_tuning, p_tuning, prefix_tuning: N");
  f("peft.init_text", e.init_text,
    "prompt_tuning: initialise the virtual tokens from this text's token embeddings");
  f("peft.prefix_projection", e.prefix_projection,
    "prefix_tuning: PEFT's reparameterisation MLP (false: P-tuning v2)");
  f("peft.encoder_hidden_size", e.encoder_hidden_size,
    "p_tuning, prefix_tuning with projection: the encoder MLP's width (0: hidden size)");
  f("peft.reduction_factor", e.reduction_factor, "adapter: bottleneck width = hidden / this");
  f("peft.adapter_placement", e.adapter_placement,
    "adapter: houlsby (after attention and MLP) | pfeiffer (after the MLP only)");

  auto& k = c.checkpoint;
  f("checkpoint.every", k.every,
    "save OUT_DIR/checkpoints/step-N.h5 every N steps and at the end (0 = only when stopped)");
  f("checkpoint.keep", k.keep, "complete checkpoints to keep (older ones are deleted)");
  f("checkpoint.resume", k.resume,
    "true: continue from OUT_DIR/checkpoints/latest (a config change that breaks exactness is "
    "refused) | force: continue anyway | false: refuse where checkpoints exist");
  f("checkpoint.load", k.load,
    "start from this checkpoint file when OUT_DIR has no checkpoint of its own");
}

// The schema type of a field's C++ type.
template <typename T>
struct FieldTraits;
template <>
struct FieldTraits<int64_t> {
  static constexpr ConfigValueType type = ConfigValueType::Int;
  static constexpr bool optional = false;
};
template <>
struct FieldTraits<double> {
  static constexpr ConfigValueType type = ConfigValueType::Float;
  static constexpr bool optional = false;
};
template <>
struct FieldTraits<bool> {
  static constexpr ConfigValueType type = ConfigValueType::Bool;
  static constexpr bool optional = false;
};
template <>
struct FieldTraits<std::string> {
  static constexpr ConfigValueType type = ConfigValueType::String;
  static constexpr bool optional = false;
};
template <>
struct FieldTraits<std::vector<std::string>> {
  static constexpr ConfigValueType type = ConfigValueType::List;
  static constexpr bool optional = false;
};
template <typename T>
struct FieldTraits<std::optional<T>> {
  static constexpr ConfigValueType type = FieldTraits<T>::type;
  static constexpr bool optional = true;
};
template <typename T>
using FieldTraitsOf = FieldTraits<std::remove_cvref_t<T>>;

// Scalar text -> value; nullopt when the text is not of the type. Ints are decimal
// (optional sign), floats finite (3e-4, 0.1, 1, ...), bools true/false, yes/no, on/off.
std::optional<int64_t> parse_int(std::string_view text);
std::optional<double> parse_float(std::string_view text);
std::optional<bool> parse_bool(std::string_view text);

// Value -> YAML text that parses back to the same value (floats: shortest round trip;
// strings: double-quoted; an unset optional: "~").
std::string format_value(int64_t v);
std::string format_value(double v);
std::string format_value(bool v);
std::string format_value(const std::string& v);
std::string format_value(const std::vector<std::string>& v);  // ["a", "b"]
template <typename T>
std::string format_value(const std::optional<T>& v) {
  return v ? format_value(*v) : std::string("~");
}

// Levenshtein distance (insert, delete, substitute each cost 1).
size_t edit_distance(std::string_view a, std::string_view b);

// True when `key` is a leaf key of the schema / a proper prefix of one ("model.rope_scaling").
bool is_config_key(const std::string& key);
bool is_config_section(const std::string& key);
// "valid keys under 'train': steps, micro_batch_size, ..." for the deepest section that
// prefixes `key` (or the top-level names).
std::string describe_valid_keys_near(const std::string& key);

}  // namespace temper::config_detail
