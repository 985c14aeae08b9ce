#include "peft/projection.h"

#include "core/error.h"

namespace temper {

void Projection::allocate_acts(ProjectionActs& acts, Arena& arena, DType dtype, int64_t T,
                               const ParameterSet& params) const {
  if (!lora_.defined()) return;
  acts.hs = arena.allocate(dtype, Shape{T, lora_.r});
  if (!lora_.dora()) return;
  const int64_t O = params[weight_].shape[0];  // this rank's rows
  acts.z = arena.allocate(dtype, Shape{T, O});
  acts.sumsq = arena.allocate(DType::F32, Shape{O});
}

Tensor Projection::value(const ProjectionContext& c, size_t i) const {
  return i == kNoParam ? Tensor{} : c.params[i].value;
}

Tensor Projection::grad(const ProjectionContext& c, size_t i) const {
  if (i == kNoParam || !c.params[i].trainable) return Tensor{};
  return c.params[i].grad;
}

RngStream Projection::dropout_stream(const ProjectionContext& c) const {
  return rng_stream(c.seed, RngPurpose::Dropout, name_hash(name_));
}

Tensor Projection::lora_input(const ProjectionContext& c, Tensor x, int64_t full_cols,
                              int64_t col0) const {
  if (!c.training || lora_.dropout == 0.0f) return x;
  Tensor xd = c.scratch.allocate(x.dtype(), x.shape());
  const uint64_t offset = c.call * uint64_t(x.size(0) * full_cols);  // this call's elements
  c.backend.dropout(xd, x, lora_.dropout, dropout_stream(c), offset, full_cols, col0, false);
  return xd;
}

void Projection::lora_input_backward(const ProjectionContext& c, Tensor dx, Tensor dh,
                                     int64_t full_cols, int64_t col0) const {
  const Tensor A = value(c, lora_.A);
  if (!c.training || lora_.dropout == 0.0f) {
    c.backend.linear_backward(dx, Tensor{}, Tensor{}, dh, Tensor{}, A);  // dx += dh·A
    return;
  }
  Tensor dxa = c.scratch.allocate(dx.dtype(), dx.shape());  // d(drop(x))
  c.backend.zero(dxa);
  c.backend.linear_backward(dxa, Tensor{}, Tensor{}, dh, Tensor{}, A);
  const uint64_t offset = c.call * uint64_t(dx.size(0) * full_cols);
  c.backend.dropout(dx, dxa, lora_.dropout, dropout_stream(c), offset, full_cols, col0, true);
}

void Projection::local_row_sum_squares(const ProjectionContext& c, Tensor sumsq) const {
  Backend& be = c.backend;
  const Tensor W = value(c, weight_);  // [O_l, I_l]
  if (!lora_.defined()) return be.row_sum_squares(sumsq, W);
  const Tensor A = value(c, lora_.A), B = value(c, lora_.B);  // [r, I_l], [O_l, r]
  Arena::Mark mark = c.scratch.mark();
  Tensor merged = c.scratch.allocate(W.dtype(), W.shape());  // W0 + s·B·A  [O_l, I_l]
  Tensor sB = c.scratch.allocate(B.dtype(), B.shape());      // s·B  [O_l, r]
  be.copy(merged, W);
  be.copy(sB, B);
  be.scale(sB, lora_.scale);
  be.linear_backward(merged, Tensor{}, Tensor{}, sB, Tensor{}, A);  // merged += sB·A
  be.row_sum_squares(sumsq, merged);
  c.scratch.release(mark);
}

Tensor Projection::backward_common(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x,
                                   ProjectionActs& acts, Tensor dh) const {
  Backend& be = c.backend;
  const Tensor W = value(c, weight_), B = value(c, lora_.B);
  Tensor dz = dout;
  if (lora_.dora()) {  // out = c ⊙ z + b: dz = c ⊙ dout, dm from z, db from dout
    dz = c.scratch.allocate(dout.dtype(), dout.shape());
    be.zero(dz);
    be.dora_scale_backward(dz, grad(c, lora_.magnitude), dout, acts.z, value(c, lora_.magnitude),
                           acts.sumsq);
    if (grad(c, bias_).defined())
      be.linear_backward(Tensor{}, Tensor{}, grad(c, bias_), dout, Tensor{}, Tensor{});
    be.linear_backward(dx, grad(c, weight_), Tensor{}, dz, x, W);
  } else {
    be.linear_backward(dx, grad(c, weight_), grad(c, bias_), dz, x, W);
  }
  be.linear_backward(Tensor{}, grad(c, lora_.B), Tensor{}, dz, acts.hs, Tensor{});  // dB += dzᵀ·hs
  be.zero(dh);
  be.linear_backward(dh, Tensor{}, Tensor{}, dz, Tensor{}, B);  // dh = dz·B
  be.scale(dh, lora_.scale);                                    // ·s
  return dz;
}

// ---- column-parallel ------------------------------------------------------------------

void ColumnParallelProjection::forward(const ProjectionContext& c, Tensor out, Tensor x,
                                       ProjectionActs& acts) const {
  Backend& be = c.backend;
  const Tensor W = value(c, weight_), b = value(c, bias_);
  if (!lora_.defined()) return be.linear_forward(out, x, W, b);
  const Tensor A = value(c, lora_.A), B = value(c, lora_.B);
  Arena::Mark mark = c.scratch.mark();
  const Tensor xa = lora_input(c, x, x.size(1), 0);
  be.linear_forward(acts.hs, xa, A, Tensor{});  // hs = s·drop(x)·Aᵀ, the same on every rank
  be.scale(acts.hs, lora_.scale);
  if (!lora_.dora()) {
    be.linear_forward(out, x, W, b);
    be.matmul_add(out, acts.hs, B);
  } else {
    dora_row_sum_squares(c, acts.sumsq);
    be.linear_forward(acts.z, x, W, Tensor{});
    be.matmul_add(acts.z, acts.hs, B);
    be.dora_scale_forward(out, acts.z, value(c, lora_.magnitude), acts.sumsq, b);
  }
  c.scratch.release(mark);
}

void ColumnParallelProjection::backward(const ProjectionContext& c, Tensor dx, Tensor dout,
                                        Tensor x, ProjectionActs& acts) const {
  Backend& be = c.backend;
  if (!lora_.defined())
    return be.linear_backward(dx, grad(c, weight_), grad(c, bias_), dout, x, value(c, weight_));
  Arena::Mark mark = c.scratch.mark();
  Tensor dh = c.scratch.allocate(dout.dtype(), Shape{dout.size(0), lora_.r});  // [T, r]
  backward_common(c, dx, dout, x, acts, dh);
  // dx through A from this rank's part of dh: the model's tp sum of dx completes it.
  lora_input_backward(c, dx, dh, x.size(1), 0);
  // dA needs the whole dh: B's rows (and so dh's terms) are spread over the ranks.
  c.tp.reduce_lora_column_hidden_grad(dh);
  const Tensor xa = lora_input(c, x, x.size(1), 0);
  be.linear_backward(Tensor{}, grad(c, lora_.A), Tensor{}, dh, xa, Tensor{});  // dA += dhᵀ·xa
  c.scratch.release(mark);
}

// ---- row-parallel ---------------------------------------------------------------------

void RowParallelProjection::forward(const ProjectionContext& c, Tensor out, Tensor x,
                                    ProjectionActs& acts) const {
  Backend& be = c.backend;
  TEMPER_CHECK(bias_ == kNoParam, "{}: a row-parallel projection has no bias", name_);
  const Tensor W = value(c, weight_);
  if (!lora_.defined()) {
    be.linear_forward(out, x, W, Tensor{});
    c.tp.reduce_row_parallel_output(out);
    return;
  }
  const Parameter& A = c.params[lora_.A];  // [r, I/tp]: columns [shard·I/tp, ...) of [r, I]
  const int64_t full_cols = A.full_shape[1], col0 = A.shard * A.shape[1];
  Arena::Mark mark = c.scratch.mark();
  const Tensor xa = lora_input(c, x, full_cols, col0);
  be.linear_forward(acts.hs, xa, A.value, Tensor{});
  be.scale(acts.hs, lora_.scale);
  c.tp.reduce_lora_row_hidden(acts.hs);
  Tensor target = lora_.dora() ? acts.z : out;  // x·W0ᵀ + hs·Bᵀ, whole after the tp sum
  be.linear_forward(target, x, W, Tensor{});
  c.tp.reduce_row_parallel_output(target);
  be.matmul_add(target, acts.hs, value(c, lora_.B));
  if (lora_.dora()) {
    dora_row_sum_squares(c, acts.sumsq);
    be.dora_scale_forward(out, acts.z, value(c, lora_.magnitude), acts.sumsq, Tensor{});
  }
  c.scratch.release(mark);
}

void RowParallelProjection::backward(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x,
                                     ProjectionActs& acts) const {
  Backend& be = c.backend;
  if (!lora_.defined())
    return be.linear_backward(dx, grad(c, weight_), Tensor{}, dout, x, value(c, weight_));
  const Parameter& A = c.params[lora_.A];
  const int64_t full_cols = A.full_shape[1], col0 = A.shard * A.shape[1];
  Arena::Mark mark = c.scratch.mark();
  Tensor dh = c.scratch.allocate(dout.dtype(), Shape{dout.size(0), lora_.r});  // [T, r], whole
  backward_common(c, dx, dout, x, acts, dh);
  const Tensor xa = lora_input(c, x, full_cols, col0);
  be.linear_backward(Tensor{}, grad(c, lora_.A), Tensor{}, dh, xa, Tensor{});  // dA_r += dhᵀ·xa_r
  lora_input_backward(c, dx, dh, full_cols, col0);                            // dx_r += dh·A_r
  c.scratch.release(mark);
}

}  // namespace temper
