// The projection unit: the one seam through which all seven projections of a block (q, k,
// v, o, gate, up, down) run. It is a base weight W0[O, I] (+ bias), frozen or trainable,
// plus whatever PEFT attaches to it:
//
//   plain   out = x·W0ᵀ + b
//   LoRA    out = x·W0ᵀ + b + hs·Bᵀ,            hs = s·(drop(x)·Aᵀ)      A [r, I], B [O, r]
//   DoRA    z = x·W0ᵀ + hs·Bᵀ,  out = m / ‖W0 + s·B·A‖_row ⊙ z + b    m [O], norm detached
//           (with dropout, as PEFT: out = x·W0ᵀ + b + (c − 1) ⊙ drop(x)·W0ᵀ + c ⊙ hs·Bᵀ,
//           c = m / ‖W0 + s·B·A‖_row)
//
// s = alpha / r (rsLoRA: alpha / sqrt(r)); drop() is inverted dropout whose mask is drawn
// from Philox by (projection, call, element), so a recomputed forward and the backward see
// the same mask and the run is reproducible and resumable. The norm is a constant in
// backward, as in the DoRA paper (§4.3) and PEFT.
//
// Tensor parallelism (Megatron's split; docs/architecture.md, "PEFT: the projection unit"): a column-parallel base splits W0 and B
// by rows (and m), keeps A whole; a row-parallel base splits W0 and A by columns, keeps B
// and m whole. Each class does the communication its name implies (TensorParallel names
// each point). Initial values never depend on the tp size (ParameterSet::init_one).
#pragma once
#include <cstdint>
#include <string>

#include "core/allocator.h"
#include "kernels/backend.h"
#include "model/parameters.h"
#include "parallel/tensor_parallel.h"

namespace temper {

constexpr size_t kNoParam = size_t(-1);

// The LoRA / DoRA parameters attached to one projection (indices into the ParameterSet).
struct LoraAttachment {
  size_t A = kNoParam, B = kNoParam;  // lora_A [r, I], lora_B [O, r]
  size_t magnitude = kNoParam;        // DoRA: lora_magnitude_vector [O]
  int64_t r = 0;
  float scale = 1.0f;    // s
  float dropout = 0.0f;  // p
  bool defined() const { return A != kNoParam; }
  bool dora() const { return magnitude != kNoParam; }
};

// The IA3 vector attached to one projection: it scales the output (x·W0ᵀ + b) ⊙ l, or for
// a feed-forward module the input: (x ⊙ l)·W0ᵀ + b.
struct Ia3Attachment {
  size_t scale = kNoParam;  // ia3_l [out] or [in]
  bool feedforward = false;
  bool defined() const { return scale != kNoParam; }
};

// A bottleneck adapter (Houlsby et al. 2019, AdapterHub's double_seq_bn) on a row-parallel
// projection's output (o_proj: after attention; down_proj: after the MLP), before the
// block's residual add: out = y + up(silu(down(y))), y the projection's (whole) output.
struct BottleneckAttachment {
  size_t down = kNoParam, down_bias = kNoParam, up = kNoParam, up_bias = kNoParam;
  bool defined() const { return down != kNoParam; }
};

// What one projection's forward keeps for its backward (one micro-batch).
struct ProjectionActs {
  Tensor hs;     // [T, r]   s·(drop(x)·Aᵀ), whole (summed over tp for a row-parallel base)
  Tensor z;      // [T, O/tp or O]  DoRA: x·W0ᵀ + hs·Bᵀ, before the rescale, no bias;
                 //                  IA3 (output): x·W0ᵀ + b, before the scale
  Tensor sumsq;  // [O/tp or O] f32  DoRA: Σ_i (W0 + s·B·A)[o, i]² over the whole row
  Tensor y, h, a;  // bottleneck: [T, O] the projection's output, [T, b] down(y), silu of it
};

// Everything a forward or backward call needs besides its tensors.
struct ProjectionContext {
  Backend& backend;
  ParameterSet& params;
  const TensorParallel& tp;
  Arena& scratch;         // transient buffers, released before the call returns
  bool training = false;  // dropout only while training
  uint64_t seed = 0;      // dropout stream key
  uint64_t call = 0;      // which forward this is (step × micro-batches + micro-batch)
};

class Projection {
 public:
  // name: the module path ("model.layers.3.self_attn.q_proj"); bias may be kNoParam.
  Projection(std::string name, size_t weight, size_t bias, LoraAttachment lora, Ia3Attachment ia3 = {})
      : name_(std::move(name)), weight_(weight), bias_(bias), lora_(lora), ia3_(ia3) {}
  const std::string& name() const { return name_; }
  size_t weight() const { return weight_; }
  size_t bias() const { return bias_; }
  const LoraAttachment& lora() const { return lora_; }
  const Ia3Attachment& ia3() const { return ia3_; }
  virtual ~Projection() = default;
  // The saved tensors of one micro-batch of T tokens (nothing for a plain projection).
  virtual void allocate_acts(ProjectionActs& acts, Arena& arena, DType dtype, int64_t T,
                             const ParameterSet& params) const;
  virtual bool saves_acts() const { return lora_.defined() || ia3_.defined(); }

 protected:
  Projection() = default;
  Tensor value(const ProjectionContext& c, size_t i) const;
  // W0 as a dense [O, I] tensor: the parameter's value, or for an NF4 weight (QLoRA) a
  // scratch buffer it is dequantized into (release it with the caller's arena mark).
  Tensor base_weight(const ProjectionContext& c) const;
  Tensor grad(const ProjectionContext& c, size_t i) const;  // undefined when frozen / absent
  bool dropping(const ProjectionContext& c) const;  // training with dropout > 0
  // x (no dropout, or not training), else drop(x) in a scratch buffer.
  Tensor lora_input(const ProjectionContext& c, Tensor x, int64_t full_cols, int64_t col0) const;
  // sumsq[O_local] = Σ over this rank's columns of (W0 + s·B·A)², before any tp sum.
  void local_row_sum_squares(const ProjectionContext& c, Tensor sumsq) const;
  // DoRA with dropout: out (= W0·x + b) += c ⊙ z − zb, z = zb + hs·Bᵀ saved (zb = W0·drop(x)).
  void dora_dropout_combine(const ProjectionContext& c, Tensor out, Tensor zb, ProjectionActs& acts) const;
  // What backward passes from the output to the adapter's input (scratch tensors).
  struct Grads {
    Tensor dz;             // [T, O]  d(out) through DoRA's rescale (dout for LoRA)
    Tensor dh;             // [T, r]  s·dz·B, this rank's part (whole for a row-parallel base)
    Tensor dbase_dropped;  // [T, O]  DoRA with dropout: dz − dout, read by W0·drop(x)
  };
  // The backward steps both splits share: the DoRA rescale (dmagnitude), the base's
  // weight and bias gradients and its path to dx, dB, and dh.
  Grads backward_common(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x,
                        ProjectionActs& acts) const;
  // dx += the gradient through the adapter's input drop(x): dh·A (+ dbase_dropped·W0),
  // through the dropout mask.
  void lora_input_backward(const ProjectionContext& c, Tensor dx, const Grads& g,
                           int64_t full_cols, int64_t col0) const;
  RngStream dropout_stream(const ProjectionContext& c) const;
  // IA3: out = base(x) with the scale on the output or input; `row` sums the base output
  // over tp (a row-parallel base) before the output scale.
  void ia3_forward(const ProjectionContext& c, Tensor out, Tensor x, ProjectionActs& acts, bool row) const;
  void ia3_backward(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x, ProjectionActs& acts) const;

  std::string name_;
  size_t weight_ = kNoParam, bias_ = kNoParam;
  LoraAttachment lora_;
  Ia3Attachment ia3_;
};

// q, k, v, gate, up: W0 [O/tp, I] (rows split), bias [O/tp], A [r, I] whole, B [O/tp, r],
// m [O/tp]. Forward needs no communication. Backward leaves dx as this rank's partial
// sum (the model sums q, k and v's together once: reduce_column_parallel_input_grad) and
// sums dh over tp for dA (reduce_lora_column_hidden_grad).
class ColumnParallelProjection : public Projection {
 public:
  using Projection::Projection;
  ColumnParallelProjection() = default;
  // out[T, O/tp]; x[T, I] (the same on every tp rank).
  void forward(const ProjectionContext& c, Tensor out, Tensor x, ProjectionActs& acts) const;
  // dx[T, I] += (partial), parameter gradients +=; dout[T, O/tp].
  void backward(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x, ProjectionActs& acts) const;
  // DoRA: sumsq[O/tp] f32 = the row norms² of W0 + s·B·A (the forward's; m's init).
  void dora_row_sum_squares(const ProjectionContext& c, Tensor sumsq) const {
    local_row_sum_squares(c, sumsq);
  }
};

// o, down: W0 [O, I/tp] (columns split), no bias, A [r, I/tp], B [O, r] and m [O] whole.
// Forward sums the base output over tp (reduce_row_parallel_output), and the LoRA hidden
// (reduce_lora_row_hidden) and DoRA's row norms (reduce_dora_row_norms); out is whole.
class RowParallelProjection : public Projection {
 public:
  using Projection::Projection;
  RowParallelProjection() = default;
  RowParallelProjection(std::string name, size_t weight, size_t bias, LoraAttachment lora,
                        Ia3Attachment ia3, BottleneckAttachment adapter)
      : Projection(std::move(name), weight, bias, lora, ia3), adapter_(adapter) {}
  const BottleneckAttachment& adapter() const { return adapter_; }
  void allocate_acts(ProjectionActs& acts, Arena& arena, DType dtype, int64_t T,
                     const ParameterSet& params) const override;
  bool saves_acts() const override { return Projection::saves_acts() || adapter_.defined(); }
  // out[T, O] (the same on every tp rank); x[T, I/tp].
  void forward(const ProjectionContext& c, Tensor out, Tensor x, ProjectionActs& acts) const;
  // dx[T, I/tp] +=, parameter gradients +=; dout[T, O] (the same on every tp rank).
  void backward(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x, ProjectionActs& acts) const;
  // DoRA: sumsq[O] f32 = the row norms² of W0 + s·B·A, each row's columns summed over tp.
  void dora_row_sum_squares(const ProjectionContext& c, Tensor sumsq) const {
    local_row_sum_squares(c, sumsq);
    c.tp.reduce_dora_row_norms(sumsq);
  }

 private:
  void forward_base(const ProjectionContext& c, Tensor out, Tensor x, ProjectionActs& acts) const;
  void backward_base(const ProjectionContext& c, Tensor dx, Tensor dout, Tensor x, ProjectionActs& acts) const;
  BottleneckAttachment adapter_;
};

}  // namespace temper
