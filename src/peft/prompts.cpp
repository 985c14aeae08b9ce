#include "peft/prompts.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "data/batch.h"
#include "io/hf_model.h"

namespace temper {

// ---- SmallMlp ---------------------------------------------------------------------------

SmallMlp::SmallMlp(ParameterSet& params, const std::string& prefix, const std::vector<int64_t>& widths,
                   Backend::Activation act)
    : act_(act) {
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    weights_.push_back(params.declare(fmt::format("{}.{}.weight", prefix, 2 * i),
                                      Shape{widths[i + 1], widths[i]}, ParamInit::Adapter, false));
    biases_.push_back(params.declare(fmt::format("{}.{}.bias", prefix, 2 * i), Shape{widths[i + 1]},
                                     ParamInit::Adapter, true));
  }
}

void SmallMlp::init(ParameterSet& params, uint64_t seed) const {
  for (size_t i = 0; i < weights_.size(); ++i) {  // nn.Linear: U(±1/sqrt(fan_in)) for both
    const float bound = 1.0f / std::sqrt(float(params[weights_[i]].full_shape[1]));
    params.draw(weights_[i], seed, Draw::Uniform, bound);
    params.draw(biases_[i], seed, Draw::Uniform, bound);
  }
}

Tensor SmallMlp::forward(Backend& be, const ParameterSet& params, Arena& arena, Tensor x) {
  inputs_.clear();
  pre_.clear();
  for (size_t i = 0; i < weights_.size(); ++i) {
    inputs_.push_back(x);
    const Parameter& w = params[weights_[i]];
    Tensor y = arena.allocate(x.dtype(), Shape{x.size(0), w.shape[0]});
    be.linear_forward(y, x, w.value, params[biases_[i]].value);
    if (i + 1 == weights_.size()) return y;
    pre_.push_back(y);
    x = arena.allocate(x.dtype(), y.shape());
    be.activation_forward(x, y, act_);
  }
  return x;
}

void SmallMlp::backward(Backend& be, ParameterSet& params, Arena& arena, Tensor dout, Tensor dx) {
  for (size_t i = weights_.size(); i-- > 0;) {
    const Parameter& w = params[weights_[i]];
    const Tensor in = inputs_[i];
    Tensor din = i == 0 ? dx : arena.allocate(in.dtype(), in.shape());
    if (i > 0) be.zero(din);
    be.linear_backward(din, w.grad, params[biases_[i]].grad, dout, in, w.value);
    if (i == 0) return;
    Tensor dpre = arena.allocate(in.dtype(), in.shape());  // through the activation
    be.zero(dpre);
    be.activation_backward(dpre, din, pre_[i - 1], act_);
    dout = dpre;
  }
}

// ---- VirtualTokens ------------------------------------------------------------------------

VirtualTokens::VirtualTokens(ParameterSet& params, int64_t n, int64_t C, bool p_tuning,
                             int64_t encoder_hidden)
    : count_(n) {
  if (n <= 0) fail("config key 'peft.num_virtual_tokens' = {} must be > 0", n);
  if (!p_tuning) {
    table_ = params.declare("prompt_embeddings", Shape{n, C}, ParamInit::Adapter, false);
    return;
  }
  const int64_t h = encoder_hidden > 0 ? encoder_hidden : C;
  table_ = params.declare("prompt_encoder.embedding.weight", Shape{n, C}, ParamInit::Adapter, false);
  encoder_ = SmallMlp(params, "prompt_encoder.mlp_head", {C, h, h, C}, Backend::Activation::Relu);
}

void VirtualTokens::init(ParameterSet& params, uint64_t seed) const {
  params.draw(table_, seed, Draw::Normal, 1.0f);  // nn.Embedding's N(0, 1)
  if (encoder_.defined()) encoder_.init(params, seed);
}

Tensor VirtualTokens::forward(Backend& be, const ParameterSet& params, Arena& arena) {
  const Tensor table = params[table_].value;
  return encoder_.defined() ? encoder_.forward(be, params, arena, table) : table;
}

void VirtualTokens::backward(Backend& be, ParameterSet& params, Arena& arena, Tensor d) {
  Tensor dtable = params[table_].grad;
  if (!encoder_.defined()) return be.add(dtable, dtable, d);
  encoder_.backward(be, params, arena, d, dtable);
}

std::vector<float> VirtualTokens::peft_embeddings(Backend& be, const ParameterSet& params, Arena& arena) {
  const Tensor prompt = forward(be, params, arena);
  Tensor f32 = arena.allocate(DType::F32, prompt.shape());
  be.copy(f32, prompt);
  std::vector<float> host(size_t(f32.numel()));
  be.copy_to_host(host.data(), f32);
  return host;
}

void VirtualTokens::set_from_peft(Backend& be, ParameterSet& params, const std::vector<float>& table) const {
  TEMPER_CHECK(!encoder_.defined(), "VirtualTokens::set_from_peft: not for P-tuning's encoder");
  set_parameter(be, params[table_], table);
}

// ---- PrefixKv -----------------------------------------------------------------------------

PrefixKv::PrefixKv(int64_t n, int64_t layers, int64_t kv_dim, int tp_size, int tp_rank)
    : count_(n), layers_(layers), kv_dim_(kv_dim), kv_local_(kv_dim / tp_size), tp_size_(tp_size),
      tp_rank_(tp_rank) {
  if (n <= 0) fail("config key 'peft.num_virtual_tokens' = {} must be > 0", n);
}

void PrefixKv::declare_encoder(ParameterSet& params, int64_t C, int64_t encoder_hidden) {
  const int64_t h = encoder_hidden > 0 ? encoder_hidden : C;
  // PEFT: token_dim = kv heads × head dim for grouped-query models.
  embedding_ = params.declare("prefix_encoder.embedding.weight", Shape{count_, kv_dim_}, ParamInit::Adapter, false);
  mlp_ = SmallMlp(params, "prefix_encoder.transform", {kv_dim_, h, layers_ * 2 * kv_dim_},
                  Backend::Activation::Tanh);
}

void PrefixKv::declare_layer(ParameterSet& params, int64_t layer) {
  for (const char* kind : {"key", "value"})  // split by kv head: [N, kv_dim] by columns
    per_layer_.push_back(params.declare(fmt::format("prefix.layers.{}.{}", layer, kind),
                                        Shape{count_, kv_dim_}, ParamInit::Adapter, false, 1,
                                        tp_size_, tp_rank_));
}

void PrefixKv::init(ParameterSet& params, uint64_t seed) const {
  if (mlp_.defined()) {
    params.draw(embedding_, seed, Draw::Normal, 1.0f);
    mlp_.init(params, seed);
    return;
  }
  for (size_t i : per_layer_) params.draw(i, seed, Draw::Normal, 1.0f);  // nn.Embedding
}

void PrefixKv::forward(Backend& be, const ParameterSet& params, Arena& arena) {
  if (!mlp_.defined()) return;
  const Tensor out = mlp_.forward(be, params, arena, params[embedding_].value);  // [N, L·2·kv_dim]
  keys_ = arena.allocate(out.dtype(), Shape{layers_, count_, kv_local_});
  values_ = arena.allocate(out.dtype(), Shape{layers_, count_, kv_local_});
  dkeys_ = arena.allocate(out.dtype(), Shape{layers_, count_, kv_local_});
  dvalues_ = arena.allocate(out.dtype(), Shape{layers_, count_, kv_local_});
  be.zero(dkeys_);
  be.zero(dvalues_);
  // This rank's heads: columns [tp_rank·kv_local, +kv_local) of each layer's key and value.
  const int64_t width = layers_ * 2 * kv_dim_;
  for (int64_t l = 0; l < layers_; ++l)
    for (int64_t t = 0; t < count_; ++t)
      for (int kv = 0; kv < 2; ++kv) {
        const int64_t col = (2 * l + kv) * kv_dim_ + tp_rank_ * kv_local_;
        Tensor dst = (kv ? values_ : keys_).flat((l * count_ + t) * kv_local_, kv_local_);
        be.copy(dst, out.flat(t * width + col, kv_local_));
      }
}

Tensor PrefixKv::key(const ParameterSet& params, int64_t layer) const {
  if (mlp_.defined()) return keys_.flat(layer * count_ * kv_local_, count_ * kv_local_);
  return params[per_layer_[size_t(2 * layer)]].value;
}

Tensor PrefixKv::value(const ParameterSet& params, int64_t layer) const {
  if (mlp_.defined()) return values_.flat(layer * count_ * kv_local_, count_ * kv_local_);
  return params[per_layer_[size_t(2 * layer + 1)]].value;
}

Tensor PrefixKv::key_grad(const ParameterSet& params, int64_t layer) const {
  if (mlp_.defined()) return dkeys_.flat(layer * count_ * kv_local_, count_ * kv_local_);
  return params[per_layer_[size_t(2 * layer)]].grad;
}

Tensor PrefixKv::value_grad(const ParameterSet& params, int64_t layer) const {
  if (mlp_.defined()) return dvalues_.flat(layer * count_ * kv_local_, count_ * kv_local_);
  return params[per_layer_[size_t(2 * layer + 1)]].grad;
}

void PrefixKv::to_peft_layout(Backend& be, Tensor out, Tensor keys, Tensor values) const {
  const int64_t width = layers_ * 2 * kv_dim_;
  be.zero(out);
  for (int64_t l = 0; l < layers_; ++l)
    for (int64_t t = 0; t < count_; ++t)
      for (int kv = 0; kv < 2; ++kv) {
        const int64_t col = (2 * l + kv) * kv_dim_ + tp_rank_ * kv_local_;
        be.copy(out.flat(t * width + col, kv_local_),
                (kv ? values : keys).flat((l * count_ + t) * kv_local_, kv_local_));
      }
}

void PrefixKv::backward(Backend& be, ParameterSet& params, Arena& arena, const TensorParallel& tp) {
  if (!mlp_.defined()) return;
  Tensor dout = arena.allocate(dkeys_.dtype(), Shape{count_, layers_ * 2 * kv_dim_});
  to_peft_layout(be, dout, dkeys_, dvalues_);
  tp.reduce_prefix_encoder_grad(dout);  // every rank filled its own heads' columns
  mlp_.backward(be, params, arena, dout, params[embedding_].grad);
}

std::vector<float> PrefixKv::peft_embeddings(Backend& be, const ParameterSet& params, Arena& arena,
                                             const TensorParallel& tp) {
  forward(be, params, arena);
  const DType dt = params[mlp_.defined() ? embedding_ : per_layer_[0]].value.dtype();
  Tensor keys = arena.allocate(dt, Shape{layers_, count_, kv_local_});
  Tensor values = arena.allocate(dt, Shape{layers_, count_, kv_local_});
  for (int64_t l = 0; l < layers_; ++l) {
    be.copy(keys.flat(l * count_ * kv_local_, count_ * kv_local_), key(params, l));
    be.copy(values.flat(l * count_ * kv_local_, count_ * kv_local_), value(params, l));
  }
  Tensor out = arena.allocate(dt, Shape{count_, layers_ * 2 * kv_dim_});
  to_peft_layout(be, out, keys, values);
  tp.reduce_prefix_encoder_grad(out);  // the same gather: every rank its heads' columns
  Tensor f32 = arena.allocate(DType::F32, out.shape());
  be.copy(f32, out);
  std::vector<float> host(size_t(f32.numel()));
  be.copy_to_host(host.data(), f32);
  return host;
}

void PrefixKv::set_from_peft(Backend& be, ParameterSet& params, const std::vector<float>& flat) const {
  TEMPER_CHECK(!mlp_.defined(), "PrefixKv::set_from_peft: only without projection");
  const int64_t width = layers_ * 2 * kv_dim_;
  TEMPER_CHECK(int64_t(flat.size()) == count_ * width, "PrefixKv::set_from_peft: size");
  for (int64_t l = 0; l < layers_; ++l)
    for (int kv = 0; kv < 2; ++kv) {
      std::vector<float> full(size_t(count_ * kv_dim_));
      for (int64_t t = 0; t < count_; ++t)
        std::copy_n(flat.begin() + t * width + (2 * l + kv) * kv_dim_, kv_dim_, full.begin() + t * kv_dim_);
      set_parameter(be, params[per_layer_[size_t(2 * l + kv)]], full);
    }
}

}  // namespace temper

namespace temper {

MicroBatch with_soft_prompt(const MicroBatch& batch, int64_t virtual_tokens, int64_t shift,
                            int64_t max_positions, std::vector<int64_t>* starts,
                            std::vector<int64_t>* real) {
  MicroBatch out;  // one row of all the segments: tokens() counts the virtual slots too
  out.cu_seqlens = {0};
  starts->clear();
  real->clear();
  int32_t highest = 0;
  for (size_t d = 0; d + 1 < batch.cu_seqlens.size(); ++d) {
    starts->push_back(int64_t(out.ids.size()));
    for (int64_t i = 0; i < virtual_tokens; ++i) {
      out.ids.push_back(-1);
      out.targets.push_back(kIgnoreIndex);
      out.positions.push_back(int32_t(i));
    }
    for (int32_t t = batch.cu_seqlens[d]; t < batch.cu_seqlens[d + 1]; ++t) {
      real->push_back(int64_t(out.ids.size()));
      out.ids.push_back(batch.ids[size_t(t)]);
      out.targets.push_back(batch.targets[size_t(t)]);
      out.positions.push_back(batch.positions[size_t(t)] + int32_t(shift));
      highest = std::max(highest, out.positions.back());
    }
    out.cu_seqlens.push_back(int32_t(out.ids.size()));
  }
  out.rows = 1;
  out.seq_len = int64_t(out.ids.size());
  if (highest >= max_positions)
    fail("config key 'peft.num_virtual_tokens' = {}: with it a document's tokens reach position "
         "{}, past the model's max_position_embeddings ({}); use fewer virtual tokens or a "
         "shorter train.seq_len", shift, highest, max_positions);
  return out;
}

}  // namespace temper
