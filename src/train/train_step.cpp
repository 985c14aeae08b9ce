#include "train/train_step.h"

#include <cmath>

#include "core/error.h"

namespace temper {

namespace {

// Sums host doubles (target counts, loss sums) over the dp group.
void sum_over(Communicator* dp, std::vector<double>& values) {
  if (dp) all_reduce_sum_f64(*dp, values);
}

}  // namespace

StepResult train_step(Transformer& model, AdamW& optimizer, const std::vector<MicroBatch>& micro,
                      float lr, double max_grad_norm, const StepOptions& o) {
  StepResult r;
  std::vector<double> counts = {0.0, 0.0};
  for (const auto& b : micro) {
    counts[0] += double(b.target_count());
    counts[1] += double(b.tokens());
  }
  sum_over(o.dp, counts);  // the whole global batch
  r.target_tokens = int64_t(counts[0]);
  r.tokens = int64_t(counts[1]);
  if (r.target_tokens == 0) fail("training step has no target tokens (every target is -100)");
  const double scale = o.loss_scale ? o.loss_scale->scale() : 1.0;
  const float grad_scale = float(scale / double(r.target_tokens));
  model.params().zero_grads();
  if (o.zero2) o.zero2->zero();
  Communicator* tensors = o.dp_tensors ? o.dp_tensors : o.dp;
  auto comm_bytes = [&] { return tensors ? tensors->bytes().total() : 0; };
  std::vector<double> loss_sum = {0.0};
  uint64_t before = comm_bytes();
  if (o.zero2) {  // every micro-batch's gradients go to the shards as they are produced
    model.set_grad_bind_hook([&](size_t a, size_t b) { o.zero2->bind(a, b); });
    model.set_grad_ready_hook([&](size_t a, size_t b) { o.zero2->ready(a, b); });
  }
  // Micro-batch i of dp rank r is number i·dp + r of the global batch (the loader deals
  // them out round robin), so every layout numbers, and masks, each one alike.
  const uint64_t dp_size = o.dp ? uint64_t(o.dp->size()) : 1, dp_rank = o.dp ? uint64_t(o.dp->rank()) : 0;
  const uint64_t first = uint64_t(o.step_index) * uint64_t(micro.size()) * dp_size;
  for (size_t i = 0; i < micro.size(); ++i) {
    model.set_micro_batch_index(first + uint64_t(i) * dp_size + dp_rank);
    // Gradients are final only in the last micro-batch: reduce them as they appear.
    const bool last = i + 1 == micro.size();
    if (o.grad_sync && last) {
      before = comm_bytes();
      model.set_grad_ready_hook([&](size_t a, size_t b) { o.grad_sync->ready(a, b); });
    }
    loss_sum[0] += model.forward_backward(micro[i], grad_scale).loss;
  }
  model.set_grad_ready_hook(nullptr);
  model.set_grad_bind_hook(nullptr);
  if (o.grad_sync) o.grad_sync->finish();
  if (o.grad_sync || o.zero2) r.grad_comm_bytes += comm_bytes() - before;
  SumSquares squares;
  if (o.zero) {
    before = comm_bytes();
    o.zero->reduce_scatter_gradients();
    r.grad_comm_bytes += comm_bytes() - before;
    squares = o.zero->gradient_sum_squares(model.backend());
  } else if (o.zero2) {
    squares = o.zero2->gradient_sum_squares();
  } else {
    squares = gradient_sum_squares(model.params(), model.backend());
  }
  const TensorParallel one;
  const double sum_squares = (o.tp ? *o.tp : one).combine_sum_squares(squares.sharded, squares.replicated);
  sum_over(o.dp, loss_sum);
  r.loss = loss_sum[0] / double(r.target_tokens);
  r.grad_norm = std::sqrt(sum_squares) / scale;
  if (!std::isfinite(r.grad_norm) || !std::isfinite(r.loss)) {
    r.skipped = true;
    if (o.loss_scale) o.loss_scale->overflow();
    return r;
  }
  r.clip = clip_factor(r.grad_norm, max_grad_norm);
  optimizer.step(lr, float(r.clip / scale));
  if (o.zero || o.zero2) {
    before = comm_bytes();
    if (o.zero) o.zero->all_gather_parameters();
    if (o.zero2) o.zero2->all_gather_parameters();
    r.grad_comm_bytes += comm_bytes() - before;
  }
  if (o.loss_scale) o.loss_scale->good_step();
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
