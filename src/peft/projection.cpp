#include "peft/projection.h"

#include "core/error.h"

namespace temper {

void Projection::allocate_acts(ProjectionActs& acts, Arena& arena, DType dtype, int64_t T,
                               const ParameterSet& params) const {
  if (ia3_.defined() && !ia3_.feedforward)  // the unscaled output
    acts.z = arena.allocate(dtype, Shape{T, params[weight_].shape[0]});
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

Tensor Projection::base_weight(const ProjectionContext& c) const {
  const Parameter& p = c.params[weight_];
  if (!p.quantized) return p.value;
  Tensor w = c.scratch.allocate(c.params.dtype(), p.shape);  // one layer at a time (QLoRA)
  c.backend.nf4_dequantize(w, p.nf4);
  return w;
}

Tensor Projection::grad(const ProjectionContext& c, size_t i) const {
  if (i == kNoParam || !c.params[i].trainable) return Tensor{};
  return c.params[i].grad;
}

bool Projection::dropping(const ProjectionContext& c) const {
  return c.training && lora_.dropout > 0.0f;
}

RngStream Projection::dropout_stream(const ProjectionContext& c) const {
  return rng_stream(c.seed, RngPurpose::Dropout, name_hash(name_));
}

Tensor Projection::lora_input(const ProjectionContext& c, Tensor x, int64_t full_cols,
                              int64_t col0) const {
  if (!dropping(c)) return x;
  Tensor xd = c.scratch.allocate(x.dtype(), x.shape());
  const uint64_t offset = c.call * uint64_t(x.size(0) * full_cols);  // this call's elements
  c.backend.dropout(xd, x, lora_.dropout, dropout_stream(c), offset, full_cols, col0, false);
  return xd;
}

void Projection::lora_input_backward(const ProjectionContext& c, Tensor dx, const Grads& g,
                                     int64_t full_cols, int64_t col0) const {
  Backend& be = c.backend;
  const Tensor A = value(c, lora_.A);
  if (!dropping(c)) {
    be.linear_backward(dx, Tensor{}, Tensor{}, g.dh, Tensor{}, A);  // dx += dh·A
    return;
  }
  Tensor dxa = c.scratch.allocate(dx.dtype(), dx.shape());  // d(drop(x))
  be.zero(dxa);
  be.linear_backward(dxa, Tensor{}, Tensor{}, g.dh, Tensor{}, A);
  if (g.dbase_dropped.defined())  // DoRA: the rescaled base term also reads drop(x)
    be.linear_backward(dxa, Tensor{}, Tensor{}, g.dbase_dropped, Tensor{}, base_weight(c));
  const uint64_t offset = c.call * uint64_t(dx.size(0) * full_cols);
  be.dropout(dx, dxa, lora_.dropout, dropout_stream(c), offset, full_cols, col0, true);
}

void Projection::local_row_sum_squares(const ProjectionContext& c, Tensor sumsq) const {
  Backend& be = c.backend;
  Arena::Mark mark = c.scratch.mark();
  const Tensor W = base_weight(c);  // [O_l, I_l]
  const Tensor A = value(c, lora_.A), B = value(c, lora_.B);  // [r, I_l], [O_l, r]
  Tensor merged = c.scratch.allocate(W.dtype(), W.shape());  // W0 + s·B·A  [O_l, I_l]
  Tensor sB = c.scratch.allocate(B.dtype(), B.shape());      // s·B  [O_l, r]
  be.copy(merged, W);
  be.copy(sB, B);
  be.scale(sB, lora_.scale);
  be.linear_backward(merged, Tensor{}, Tensor{}, sB, Tensor{}, A);  // merged += sB·A
  be.row_sum_squares(sumsq, merged);
  c.scratch.release(mark);
}

// DoRA with dropout (PEFT's form): out = W0·x + b + (c − 1) ⊙ W0·xd + c ⊙ hs·Bᵀ, i.e.
// out = base + c ⊙ z − zb with zb = W0·xd and z = zb + hs·Bᵀ. `base` holds W0·x + b (summed
// over tp) and `zb` W0·xd (likewise) on entry; z is left in acts.z.
void Projection::dora_dropout_combine(const ProjectionContext& c, Tensor out, Tensor zb,
                                      ProjectionActs& acts) const {
  Backend& be = c.backend;
  Tensor t = c.scratch.allocate(out.dtype(), out.shape());
  be.copy(t, zb);
  be.scale(t, -1.0f);
  be.add(out, out, t);  // base − zb
  be.copy(acts.z, zb);
  be.matmul_add(acts.z, acts.hs, value(c, lora_.B));  // z = zb + hs·Bᵀ
  be.dora_scale_forward(t, acts.z, value(c, lora_.magnitude), acts.sumsq, Tensor{});
  be.add(out, out, t);  // + c ⊙ z
}

Projection::Grads Projection::backward_common(const ProjectionContext& c, Tensor dx, Tensor dout,
                                              Tensor x, ProjectionActs& acts) const {
  Backend& be = c.backend;
  const Tensor W = base_weight(c), B = value(c, lora_.B);
  Grads g;
  g.dz = dout;
  if (lora_.dora()) {  // out = c ⊙ z + b: dz = c ⊙ dout, dm from z, db from dout
    g.dz = c.scratch.allocate(dout.dtype(), dout.shape());
    be.zero(g.dz);
    be.dora_scale_backward(g.dz, grad(c, lora_.magnitude), dout, acts.z, value(c, lora_.magnitude),
                           acts.sumsq);
    if (dropping(c)) {  // out = W0·x + b + c ⊙ z − W0·xd: x's base path takes dout, xd's dz − dout
      be.linear_backward(dx, grad(c, weight_), grad(c, bias_), dout, x, W);
      g.dbase_dropped = c.scratch.allocate(dout.dtype(), dout.shape());
      be.copy(g.dbase_dropped, dout);
      be.scale(g.dbase_dropped, -1.0f);
      be.add(g.dbase_dropped, g.dbase_dropped, g.dz);
    } else {
      if (grad(c, bias_).defined())
        be.linear_backward(Tensor{}, Tensor{}, grad(c, bias_), dout, Tensor{}, Tensor{});
      be.linear_backward(dx, grad(c, weight_), Tensor{}, g.dz, x, W);
    }
  } else {
    be.linear_backward(dx, grad(c, weight_), grad(c, bias_), dout, x, W);
  }
  be.linear_backward(Tensor{}, grad(c, lora_.B), Tensor{}, g.dz, acts.hs, Tensor{});  // dB += dzᵀ·hs
  g.dh = c.scratch.allocate(dout.dtype(), Shape{dout.size(0), lora_.r});  // [T, r]
  be.zero(g.dh);
  be.linear_backward(g.dh, Tensor{}, Tensor{}, g.dz, Tensor{}, B);  // dh = dz·B
  be.scale(g.dh, lora_.scale);                                       // ·s
  return g;
}

// IA3. Output scale: z = x·W0ᵀ + b (summed over tp first for a row-parallel base), out =
// l ⊙ z; dz = l ⊙ dout, dl = Σ_t dout ⊙ z. Input scale (feed-forward): out = (x ⊙ l)·W0ᵀ + b;
// d(x ⊙ l) = dout·W0, dx += l ⊙ that, dl = Σ_t that ⊙ x (on a row-parallel base each rank
// holds its columns of x and l, so no sum is needed).
void Projection::ia3_forward(const ProjectionContext& c, Tensor out, Tensor x, ProjectionActs& acts,
                             bool row) const {
  Backend& be = c.backend;
  const Tensor W = base_weight(c), b = value(c, bias_), l = value(c, ia3_.scale);
  if (ia3_.feedforward) {
    Tensor xs = c.scratch.allocate(x.dtype(), x.shape());
    be.dora_scale_forward(xs, x, l, Tensor{}, Tensor{});
    be.linear_forward(out, xs, W, b);
    if (row) c.tp.reduce_row_parallel_output(out);
    return;
  }
  be.linear_forward(acts.z, x, W, b);
  if (row) c.tp.reduce_row_parallel_output(acts.z);
  be.dora_scale_forward(out, acts.z, l, Tensor{}, Tensor{});
}

void Projection::ia3_backward(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x,
                              ProjectionActs& acts) const {
  Backend& be = c.backend;
  const Tensor W = base_weight(c), l = value(c, ia3_.scale), dl = grad(c, ia3_.scale);
  if (ia3_.feedforward) {
    Tensor dxs = c.scratch.allocate(x.dtype(), x.shape());  // d(x ⊙ l)
    be.zero(dxs);
    Tensor dW = grad(c, weight_), xs;
    if (dW.defined()) {  // a trained base weight needs the scaled input
      xs = c.scratch.allocate(x.dtype(), x.shape());
      be.dora_scale_forward(xs, x, l, Tensor{}, Tensor{});
    }
    be.linear_backward(dxs, dW, grad(c, bias_), dout, xs, W);
    be.dora_scale_backward(dx, dl, dxs, x, l, Tensor{});
    return;
  }
  Tensor dz = c.scratch.allocate(dout.dtype(), dout.shape());
  be.zero(dz);
  be.dora_scale_backward(dz, dl, dout, acts.z, l, Tensor{});
  be.linear_backward(dx, grad(c, weight_), grad(c, bias_), dz, x, W);
}

// ---- column-parallel ------------------------------------------------------------------

void ColumnParallelProjection::forward(const ProjectionContext& c, Tensor out, Tensor x,
                                       ProjectionActs& acts) const {
  Backend& be = c.backend;
  Arena::Mark mark = c.scratch.mark();
  if (ia3_.defined()) {
    ia3_forward(c, out, x, acts, false);
    return c.scratch.release(mark);
  }
  const Tensor W = base_weight(c), b = value(c, bias_);
  if (!lora_.defined()) {
    be.linear_forward(out, x, W, b);
    return c.scratch.release(mark);
  }
  const Tensor A = value(c, lora_.A), B = value(c, lora_.B);
  const Tensor xa = lora_input(c, x, x.size(1), 0);
  be.linear_forward(acts.hs, xa, A, Tensor{});  // hs = s·drop(x)·Aᵀ, the same on every rank
  be.scale(acts.hs, lora_.scale);
  if (!lora_.dora()) {
    be.linear_forward(out, x, W, b);
    be.matmul_add(out, acts.hs, B);
  } else if (!dropping(c)) {
    dora_row_sum_squares(c, acts.sumsq);
    be.linear_forward(acts.z, x, W, Tensor{});
    be.matmul_add(acts.z, acts.hs, B);
    be.dora_scale_forward(out, acts.z, value(c, lora_.magnitude), acts.sumsq, b);
  } else {
    dora_row_sum_squares(c, acts.sumsq);
    Tensor zb = c.scratch.allocate(out.dtype(), out.shape());
    be.linear_forward(out, x, W, b);
    be.linear_forward(zb, xa, W, Tensor{});
    dora_dropout_combine(c, out, zb, acts);
  }
  c.scratch.release(mark);
}

void ColumnParallelProjection::backward(const ProjectionContext& c, Tensor dx, Tensor dout,
                                        Tensor x, ProjectionActs& acts) const {
  Backend& be = c.backend;
  Arena::Mark mark = c.scratch.mark();
  if (ia3_.defined()) {
    ia3_backward(c, dx, dout, x, acts);
    return c.scratch.release(mark);
  }
  if (!lora_.defined()) {
    be.linear_backward(dx, grad(c, weight_), grad(c, bias_), dout, x, base_weight(c));
    return c.scratch.release(mark);
  }
  const Grads g = backward_common(c, dx, dout, x, acts);
  // dx through the adapter's input from this rank's part of dh (and of dz): the model's
  // tp sum of dx completes it.
  lora_input_backward(c, dx, g, x.size(1), 0);
  // dA needs the whole dh: B's rows (and so dh's terms) are spread over the ranks.
  c.tp.reduce_lora_column_hidden_grad(g.dh);
  const Tensor xa = lora_input(c, x, x.size(1), 0);
  be.linear_backward(Tensor{}, grad(c, lora_.A), Tensor{}, g.dh, xa, Tensor{});  // dA += dhᵀ·xa
  c.scratch.release(mark);
}

// ---- row-parallel ---------------------------------------------------------------------

void RowParallelProjection::allocate_acts(ProjectionActs& acts, Arena& arena, DType dtype, int64_t T,
                                          const ParameterSet& params) const {
  Projection::allocate_acts(acts, arena, dtype, T, params);
  if (!adapter_.defined()) return;
  const int64_t O = params[weight_].shape[0], b = params[adapter_.down].shape[0];
  acts.y = arena.allocate(dtype, Shape{T, O});
  acts.h = arena.allocate(dtype, Shape{T, b});
  acts.a = arena.allocate(dtype, Shape{T, b});
}

// The bottleneck: out = y + up(silu(h)), h = down(y); y = the projection's output (whole).
void RowParallelProjection::forward(const ProjectionContext& c, Tensor out, Tensor x,
                                    ProjectionActs& acts) const {
  if (!adapter_.defined()) return forward_base(c, out, x, acts);
  Backend& be = c.backend;
  forward_base(c, acts.y, x, acts);
  be.linear_forward(acts.h, acts.y, value(c, adapter_.down), value(c, adapter_.down_bias));
  be.activation_forward(acts.a, acts.h, Backend::Activation::Silu);
  be.linear_forward(out, acts.a, value(c, adapter_.up), value(c, adapter_.up_bias));
  be.add(out, out, acts.y);
}

void RowParallelProjection::backward(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x,
                                     ProjectionActs& acts) const {
  if (!adapter_.defined()) return backward_base(c, dx, dout, x, acts);
  Backend& be = c.backend;
  Arena::Mark mark = c.scratch.mark();
  Tensor da = c.scratch.allocate(acts.a.dtype(), acts.a.shape()), dh = c.scratch.allocate(acts.h.dtype(), acts.h.shape());
  Tensor dy = c.scratch.allocate(dout.dtype(), dout.shape());
  be.zero(da);
  be.zero(dh);
  be.copy(dy, dout);  // the identity path
  be.linear_backward(da, grad(c, adapter_.up), grad(c, adapter_.up_bias), dout, acts.a, value(c, adapter_.up));
  be.activation_backward(dh, da, acts.h, Backend::Activation::Silu);
  be.linear_backward(dy, grad(c, adapter_.down), grad(c, adapter_.down_bias), dh, acts.y,
                     value(c, adapter_.down));
  backward_base(c, dx, dy, x, acts);
  c.scratch.release(mark);
}

void RowParallelProjection::forward_base(const ProjectionContext& c, Tensor out, Tensor x,
                                         ProjectionActs& acts) const {
  Backend& be = c.backend;
  TEMPER_CHECK(bias_ == kNoParam, "{}: a row-parallel projection has no bias", name_);
  Arena::Mark mark = c.scratch.mark();
  if (ia3_.defined()) {
    ia3_forward(c, out, x, acts, true);
    return c.scratch.release(mark);
  }
  const Tensor W = base_weight(c);
  if (!lora_.defined()) {
    be.linear_forward(out, x, W, Tensor{});
    c.tp.reduce_row_parallel_output(out);
    return c.scratch.release(mark);
  }
  const Parameter& A = c.params[lora_.A];  // [r, I/tp]: columns [shard·I/tp, ...) of [r, I]
  const int64_t full_cols = A.full_shape[1], col0 = A.shard * A.shape[1];
  const Tensor xa = lora_input(c, x, full_cols, col0);
  be.linear_forward(acts.hs, xa, A.value, Tensor{});
  be.scale(acts.hs, lora_.scale);
  c.tp.reduce_lora_row_hidden(acts.hs);
  if (lora_.dora() && dropping(c)) {
    dora_row_sum_squares(c, acts.sumsq);
    Tensor zb = c.scratch.allocate(out.dtype(), out.shape());
    be.linear_forward(out, x, W, Tensor{});
    c.tp.reduce_row_parallel_output(out);
    be.linear_forward(zb, xa, W, Tensor{});
    c.tp.reduce_row_parallel_output(zb);
    dora_dropout_combine(c, out, zb, acts);
    c.scratch.release(mark);
    return;
  }
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

void RowParallelProjection::backward_base(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x,
                                          ProjectionActs& acts) const {
  Backend& be = c.backend;
  Arena::Mark mark = c.scratch.mark();
  if (ia3_.defined()) {
    ia3_backward(c, dx, dout, x, acts);
    return c.scratch.release(mark);
  }
  if (!lora_.defined()) {
    be.linear_backward(dx, grad(c, weight_), Tensor{}, dout, x, base_weight(c));
    return c.scratch.release(mark);
  }
  const Parameter& A = c.params[lora_.A];
  const int64_t full_cols = A.full_shape[1], col0 = A.shard * A.shape[1];
  const Grads g = backward_common(c, dx, dout, x, acts);  // dh whole: dz and B are
  const Tensor xa = lora_input(c, x, full_cols, col0);
  be.linear_backward(Tensor{}, grad(c, lora_.A), Tensor{}, g.dh, xa, Tensor{});  // dA_r += dhᵀ·xa_r
  lora_input_backward(c, dx, g, full_cols, col0);                               // dx_r += dh·A_r
  c.scratch.release(mark);
}

}  // namespace temper
