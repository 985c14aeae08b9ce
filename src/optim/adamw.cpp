#include "optim/adamw.h"

#include <cmath>

namespace temper {

AdamW::AdamW(ParameterSet& params, Backend& backend, const AdamWConfig& config)
    : params_(params), backend_(backend), config_(config) {
  arena_ = std::make_unique<Arena>(backend_.memory(), "optimizer state");
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = params_[i];
    if (!p.trainable) continue;
    const Shape flat{p.shape.numel()};
    Slot s;
    s.param = i;
    if (p.value.dtype() == DType::F32) {
      s.master = p.value.view(flat);
    } else {
      s.master = arena_->allocate(DType::F32, flat);
      backend_.copy(s.master, p.value.view(flat));
    }
    s.m = arena_->allocate(DType::F32, flat);
    s.v = arena_->allocate(DType::F32, flat);
    backend_.zero(s.m);
    backend_.zero(s.v);
    const bool decay = !p.is_norm_or_bias || config_.decay_norms_and_biases;
    s.weight_decay = decay ? config_.weight_decay : 0.0f;
    slots_.push_back(s);
  }
}

void AdamW::step(float lr, float grad_scale) {
  ++step_;
  for (const Slot& s : slots_) {
    Parameter& p = params_[s.param];
    const Shape flat{p.shape.numel()};
    AdamWStep hp;
    hp.lr = lr;
    hp.beta1 = config_.beta1;
    hp.beta2 = config_.beta2;
    hp.eps = config_.eps;
    hp.weight_decay = s.weight_decay;
    hp.step = step_;
    hp.grad_scale = grad_scale;
    Tensor param = p.value.dtype() == DType::F32 ? Tensor{} : p.value.view(flat);
    backend_.adamw_update(s.master, param, p.grad.view(flat), s.m, s.v, hp);
  }
}

size_t AdamW::state_bytes() const { return arena_->used_bytes(); }

double grad_norm(ParameterSet& params, Backend& backend) {
  double sum = 0.0;
  for (auto& p : params.all())
    if (p.trainable) sum += backend.sum_squares(p.grad);
  return std::sqrt(sum);
}

float clip_factor(double norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0f;
  double f = max_norm / (norm + 1e-6);
  return float(f < 1.0 ? f : 1.0);
}

}  // namespace temper
