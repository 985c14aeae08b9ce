#include "generate/cached_decoder.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "model/rope.h"

namespace temper {

// One block's weights (views of the model's parameters) and its cache.
struct CachedDecoder::Layer {
  Tensor input_norm, post_norm;  // [C]; the projections run through the model's units
  Tensor k_cache, v_cache;       // [capacity, Hkv, D]: keys after RoPE, values
};

CachedDecoder::CachedDecoder(Transformer& model, int64_t capacity)
    : model_(model), backend_(model.backend()), config_(model.config()), capacity_(capacity) {
  const auto& c = config_;
  if (capacity < 1 || capacity > c.max_position_embeddings)
    fail("CachedDecoder: capacity {} must be in [1, max_position_embeddings = {}]", capacity,
         c.max_position_embeddings);
  ParameterSet& ps = model.params();
  const PeftMethod m = model.peft().method;
  if (m == PeftMethod::PromptTuning || m == PeftMethod::PTuning || m == PeftMethod::PrefixTuning)
    fail("CachedDecoder: generation with a {} adapter is not supported yet", peft_method_name(m));
  for (const Parameter& p : ps.all())
    if (p.shards > 1)
      fail("CachedDecoder: '{}' is a tensor-parallel shard; generation needs the whole model",
           p.name);
  dtype_ = ps[0].value.dtype();
  auto W = [&](const std::string& name) { return ps.at(name).value; };
  embed_ = W("model.embed_tokens.weight");
  final_norm_ = W("model.norm.weight");
  lm_head_ = c.tie_word_embeddings ? embed_ : W("lm_head.weight");

  cache_arena_ = std::make_unique<Arena>(backend_.memory(), "kv cache");
  scratch_ = std::make_unique<Arena>(backend_.memory(), "generation activations");
  const Shape cache_shape{capacity_, c.num_key_value_heads, c.head_dim};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    Layer L;
    L.input_norm = W(p + "input_layernorm.weight");
    L.post_norm = W(p + "post_attention_layernorm.weight");
    L.k_cache = cache_arena_->allocate(dtype_, cache_shape);
    L.v_cache = cache_arena_->allocate(dtype_, cache_shape);
    layers_.push_back(L);
  }
  std::vector<float> cos, sin;
  rope_tables(c, capacity_, cos, sin);
  rope_cos_ = cache_arena_->allocate(DType::F32, Shape{capacity_, c.head_dim / 2});
  rope_sin_ = cache_arena_->allocate(DType::F32, Shape{capacity_, c.head_dim / 2});
  backend_.copy_from_host(rope_cos_, cos.data());
  backend_.copy_from_host(rope_sin_, sin.data());
}

CachedDecoder::~CachedDecoder() = default;

std::vector<float> CachedDecoder::forward(std::span<const int32_t> tokens, bool all_positions) {
  const int64_t n = int64_t(tokens.size()), V = config_.vocab_size;
  if (n == 0) fail("CachedDecoder: no tokens to run");
  if (length_ + n > capacity_)
    fail("CachedDecoder: {} cached + {} new tokens exceed the cache capacity of {} tokens",
         length_, n, capacity_);
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      fail("CachedDecoder: token {} at position {} is outside the vocabulary [0, {})", tokens[i],
           length_ + i, V);
  std::vector<float> logits((all_positions ? n : 1) * V);
  const int64_t window = config_.sliding_window;
  if (window > 0 && length_ > 0 && n > 1) {
    // The attention op applies the sliding window only inside the new tokens, never to the
    // prefix: once the cache holds tokens, each one runs alone with its own window of it.
    for (int64_t i = 0; i < n; ++i) {
      const bool want = all_positions || i == n - 1;
      float* row = logits.data() + (all_positions ? i * V : 0);
      run_chunk(tokens.subspan(i, 1), want ? 1 : 0, want ? row : nullptr);
    }
  } else {
    run_chunk(tokens, all_positions ? n : 1, logits.data());
  }
  return logits;
}

// Forward of n new tokens at positions [L0, L0 + n), L0 = length_; writes the logits of the
// last `logit_rows` of them to host[logit_rows, V].
void CachedDecoder::run_chunk(std::span<const int32_t> tokens, int64_t logit_rows, float* host) {
  const auto& c = config_;
  const int64_t n = int64_t(tokens.size()), L0 = length_;
  const int64_t C = c.hidden_size, Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const int64_t D = c.head_dim, F = c.intermediate_size, V = c.vocab_size;
  const int window = int(c.sliding_window);
  const float eps = float(c.rms_norm_eps);
  // Cache rows the new tokens see as prefix: all of them, or with a sliding window (then
  // n == 1 or L0 == 0) the last window − 1 before the token.
  const int64_t prefix_begin = window > 0 ? std::max<int64_t>(0, L0 + 1 - window) : 0;
  const int64_t P = L0 - prefix_begin;

  scratch_->reset();
  auto act = [&](int64_t cols) { return scratch_->allocate(dtype_, Shape{n, cols}); };
  Tensor ids = scratch_->allocate(DType::I32, Shape{n});        // [n]
  Tensor positions = scratch_->allocate(DType::I32, Shape{n});  // [n] L0, L0+1, ...
  Tensor cu = scratch_->allocate(DType::I32, Shape{2});         // [2] one document
  std::vector<int32_t> pos(n);
  for (int64_t i = 0; i < n; ++i) pos[i] = int32_t(L0 + i);
  const int32_t cu_host[2] = {0, int32_t(n)};
  backend_.copy_from_host(ids, tokens.data());
  backend_.copy_from_host(positions, pos.data());
  backend_.copy_from_host(cu, cu_host);

  Tensor x = act(C), mid = act(C), ln = act(C), tmp = act(C);  // [n, C]
  Tensor rstd = scratch_->allocate(DType::F32, Shape{n});       // [n]
  Tensor q = act(Hq * D), att = act(Hq * D);                    // [n, Hq*D]
  Tensor k = act(Hkv * D), v = act(Hkv * D);                    // [n, Hkv*D]
  Tensor lse = scratch_->allocate(DType::F32, Shape{Hq, n});    // [Hq, n]
  Tensor gate = act(F), up = act(F), mlp = act(F);              // [n, F]
  const Shape qs{n, Hq, D}, ks{n, Hkv, D};

  // Projection l, site s of kProjectionSites: out = unit(in), adapters included.
  const ProjectionContext pc{backend_, model_.params(), no_tp_, *scratch_, false, 0, 0};
  auto project = [&](int64_t l, int s, Tensor out, Tensor in) {
    ProjectionActs a;
    if (kProjectionSites[s].column_parallel) {
      const ColumnParallelProjection& unit = model_.column_projection(l, s);
      unit.allocate_acts(a, *scratch_, dtype_, n, model_.params());
      unit.forward(pc, out, in, a);
    } else {
      const RowParallelProjection& unit = model_.row_projection(l, s);
      unit.allocate_acts(a, *scratch_, dtype_, n, model_.params());
      unit.forward(pc, out, in, a);
    }
  };

  backend_.embedding_forward(x, ids, embed_);
  for (int64_t l = 0; l < int64_t(layers_.size()); ++l) {
    Layer& w = layers_[size_t(l)];
    // Attention: mid = x + o_proj(attention(rope(q), rope(k), v)) over prefix + new tokens.
    backend_.rmsnorm_forward(ln, rstd, x, w.input_norm, eps);
    project(l, 0, q, ln);
    project(l, 1, k, ln);
    project(l, 2, v, ln);
    backend_.rope_forward(q.view(qs), positions, rope_cos_, rope_sin_);
    backend_.rope_forward(k.view(ks), positions, rope_cos_, rope_sin_);
    Tensor pk, pv;  // [P, Hkv, D] cached keys/values, or none
    if (P > 0) {
      pk = w.k_cache.slice_rows(prefix_begin, L0);
      pv = w.v_cache.slice_rows(prefix_begin, L0);
    }
    backend_.attention_forward(att.view(qs), lse, q.view(qs), k.view(ks), v.view(ks), cu, window,
                               pk, pv);
    backend_.copy(w.k_cache.slice_rows(L0, L0 + n), k.view(ks));
    backend_.copy(w.v_cache.slice_rows(L0, L0 + n), v.view(ks));
    project(l, 3, tmp, att);
    backend_.add(mid, x, tmp);
    // MLP: x = mid + down(silu(gate) * up)
    backend_.rmsnorm_forward(ln, rstd, mid, w.post_norm, eps);
    project(l, 4, gate, ln);
    project(l, 5, up, ln);
    backend_.swiglu_forward(mlp, gate, up);
    project(l, 6, tmp, mlp);
    backend_.add(x, mid, tmp);
  }
  length_ = L0 + n;
  if (logit_rows == 0) return;

  // Final norm and LM head on the last logit_rows tokens only.
  const int64_t r = logit_rows;
  Tensor lnf = ln.slice_rows(0, r);  // [r, C]
  backend_.rmsnorm_forward(lnf, rstd.slice_rows(0, r), x.slice_rows(n - r, n), final_norm_, eps);
  Tensor logits = scratch_->allocate(dtype_, Shape{r, V});  // [r, V]
  backend_.linear_forward(logits, lnf, lm_head_, Tensor{});
  if (dtype_ != DType::F32) {
    Tensor f = scratch_->allocate(DType::F32, Shape{r, V});
    backend_.copy(f, logits);
    logits = f;
  }
  backend_.copy_to_host(host, logits);
}

}  // namespace temper
