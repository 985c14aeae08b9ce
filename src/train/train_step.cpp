#include "train/train_step.h"

#include <cmath>

#include "core/error.h"

namespace temper {

StepResult train_step(Transformer& model, AdamW& optimizer, const std::vector<MicroBatch>& micro,
                      float lr, double max_grad_norm, DynamicLossScale* loss_scale) {
  StepResult r;
  for (const auto& b : micro) {
    r.target_tokens += b.target_count();
    r.tokens += b.tokens();
  }
  if (r.target_tokens == 0) fail("training step has no target tokens (every target is -100)");
  const double scale = loss_scale ? loss_scale->scale() : 1.0;
  const float grad_scale = float(scale / double(r.target_tokens));
  model.params().zero_grads();
  double loss_sum = 0.0;
  for (const auto& b : micro) loss_sum += model.forward_backward(b, grad_scale).loss;
  r.loss = loss_sum / double(r.target_tokens);
  r.grad_norm = grad_norm(model.params(), model.backend()) / scale;
  if (!std::isfinite(r.grad_norm)) {
    r.skipped = true;
    if (loss_scale) loss_scale->overflow();
    return r;
  }
  r.clip = clip_factor(r.grad_norm, max_grad_norm);
  optimizer.step(lr, float(r.clip / scale));
  if (loss_scale) loss_scale->good_step();
  return r;
}

double evaluate(Transformer& model, const std::vector<MicroBatch>& batches) {
  double loss = 0.0;
  int64_t n = 0;
  for (const auto& b : batches) {
    LossSum s = model.forward_loss(b);
    loss += s.loss;
    n += s.tokens;
  }
  return n ? loss / double(n) : 0.0;
}

}  // namespace temper
