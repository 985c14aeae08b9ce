#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

namespace temper {

AdamW::AdamW(ParameterSet& params, Backend& backend, const AdamWConfig& config, ElementRange range)
    : params_(params), backend_(backend), config_(config) {
  arena_ = std::make_unique<Arena>(backend_.memory(), "optimizer state");
  const int64_t lo = range.begin, hi = range.end < 0 ? params_.trainable_numel() : range.end;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Parameter& p = params_[i];
    if (!p.trainable) continue;
    // The part of this parameter inside [lo, hi), in its own element numbering.
    const int64_t b = std::max<int64_t>(lo - p.offset, 0);
    const int64_t e = std::min<int64_t>(hi - p.offset, p.shape.numel());
    if (b < e) add_slot({i, b, e, Tensor{}});
  }
}

AdamW::AdamW(ParameterSet& params, Backend& backend, const AdamWConfig& config,
             const std::vector<AdamWSegment>& segments)
    : params_(params), backend_(backend), config_(config) {
  arena_ = std::make_unique<Arena>(backend_.memory(), "optimizer state");
  for (const AdamWSegment& s : segments)
    if (params_[s.param].trainable && s.begin < s.end) add_slot(s);
}

void AdamW::add_slot(const AdamWSegment& piece) {
  const Parameter& p = params_[piece.param];
  const Shape flat{piece.end - piece.begin};
  Slot s;
  s.piece = piece;
  const Tensor value = p.value.view(Shape{p.shape.numel()}).flat(piece.begin, piece.end - piece.begin);
  if (p.value.dtype() == DType::F32) {
    s.master = value;
  } else {
    s.master = arena_->allocate(DType::F32, flat);
    backend_.copy(s.master, value);
  }
  s.m = arena_->allocate(DType::F32, flat);
  s.v = arena_->allocate(DType::F32, flat);
  backend_.zero(s.m);
  backend_.zero(s.v);
  const bool decay = !p.is_norm_or_bias || config_.decay_norms_and_biases;
  s.weight_decay = decay ? config_.weight_decay : 0.0f;
  slots_.push_back(s);
}

void AdamW::step(float lr, float grad_scale) {
  ++step_;
  for (const Slot& s : slots_) {
    Parameter& p = params_[s.piece.param];
    const Shape all{p.shape.numel()};
    const int64_t b = s.piece.begin, n = s.piece.end - s.piece.begin;
    AdamWStep hp;
    hp.lr = lr;
    hp.beta1 = config_.beta1;
    hp.beta2 = config_.beta2;
    hp.eps = config_.eps;
    hp.weight_decay = s.weight_decay;
    hp.step = step_;
    hp.grad_scale = grad_scale;
    Tensor param = p.value.dtype() == DType::F32 ? Tensor{} : p.value.view(all).flat(b, n);
    Tensor grad = s.piece.grad.defined() ? s.piece.grad : p.grad.view(all).flat(b, n);
    backend_.adamw_update(s.master, param, grad, s.m, s.v, hp);
  }
}

size_t AdamW::state_bytes() const { return arena_->used_bytes(); }

std::vector<AdamW::StatePiece> AdamW::state_pieces() const {
  std::vector<StatePiece> out;
  for (const Slot& s : slots_) out.push_back({s.piece.param, s.piece.begin, s.piece.end, s.master, s.m, s.v});
  return out;
}

float clip_factor(double norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0f;
  double f = max_norm / (norm + 1e-6);
  return float(f < 1.0 ? f : 1.0);
}

}  // namespace temper
