#include "model/transformer.h"

#include "io/hf_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/error.h"
#include "model/rope.h"

namespace temper {


struct Transformer::LayerParams {
  size_t first = 0, end = 0;  // this block's parameters are [first, end), adapters included
  size_t input_norm, post_norm;
  ColumnParallelProjection q, k, v, gate, up;  // the projection units (src/peft)
  RowParallelProjection o, down;
};

// One block's activations, all [T, ...] in the activation dtype except the f32 stats.
struct Transformer::Acts {
  Tensor ln1;      // [T, C]   input RMSNorm output
  Tensor rstd1;    // [T]      f32
  Tensor q;        // [T, Hq*D]  after RoPE
  Tensor k;        // [T, Hkv*D] after RoPE
  Tensor v;        // [T, Hkv*D]
  Tensor att;      // [T, Hq*D] attention output (before o_proj)
  Tensor lse;      // [Hq, T]  f32 softmax statistics
  Tensor res_mid;  // [T, C]   residual after attention
  Tensor ln2;      // [T, C]   post-attention RMSNorm output
  Tensor rstd2;    // [T]      f32
  Tensor gate;     // [T, F]
  Tensor up;       // [T, F]
  Tensor act;      // [T, F]   silu(gate) * up
  ProjectionActs proj[7];  // what each projection's adapter keeps (kProjectionSites order)
};

struct Transformer::Inputs {
  int64_t T = 0;
  std::vector<int64_t> prompt_rows, real_rows;  // soft prompts: first virtual rows, real tokens
  int64_t targets_counted = 0;                 // targets != -100 in the batch
  Tensor ids, targets, positions, cu_seqlens;  // i32 [T], [T], [T], [N+1]
  std::vector<Tensor> residuals;               // L+1 × [T, C]
  std::vector<Acts> acts;                      // L sets, or 1 when recomputing
  Tensor lnf, rstdf;                           // [T, C], [T] final norm
};

Transformer::Transformer(const ModelConfig& config, Backend& backend, DType dtype,
                         int64_t pad_multiple, TensorParallel tp, bool gradient_buffer,
                         const PeftSpec& peft)
    : config_(config), backend_(backend), peft_(peft), tp_(tp), dtype_(dtype), params_(backend) {
  config_.finalize();
  const int n = tp_.size();
  auto divides = [&](int64_t v, const char* what) {
    if (v % n) fail("{} {} is not divisible by parallel.tp={}", what, v, n);
    return v / n;
  };
  heads_ = divides(config_.num_attention_heads, "num_attention_heads");
  kv_heads_ = divides(config_.num_key_value_heads, "num_key_value_heads");
  ffn_ = divides(config_.intermediate_size, "intermediate_size");
  vocab_ = divides(config_.vocab_size, "vocab_size");
  declare_parameters();
  mark_trainable(params_, peft_, config_);
  std::vector<size_t> projection_weights;
  for (const LayerParams& lp : layers_)
    for (size_t w : {lp.q.weight(), lp.k.weight(), lp.v.weight(), lp.o.weight(), lp.gate.weight(),
                     lp.up.weight(), lp.down.weight()})
      projection_weights.push_back(w);
  mark_quantized(params_, peft_, projection_weights);
  lowest_trained_block_ = config_.num_hidden_layers;
  for (size_t i = embed_; i < embed_group_end_; ++i)  // the embedding or a soft prompt
    if (params_[i].trainable) lowest_trained_block_ = 0;
  for (size_t l = layers_.size(); l-- > 0;)
    for (size_t i = layers_[l].first; i < layers_[l].end; ++i)
      if (params_[i].trainable) lowest_trained_block_ = std::min<int64_t>(lowest_trained_block_, int64_t(l));
  params_.allocate(dtype_, pad_multiple, gradient_buffer);
  const_arena_ = std::make_unique<Arena>(backend_.memory(), "rope tables");
  act_arena_ = std::make_unique<Arena>(backend_.memory(), "activations");
  std::vector<float> cos, sin;
  const int64_t P = config_.max_position_embeddings, half = config_.head_dim / 2;
  rope_tables(config_, P, cos, sin);
  rope_cos_ = const_arena_->allocate(DType::F32, Shape{P, half});
  rope_sin_ = const_arena_->allocate(DType::F32, Shape{P, half});
  backend_.copy_from_host(rope_cos_, cos.data());
  backend_.copy_from_host(rope_sin_, sin.data());
}

Transformer::~Transformer() = default;

void Transformer::declare_parameters() {
  const auto& c = config_;
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  // Full (logical) shapes; under tensor parallelism each rank declares its shard:
  // column-parallel and vocab-parallel weights split their rows (dim 0), row-parallel
  // weights their columns (dim 1); norms are replicated.
  const int n = tp_.size(), r = tp_.rank();
  enum Split { kReplicated = -1, kRows = 0, kColumns = 1 };
  auto matrix = [&](std::string name, int64_t rows, int64_t cols, Split split) {
    return params_.declare(std::move(name), Shape{rows, cols}, ParamInit::Normal, false, split, n, r);
  };
  auto vector = [&](std::string name, int64_t len, ParamInit init, Split split) {
    return params_.declare(std::move(name), Shape{len}, init, true, split, n, r);
  };
  embed_ = matrix("model.embed_tokens.weight", V, C, kRows);
  // Soft prompts whose gradients are final only after the whole backward: the embedding's group.
  const PromptSpec& ps = peft_.prompt;
  if (peft_.virtual_tokens())
    virtual_ = VirtualTokens(params_, ps.num_virtual_tokens, C, peft_.method == PeftMethod::PTuning,
                             ps.encoder_hidden_size);
  if (peft_.method == PeftMethod::PrefixTuning) {
    prefix_ = PrefixKv(ps.num_virtual_tokens, c.num_hidden_layers, c.kv_dim(), n, r);
    if (ps.prefix_projection) prefix_.declare_encoder(params_, C, ps.encoder_hidden_size);
  }
  embed_group_end_ = params_.size();
  const bool lora = peft_.method == PeftMethod::Lora, ia3 = peft_.method == PeftMethod::Ia3;
  const ProjectionTargets targets = lora  ? lora_targets(peft_.lora, c.num_hidden_layers)
                                    : ia3 ? ia3_targets(peft_.ia3, c.num_hidden_layers)
                                          : ProjectionTargets();
  const ProjectionTargets feedforward = ia3 ? ia3_feedforward(peft_.ia3, c.num_hidden_layers)
                                            : ProjectionTargets();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerParams lp;
    lp.first = params_.size();
    lp.input_norm = vector(p + "input_layernorm.weight", C, ParamInit::Ones, kReplicated);
    const size_t q = matrix(p + "self_attn.q_proj.weight", c.q_dim(), C, kRows);
    const size_t k = matrix(p + "self_attn.k_proj.weight", c.kv_dim(), C, kRows);
    const size_t v = matrix(p + "self_attn.v_proj.weight", c.kv_dim(), C, kRows);
    size_t q_bias = kNoParam, k_bias = kNoParam, v_bias = kNoParam;
    if (c.attention_bias) {
      q_bias = vector(p + "self_attn.q_proj.bias", c.q_dim(), ParamInit::Zeros, kRows);
      k_bias = vector(p + "self_attn.k_proj.bias", c.kv_dim(), ParamInit::Zeros, kRows);
      v_bias = vector(p + "self_attn.v_proj.bias", c.kv_dim(), ParamInit::Zeros, kRows);
    }
    const size_t o = matrix(p + "self_attn.o_proj.weight", C, c.q_dim(), kColumns);
    lp.post_norm = vector(p + "post_attention_layernorm.weight", C, ParamInit::Ones, kReplicated);
    const size_t gate = matrix(p + "mlp.gate_proj.weight", F, C, kRows);
    const size_t up = matrix(p + "mlp.up_proj.weight", F, C, kRows);
    const size_t down = matrix(p + "mlp.down_proj.weight", C, F, kColumns);
    if (prefix_.defined() && !ps.prefix_projection) prefix_.declare_layer(params_, l);
    // Bottleneck adapters after attention (Houlsby) and after the MLP, AdapterHub's names
    // without the adapter's own name.
    auto bottleneck = [&](const char* where) {
      const int64_t b = C / peft_.bottleneck.reduction_factor;
      if (b < 1) fail("config key 'peft.reduction_factor' = {}: the bottleneck of width {} / {} is empty",
                      peft_.bottleneck.reduction_factor, C, peft_.bottleneck.reduction_factor);
      const std::string a = p + where;
      BottleneckAttachment at;
      at.down = params_.declare(a + ".adapter_down.0.weight", Shape{b, C}, ParamInit::Adapter, false);
      at.down_bias = params_.declare(a + ".adapter_down.0.bias", Shape{b}, ParamInit::Adapter, true);
      at.up = params_.declare(a + ".adapter_up.weight", Shape{C, b}, ParamInit::Adapter, false);
      at.up_bias = params_.declare(a + ".adapter_up.bias", Shape{C}, ParamInit::Adapter, true);
      return at;
    };
    const bool adapters = peft_.method == PeftMethod::Adapter;
    const BottleneckAttachment after_attention =
        adapters && !peft_.bottleneck.mlp_only ? bottleneck("attention_adapters") : BottleneckAttachment{};
    const BottleneckAttachment after_mlp = adapters ? bottleneck("output_adapters") : BottleneckAttachment{};
    // Adapters follow the block's base parameters, so the block stays one gradient group.
    auto unit = [&](int site, size_t weight, size_t bias, int64_t out, int64_t in) {
      const ProjectionSite& s = kProjectionSites[site];
      const std::string path = projection_path(l, s);
      LoraAttachment lora_adapter;
      Ia3Attachment ia3_vector;
      if (lora && targets.selected(l, site))
        lora_adapter = declare_lora(params_, peft_.lora, path, out, in, s.column_parallel, n, r);
      if (ia3 && targets.selected(l, site))
        ia3_vector = declare_ia3(params_, path, out, in, s.column_parallel,
                                 feedforward.selected(l, site), n, r);
      return std::tuple{path, weight, bias, lora_adapter, ia3_vector};
    };
    auto column = [&](auto t) { return std::make_from_tuple<ColumnParallelProjection>(t); };
    auto row = [&](auto t, BottleneckAttachment at) {
      return std::make_from_tuple<RowParallelProjection>(std::tuple_cat(t, std::tuple{at}));
    };
    lp.q = column(unit(0, q, q_bias, c.q_dim(), C));
    lp.k = column(unit(1, k, k_bias, c.kv_dim(), C));
    lp.v = column(unit(2, v, v_bias, c.kv_dim(), C));
    lp.o = row(unit(3, o, kNoParam, C, c.q_dim()), after_attention);
    lp.gate = column(unit(4, gate, kNoParam, F, C));
    lp.up = column(unit(5, up, kNoParam, F, C));
    lp.down = row(unit(6, down, kNoParam, C, F), after_mlp);
    lp.end = params_.size();
    layers_.push_back(lp);
  }
  final_norm_ = vector("model.norm.weight", C, ParamInit::Ones, kReplicated);
  lm_head_ = c.tie_word_embeddings ? embed_ : matrix("lm_head.weight", V, C, kRows);
}

void Transformer::init_weights(uint64_t seed) { params_.init(seed, float(config_.initializer_range)); }

const ColumnParallelProjection& Transformer::column_projection(int64_t layer, int site) const {
  const LayerParams& lp = layers_[size_t(layer)];
  switch (site) {
    case 0: return lp.q;
    case 1: return lp.k;
    case 2: return lp.v;
    case 4: return lp.gate;
    case 5: return lp.up;
  }
  fail("projection site {} is not column-parallel", site);
}

const RowParallelProjection& Transformer::row_projection(int64_t layer, int site) const {
  const LayerParams& lp = layers_[size_t(layer)];
  if (site == 3) return lp.o;
  if (site == 6) return lp.down;
  fail("projection site {} is not row-parallel", site);
}

ProjectionContext Transformer::projection_context(bool training) {
  return {backend_, params_, tp_, *act_arena_, training, dropout_seed_, micro_batch_index_};
}

void Transformer::init_prompt_from_tokens(const std::vector<int32_t>& ids) {
  TEMPER_CHECK(virtual_.defined() && !virtual_.p_tuning(), "init_prompt_from_tokens: not prompt tuning");
  TEMPER_CHECK(int64_t(ids.size()) == virtual_.count(), "init_prompt_from_tokens: {} ids for {} virtual tokens",
               ids.size(), virtual_.count());
  for (int32_t id : ids)
    if (id < 0 || id >= config_.vocab_size)
      fail("config key 'peft.init_text': token id {} is outside the vocabulary ({})", id, config_.vocab_size);
  act_arena_->reset();
  Tensor dev_ids = act_arena_->allocate(DType::I32, Shape{int64_t(ids.size())});
  backend_.copy_from_host(dev_ids, tp_.active() ? tp_.local_ids(ids, config_.vocab_size).data() : ids.data());
  Tensor table = params_[virtual_.table()].value;  // [N, C], replicated
  backend_.embedding_forward(table, dev_ids, params_[embed_].value);
  tp_.reduce_embedding_output(table);
  act_arena_->reset();
}

std::vector<float> Transformer::soft_prompt_embeddings() {
  act_arena_->reset();
  TEMPER_CHECK(virtual_.defined() || prefix_.defined(), "soft_prompt_embeddings: no soft prompt");
  std::vector<float> out = virtual_.defined() ? virtual_.peft_embeddings(backend_, params_, *act_arena_)
                                              : prefix_.peft_embeddings(backend_, params_, *act_arena_, tp_);
  act_arena_->reset();
  return out;
}

void Transformer::set_soft_prompt_embeddings(const std::vector<float>& values) {
  if (prefix_.defined()) return prefix_.set_from_peft(backend_, params_, values);
  virtual_.set_from_peft(backend_, params_, values);
}

void Transformer::init_adapters(uint64_t seed) {
  act_arena_->reset();
  ProjectionContext pc = projection_context(false);
  if (virtual_.defined()) virtual_.init(params_, seed);
  if (prefix_.defined()) prefix_.init(params_, seed);
  for (const LayerParams& lp : layers_)
    for (const RowParallelProjection* unit : {&lp.o, &lp.down}) {
      const BottleneckAttachment& a = unit->adapter();
      if (!a.defined()) continue;  // near identity: down N(0, 0.02), up and biases 0
      params_.draw(a.down, seed, Draw::Normal, 0.02f);
      for (size_t i : {a.down_bias, a.up, a.up_bias}) backend_.zero(params_[i].value);
    }
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l)
    for (int s = 0; s < 7; ++s) {
      const bool column = kProjectionSites[s].column_parallel;
      const Projection& unit = column ? static_cast<const Projection&>(column_projection(l, s))
                                      : static_cast<const Projection&>(row_projection(l, s));
      if (unit.ia3().defined()) backend_.fill(params_[unit.ia3().scale].value, 1.0f);  // identity
      const LoraAttachment& lora = unit.lora();
      if (!lora.defined()) continue;
      init_lora(params_, lora, peft_.lora, seed);
      if (!lora.dora()) continue;
      // m = ‖W0 + s·B·A‖ per row (= ‖W0‖ with B = 0): DoRA starts equal to the base.
      Parameter& m = params_[lora.magnitude];
      Tensor sumsq = act_arena_->allocate(DType::F32, m.shape);
      if (column) column_projection(l, s).dora_row_sum_squares(pc, sumsq);
      else row_projection(l, s).dora_row_sum_squares(pc, sumsq);
      std::vector<float> host(size_t(m.shape.numel()));
      backend_.copy_to_host(host.data(), sumsq);
      for (float& x : host) x = std::sqrt(x);
      backend_.copy_from_host(sumsq, host.data());
      backend_.copy(m.value, sumsq);
      act_arena_->reset();
    }
  backend_.synchronize();
}

Tensor Transformer::grad_or_none(size_t index) {
  Parameter& p = params_[index];
  return p.trainable ? p.grad : Tensor{};
}

size_t Transformer::activation_peak_bytes() const { return act_arena_->peak_bytes(); }

Transformer::Inputs Transformer::upload(const MicroBatch& original) {
  original.validate(config_.vocab_size, config_.max_position_embeddings);
  act_arena_->reset();
  Inputs in;
  // Soft prompts: virtual token slots before each document, or positions after the prefix.
  const int64_t shift = virtual_.defined() ? virtual_.count() : prefix_.count();
  MicroBatch expanded;
  if (shift > 0)
    expanded = with_soft_prompt(original, virtual_.count(), shift, config_.max_position_embeddings,
                                &in.prompt_rows, &in.real_rows);
  const MicroBatch& batch = shift > 0 ? expanded : original;
  in.T = batch.tokens();
  const int64_t T = in.T, N = int64_t(batch.cu_seqlens.size()) - 1;
  in.ids = act_arena_->allocate(DType::I32, Shape{T});
  in.targets = act_arena_->allocate(DType::I32, Shape{T});
  in.positions = act_arena_->allocate(DType::I32, Shape{T});
  in.cu_seqlens = act_arena_->allocate(DType::I32, Shape{N + 1});
  in.targets_counted = batch.target_count();
  // A vocab-parallel embedding looks up only this rank's slice: other ids become -1.
  if (tp_.active())
    backend_.copy_from_host(in.ids, tp_.local_ids(batch.ids, config_.vocab_size).data());
  else
    backend_.copy_from_host(in.ids, batch.ids.data());
  backend_.copy_from_host(in.targets, batch.targets.data());
  backend_.copy_from_host(in.positions, batch.positions.data());
  backend_.copy_from_host(in.cu_seqlens, batch.cu_seqlens.data());
  return in;
}

void Transformer::allocate_acts(Acts& a, int64_t T, int64_t layer) {
  const int64_t C = config_.hidden_size, F = ffn_, D = config_.head_dim;
  auto act = [&](int64_t cols) { return act_arena_->allocate(dtype_, Shape{T, cols}); };
  a.ln1 = act(C);
  a.rstd1 = act_arena_->allocate(DType::F32, Shape{T});
  a.q = act(heads_ * D);
  a.k = act(kv_heads_ * D);
  a.v = act(kv_heads_ * D);
  a.att = act(heads_ * D);
  a.lse = act_arena_->allocate(DType::F32, Shape{heads_, T});
  a.res_mid = act(C);
  a.ln2 = act(C);
  a.rstd2 = act_arena_->allocate(DType::F32, Shape{T});
  a.gate = act(F);
  a.up = act(F);
  a.act = act(F);
  // Adapter tensors: block `layer`'s, or (one set shared by every block) any block's.
  for (int s = 0; s < 7; ++s)
    for (int64_t l = layer < 0 ? 0 : layer; l < (layer < 0 ? config_.num_hidden_layers : layer + 1); ++l) {
      const Projection& p = kProjectionSites[s].column_parallel
                                ? static_cast<const Projection&>(column_projection(l, s))
                                : static_cast<const Projection&>(row_projection(l, s));
      if (!p.saves_acts()) continue;
      p.allocate_acts(a.proj[s], *act_arena_, dtype_, T, params_);
      break;
    }
}

void Transformer::block_forward(int l, Tensor res_in, Tensor res_out, Acts& a, const Inputs& in) {
  const auto& c = config_;
  const LayerParams& lp = layers_[l];
  const int64_t T = in.T, D = c.head_dim;
  const float eps = float(c.rms_norm_eps);
  const int window = int(c.sliding_window);
  auto W = [&](size_t i) { return params_[i].value; };

  const ProjectionContext pc = projection_context(training_);

  backend_.rmsnorm_forward(a.ln1, a.rstd1, res_in, W(lp.input_norm), eps);
  lp.q.forward(pc, a.q, a.ln1, a.proj[0]);
  lp.k.forward(pc, a.k, a.ln1, a.proj[1]);
  lp.v.forward(pc, a.v, a.ln1, a.proj[2]);
  Tensor q3 = a.q.view(Shape{T, heads_, D});
  Tensor k3 = a.k.view(Shape{T, kv_heads_, D});
  Tensor v3 = a.v.view(Shape{T, kv_heads_, D});
  backend_.rope_forward(q3, in.positions, rope_cos_, rope_sin_);
  backend_.rope_forward(k3, in.positions, rope_cos_, rope_sin_);
  const Shape prefix_shape{prefix_.count(), kv_heads_, D};  // prefix tuning's keys / values
  const Tensor pk = prefix_.defined() ? prefix_.key(params_, l).view(prefix_shape) : Tensor{};
  const Tensor pv = prefix_.defined() ? prefix_.value(params_, l).view(prefix_shape) : Tensor{};
  backend_.attention_forward(a.att.view(Shape{T, heads_, D}), a.lse, q3, k3, v3,
                             in.cu_seqlens, window, pk, pv);
  // res_mid = res_in + o_proj(att); the projection is written to res_out as scratch.
  lp.o.forward(pc, res_out, a.att, a.proj[3]);
  backend_.add(a.res_mid, res_in, res_out);

  backend_.rmsnorm_forward(a.ln2, a.rstd2, a.res_mid, W(lp.post_norm), eps);
  lp.gate.forward(pc, a.gate, a.ln2, a.proj[4]);
  lp.up.forward(pc, a.up, a.ln2, a.proj[5]);
  backend_.swiglu_forward(a.act, a.gate, a.up);
  lp.down.forward(pc, res_out, a.act, a.proj[6]);
  backend_.add(res_out, res_out, a.res_mid);
}

void Transformer::block_backward(int l, Tensor res_in, Tensor dres, Acts& a, const Inputs& in) {
  const auto& c = config_;
  const LayerParams& lp = layers_[l];
  const int64_t T = in.T, C = c.hidden_size, F = ffn_, D = c.head_dim;
  const int window = int(c.sliding_window);
  auto W = [&](size_t i) { return params_[i].value; };
  auto dW = [&](size_t i) { return grad_or_none(i); };
  const ProjectionContext pc = projection_context(true);

  // Scratch gradients, popped when the block is done.
  Arena::Mark mark = act_arena_->mark();
  auto scratch = [&](int64_t cols) {
    Tensor t = act_arena_->allocate(dtype_, Shape{T, cols});
    backend_.zero(t);
    return t;
  };

  // MLP: res_out = res_mid + down(silu(gate) * up), gate/up = W · rmsnorm(res_mid)
  Tensor dact = scratch(F), dgate = scratch(F), dup = scratch(F), dln = scratch(C);
  lp.down.backward(pc, dact, dres, a.act, a.proj[6]);
  backend_.swiglu_backward(dgate, dup, dact, a.gate, a.up);
  lp.gate.backward(pc, dln, dgate, a.ln2, a.proj[4]);
  lp.up.backward(pc, dln, dup, a.ln2, a.proj[5]);
  tp_.reduce_column_parallel_input_grad(dln);
  backend_.rmsnorm_backward(dres, dW(lp.post_norm), dln, a.res_mid, W(lp.post_norm), a.rstd2);
  // dres is now d(res_mid): the identity path plus the MLP branch.

  // Attention: res_mid = res_in + o_proj(attention(rope(q), rope(k), v))
  Tensor datt = scratch(heads_ * D), dq = scratch(heads_ * D);
  Tensor dk = scratch(kv_heads_ * D), dv = scratch(kv_heads_ * D);
  lp.o.backward(pc, datt, dres, a.att, a.proj[3]);
  const Shape qs{T, heads_, D}, ks{T, kv_heads_, D}, prefix_shape{prefix_.count(), kv_heads_, D};
  Tensor pk, pv, dpk, dpv;  // prefix tuning
  if (prefix_.defined()) {
    pk = prefix_.key(params_, l).view(prefix_shape);
    pv = prefix_.value(params_, l).view(prefix_shape);
    dpk = prefix_.key_grad(params_, l).view(prefix_shape);
    dpv = prefix_.value_grad(params_, l).view(prefix_shape);
  }
  backend_.attention_backward(dq.view(qs), dk.view(ks), dv.view(ks), datt.view(qs), a.q.view(qs),
                              a.k.view(ks), a.v.view(ks), a.att.view(qs), a.lse, in.cu_seqlens,
                              window, pk, pv, dpk, dpv);
  backend_.rope_backward(dq.view(qs), in.positions, rope_cos_, rope_sin_);
  backend_.rope_backward(dk.view(ks), in.positions, rope_cos_, rope_sin_);
  backend_.zero(dln);
  lp.q.backward(pc, dln, dq, a.ln1, a.proj[0]);
  lp.k.backward(pc, dln, dk, a.ln1, a.proj[1]);
  lp.v.backward(pc, dln, dv, a.ln1, a.proj[2]);
  tp_.reduce_column_parallel_input_grad(dln);
  backend_.rmsnorm_backward(dres, dW(lp.input_norm), dln, res_in, W(lp.input_norm), a.rstd1);
  act_arena_->release(mark);
}

void Transformer::forward_trunk(Inputs& in, bool for_backward) {
  const int64_t T = in.T, C = config_.hidden_size, L = config_.num_hidden_layers;
  // Without backward only two residual buffers and one activation set are needed.
  const bool keep_all = for_backward && !recompute_;
  in.residuals.clear();
  const int64_t n_res = for_backward ? L + 1 : 2;
  for (int64_t i = 0; i < n_res; ++i)
    in.residuals.push_back(act_arena_->allocate(dtype_, Shape{T, C}));
  in.acts.resize(keep_all ? L : 1);
  for (size_t i = 0; i < in.acts.size(); ++i) allocate_acts(in.acts[i], T, keep_all ? int64_t(i) : -1);

  backend_.embedding_forward(in.residuals[0], in.ids, params_[embed_].value);
  tp_.reduce_embedding_output(in.residuals[0]);
  if (virtual_.defined()) {  // the prompt into every document's virtual slots
    const Tensor prompt = virtual_.forward(backend_, params_, *act_arena_);  // [N, C]
    for (int64_t row : in.prompt_rows)
      backend_.copy(in.residuals[0].slice_rows(row, row + virtual_.count()), prompt);
  }
  if (prefix_.defined()) prefix_.forward(backend_, params_, *act_arena_);
  for (int64_t l = 0; l < L; ++l) {
    Tensor res_in = for_backward ? in.residuals[l] : in.residuals[l % 2];
    Tensor res_out = for_backward ? in.residuals[l + 1] : in.residuals[(l + 1) % 2];
    block_forward(int(l), res_in, res_out, in.acts[keep_all ? l : 0], in);
  }
  in.lnf = act_arena_->allocate(dtype_, Shape{T, C});
  in.rstdf = act_arena_->allocate(DType::F32, Shape{T});
  Tensor last = for_backward ? in.residuals[L] : in.residuals[L % 2];
  backend_.rmsnorm_forward(in.lnf, in.rstdf, last, params_[final_norm_].value,
                           float(config_.rms_norm_eps));
}

LossSum Transformer::forward_loss(const MicroBatch& batch) {
  training_ = false;
  Inputs in = upload(batch);
  forward_trunk(in, false);
  return lm_head_loss(in, Tensor{}, Tensor{}, 1.0f);
}

LossSum Transformer::forward_backward(const MicroBatch& batch, float grad_scale) {
  training_ = true;
  Inputs in = upload(batch);
  forward_trunk(in, true);
  const int64_t T = in.T, C = config_.hidden_size, L = config_.num_hidden_layers;

  // LM head + cross-entropy: loss and d(lnf) in one pass over token chunks.
  Tensor dlnf = act_arena_->allocate(dtype_, Shape{T, C});
  Tensor dres = act_arena_->allocate(dtype_, Shape{T, C});
  backend_.zero(dlnf);
  backend_.zero(dres);
  // Gradient storage (ZeRO-2): a tied embedding is written first (as the head) and done
  // last, so it is bound first; then the final norm and an untied head.
  const bool tied = lm_head_ == embed_;
  if (grad_bind_ && tied) grad_bind_(embed_, embed_group_end_);
  if (grad_bind_) grad_bind_(final_norm_, params_.size());
  LossSum loss = lm_head_loss(in, dlnf, grad_or_none(lm_head_), grad_scale);
  backend_.rmsnorm_backward(dres, grad_or_none(final_norm_), dlnf, in.residuals[L],
                            params_[final_norm_].value, in.rstdf);
  // Final norm and an untied head are done; a tied head is the embedding, done last.
  if (grad_ready_) grad_ready_(final_norm_, params_.size());

  // Blocks below the lowest one that trains need no backward when the embedding is frozen.
  for (int64_t l = L - 1; l >= lowest_trained_block_; --l) {
    Acts& a = in.acts[recompute_ ? 0 : l];
    // Recompute: re-run the block forward from its saved input; dlnf is free scratch
    // for its output (the result equals residuals[l + 1], already consumed).
    if (recompute_) block_forward(int(l), in.residuals[l], dlnf, a, in);
    if (grad_bind_) grad_bind_(layers_[l].first, layers_[l].end);
    block_backward(int(l), in.residuals[l], dres, a, in);
    if (grad_ready_) grad_ready_(layers_[l].first, layers_[l].end);
  }
  if (grad_bind_ && !tied) grad_bind_(embed_, embed_group_end_);
  if (prefix_.defined()) prefix_.backward(backend_, params_, *act_arena_, tp_);
  if (virtual_.defined()) {  // the prompt's gradient: its rows of every document
    Tensor dprompt = act_arena_->allocate(dtype_, Shape{virtual_.count(), C});
    backend_.zero(dprompt);
    for (int64_t row : in.prompt_rows)
      backend_.add(dprompt, dprompt, dres.slice_rows(row, row + virtual_.count()));
    virtual_.backward(backend_, params_, *act_arena_, dprompt);
  }
  if (params_[embed_].trainable) backend_.embedding_backward(params_[embed_].grad, dres, in.ids);
  if (grad_ready_) grad_ready_(embed_, embed_group_end_);
  return loss;
}

std::vector<std::pair<size_t, size_t>> Transformer::gradient_groups() const {
  std::vector<std::pair<size_t, size_t>> g = {{final_norm_, params_.size()}};
  for (size_t l = layers_.size(); l-- > 0;) g.emplace_back(layers_[l].first, layers_[l].end);
  g.emplace_back(embed_, embed_group_end_);
  return g;
}

LossSum Transformer::lm_head_loss(const Inputs& in, Tensor dx, Tensor dweight, float grad_scale) {
  const Tensor W = params_[lm_head_].value;  // [V/tp, C]
  if (!tp_.active())
    return backend_.lm_head_cross_entropy(dx, dweight, in.lnf, W, in.targets, grad_scale, loss_chunk_);
  const int64_t T = in.T, R = tp_.size(), vstart = tp_.vocab_begin(config_.vocab_size);
  const bool want_grad = dx.defined() || dweight.defined();
  LossSum total;
  total.tokens = in.targets_counted;
  for (int64_t c0 = 0; c0 < T; c0 += loss_chunk_) {
    const int64_t c1 = std::min(T, c0 + loss_chunk_), n = c1 - c0;
    Arena::Mark mark = act_arena_->mark();
    Tensor logits = act_arena_->allocate(dtype_, Shape{n, vocab_});  // this rank's slice
    Tensor stats = act_arena_->allocate(DType::F32, Shape{n, 3});
    Tensor stats_all = act_arena_->allocate(DType::F32, Shape{R, n, 3});
    Tensor loss = act_arena_->allocate(DType::F32, Shape{n});
    const Tensor x = in.lnf.slice_rows(c0, c1), targets = in.targets.slice_rows(c0, c1);
    backend_.linear_forward(logits, x, W, Tensor{});
    backend_.cross_entropy_partials(stats, logits, targets, vstart);
    tp_.gather_cross_entropy_partials(stats_all, stats);
    backend_.cross_entropy_combine(loss, logits, stats_all, targets, vstart, grad_scale, want_grad);
    std::vector<float> host(n);
    backend_.copy_to_host(host.data(), loss);
    for (float v : host) total.loss += v;
    if (want_grad)  // logits now hold dlogits
      backend_.linear_backward(dx.defined() ? dx.slice_rows(c0, c1) : Tensor{}, dweight, Tensor{},
                               logits, x, W);
    act_arena_->release(mark);
  }
  // Each rank's dx is the part through its vocabulary slice.
  if (dx.defined()) tp_.reduce_column_parallel_input_grad(dx);
  return total;
}

std::vector<float> Transformer::logits(const MicroBatch& batch) {
  if (tp_.active()) fail("Transformer::logits: not available with tensor parallelism");
  training_ = false;
  Inputs in = upload(batch);
  forward_trunk(in, false);
  const int64_t T = in.T, V = config_.vocab_size;
  Tensor out = act_arena_->allocate(dtype_, Shape{T, V});
  backend_.linear_forward(out, in.lnf, params_[lm_head_].value, Tensor{});
  std::vector<float> host(T * V);
  if (dtype_ == DType::F32) {
    backend_.copy_to_host(host.data(), out);
  } else {
    Tensor f = act_arena_->allocate(DType::F32, Shape{T, V});
    backend_.copy(f, out);
    backend_.copy_to_host(host.data(), f);
  }
  if (in.prompt_rows.empty()) return host;
  std::vector<float> real;  // without the virtual tokens' rows: one row per batch token
  for (int64_t row : in.real_rows) real.insert(real.end(), host.begin() + row * V, host.begin() + (row + 1) * V);
  return real;
}

}  // namespace temper
