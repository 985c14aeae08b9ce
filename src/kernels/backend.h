// The kernel backend interface: every op the model, optimizer and trainer use, forward
// and backward. Model code is written once against it; `cpu` (fp32 reference, OpenBLAS +
// OpenMP) and `cuda` (bf16 kernels + cuBLASLt) implement it.
//
// Conventions (all ops):
//   T  tokens in a micro-batch (rows × seq_len, packed)     C  hidden size
//   Hq query heads, Hkv key/value heads, D head dim          F  MLP intermediate size
//   V  vocab size,  N  document count in the micro-batch
// - Tensors are contiguous, row-major, on the backend's device.
// - Every gradient output (d*) is ACCUMULATED into (+=); the caller zeroes it first.
//   This makes residual branches and shared weights (tied embeddings) free.
// - Optional tensors are passed as an undefined Tensor{}.
// - Values are the activation dtype (f32 on CPU); ids/targets/positions/cu_seqlens are
//   i32; rstd and lse statistics are always f32.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/allocator.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/op_clock.h"

namespace temper {

// Hyper-parameters of one AdamW update (decoupled weight decay, Loshchilov & Hutter).
struct AdamWStep {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // applied as p -= lr * wd * p
  int64_t step = 1;           // 1-based, for bias correction
  float grad_scale = 1.0f;    // gradients are multiplied by this first (clipping)
};

// Loss of a fused LM head + cross-entropy call.
struct LossSum {
  double loss = 0.0;      // sum of -log p(target) over counted tokens
  int64_t tokens = 0;     // targets != -100
};

constexpr int32_t kIgnoreIndex = -100;

// An NF4-quantized weight [rows, cols] on a backend's device, in bitsandbytes' layout
// (peft/nf4.h): this rank's elements row-major, two 4-bit code indices per byte (the even
// element in the high nibble), one absmax per 64 of them, or with double quantization
// their 8-bit codes plus the nested absmaxes of the WHOLE tensor. A tensor-parallel rank
// may hold a block of a larger tensor, rows [row0, row0 + rows) × columns [col0, col0 +
// cols) of [*, full_cols]: element (r, j) is element (row0 + r)·full_cols + col0 + j of the
// whole, whose block (/64) and nested group (/64/256) pick the statistics, so a shard
// dequantizes exactly as the whole tensor does.
struct Nf4Weight {
  Tensor packed;         // u8 [rows·cols / 2]
  Tensor absmax;         // f32 [rows·cols / 64] (no double quantization)
  Tensor qabsmax;        // u8 [rows·cols / 64] (double quantization)
  Tensor nested_absmax;  // f32 [groups of the whole tensor] (double quantization)
  Tensor code;           // f32 [16] NF4 values
  Tensor nested_map;     // f32 [256] dynamic map (double quantization)
  float offset = 0.0f;   // (double quantization)
  int64_t rows = 0, cols = 0, full_cols = 0, row0 = 0, col0 = 0;
  bool double_quant() const { return qabsmax.defined(); }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  // What the hardware is, for reports ("cpu (2 threads)", "NVIDIA H100 80GB HBM3").
  virtual std::string device_name() const { return name(); }
  virtual MemoryResource& memory() = 0;
  virtual void synchronize() = 0;
  // A clock that times ops as this backend executes them (`temper bench --profile`). The
  // default reads the host clock, right for backends whose ops complete before returning.
  virtual std::unique_ptr<OpClock> make_op_clock() { return std::make_unique<HostOpClock>(); }

  // Deterministic mode: every reduction in a fixed order, no atomics, so two runs give
  // identical bits. The CPU backend is always deterministic; CUDA kernels that use atomics
  // for speed must switch to an ordered path when this is on.
  void set_deterministic(bool on) { deterministic_ = on; }
  bool deterministic() const { return deterministic_; }

  // ---- data movement ------------------------------------------------------------
  virtual void copy_from_host(Tensor dst, const void* src) = 0;  // dst.nbytes() bytes
  virtual void copy_to_host(void* dst, Tensor src) = 0;
  virtual void copy(Tensor dst, Tensor src) = 0;  // same dtype; or a cast f32 <-> bf16/f16
  virtual void zero(Tensor t) = 0;
  virtual void fill(Tensor t, float value) = 0;
  // t[i] = std · N(0,1) drawn from stream element (offset + i), so a shard of a logical
  // tensor draws exactly what the whole would, on any backend.
  virtual void fill_normal(Tensor t, const RngStream& stream, uint64_t offset, float std) = 0;

  // ---- elementwise ----------------------------------------------------------------
  virtual void add(Tensor out, Tensor a, Tensor b) = 0;  // out = a + b (out may alias a)
  virtual void scale(Tensor x, float s) = 0;             // x *= s
  virtual double sum_squares(Tensor x) = 0;              // Σ x², accumulated in f64/f32

  // ---- embedding ------------------------------------------------------------------
  // out[T,C] = table[ids[t], :]; a negative id gives a zero row (vocab-parallel
  // embedding: ids of other ranks' slices are passed as -1); ids >= V are errors.
  virtual void embedding_forward(Tensor out, Tensor ids, Tensor table) = 0;
  // dtable[V,C] += scatter of dout[T,C] by ids[T] (negative ids skipped)
  virtual void embedding_backward(Tensor dtable, Tensor dout, Tensor ids) = 0;

  // ---- RMSNorm: out = x / sqrt(mean(x²) + eps) * weight -----------------------------
  // out[T,C], rstd[T] (f32, saved for backward), x[T,C], weight[C]
  virtual void rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) = 0;
  // dx[T,C] +=, dweight[C] += (optional), from dout[T,C]
  virtual void rmsnorm_backward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight,
                                Tensor rstd) = 0;

  // ---- linear: out[T,O] = x[T,I] · weight[O,I]ᵀ + bias[O] ----------------------------
  virtual void linear_forward(Tensor out, Tensor x, Tensor weight, Tensor bias) = 0;
  // dx[T,I] += dout·W (optional), dweight[O,I] += doutᵀ·x (optional), dbias[O] += Σ_t dout
  virtual void linear_backward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                               Tensor weight) = 0;

  // out[T,O] += x[T,I] · weight[O,I]ᵀ (no bias): a low-rank update added to a projection.
  virtual void matmul_add(Tensor out, Tensor x, Tensor weight) = 0;

  // ---- PEFT ops (src/peft) ------------------------------------------------------------
  // Inverted dropout with a counter-based mask: element (t, j) of x[T,C] is kept when
  // stream.uniform(offset + t·full_cols + col0 + j) > p and then scaled by 1/(1-p), else
  // zero; out[T,C] = that (accumulate: +=). x may be a column block [col0, col0 + C) of a
  // [T, full_cols] tensor split over tensor-parallel ranks: the mask never depends on the
  // split. Forward: out = dropout(x); backward: dx += dropout(dout), same mask.
  virtual void dropout(Tensor out, Tensor x, float p, const RngStream& stream, uint64_t offset,
                       int64_t full_cols, int64_t col0, bool accumulate) = 0;
  // sumsq[O] f32 = Σ_i w[o,i]² (overwritten), accumulated in f32 (f64 on the CPU).
  virtual void row_sum_squares(Tensor sumsq, Tensor w) = 0;
  // DoRA's rescale (norm detached): c[o] = magnitude[o] / sqrt(sumsq[o]), or with sumsq
  // undefined c = magnitude (IA3's scaling vector);
  //   forward:  out[T,O] = c ⊙ z[T,O] + bias[O] (bias optional)
  //   backward: dz[T,O] += c ⊙ dout;  dmagnitude[O] += Σ_t dout ⊙ z / sqrt(sumsq)
  //             (each optional); sumsq f32, the rest the activation dtype.
  virtual void dora_scale_forward(Tensor out, Tensor z, Tensor magnitude, Tensor sumsq,
                                  Tensor bias) = 0;
  virtual void dora_scale_backward(Tensor dz, Tensor dmagnitude, Tensor dout, Tensor z,
                                   Tensor magnitude, Tensor sumsq) = 0;

  // Elementwise activations of the small PEFT networks (prefix and prompt encoders,
  // bottleneck adapters): out = f(x); backward dx += f'(x) ⊙ dout (x the forward input).
  enum class Activation { Relu, Tanh, Silu };
  virtual void activation_forward(Tensor out, Tensor x, Activation f) = 0;
  virtual void activation_backward(Tensor dx, Tensor dout, Tensor x, Activation f) = 0;

  // out[rows, cols] = the dequantized weight (code[index] · absmax of its block), in out's
  // dtype. cols and col0 must be multiples of 64 (blocks never straddle rows or shards).
  virtual void nf4_dequantize(Tensor out, const Nf4Weight& w) = 0;

  // ---- RoPE, rotate-half convention (Hugging Face Llama) -------------------------------
  // x[T,H,D] rotated in place by the angle table at each token's position:
  //   x1 = x[..., :D/2], x2 = x[..., D/2:];  out = (x1·cos − x2·sin, x2·cos + x1·sin)
  // positions[T] i32; cos, sin [P, D/2] f32 (P = max positions), built by the model.
  virtual void rope_forward(Tensor x, Tensor positions, Tensor cos, Tensor sin) = 0;
  // dx[T,H,D] in place: the inverse rotation (the transpose of the forward).
  virtual void rope_backward(Tensor dx, Tensor positions, Tensor cos, Tensor sin) = 0;

  // ---- causal attention over packed documents, GQA ------------------------------------
  // q[T,Hq,D], k[T,Hkv,D], v[T,Hkv,D]; cu_seqlens[N+1] i32 gives document starts
  // (0 = cu[0] < cu[1] < ... < cu[N] = T). Token t attends to tokens s of its own
  // document with s <= t (and t - s < window when window > 0, Mistral's sliding window).
  // Query head h uses kv head h / (Hq/Hkv). Scale 1/sqrt(D).
  // out[T,Hq,D]; lse[Hq,T] f32 (log-sum-exp of the scaled scores, saved for backward).
  // Learned prefix (prefix tuning / P-tuning v2): prefix_k, prefix_v [P,Hkv,D] in q's
  // dtype, both defined or both undefined (Tensor{} = no prefix, P = 0). Every query token
  // of every document additionally attends to all P prefix keys, as if they stood before
  // its document: no causal mask and no sliding-window limit applies to them, and the op
  // applies no RoPE to them. Query head h uses prefix kv head h / (Hq/Hkv); lse includes
  // the prefix terms.
  virtual void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v,
                                 Tensor cu_seqlens, int window, Tensor prefix_k,
                                 Tensor prefix_v) = 0;
  // dq[T,Hq,D] +=, dk[T,Hkv,D] +=, dv[T,Hkv,D] += from dout[T,Hq,D]; with a prefix, also
  // dprefix_k, dprefix_v [P,Hkv,D] += the sum over all tokens of all documents. Either may
  // be undefined (a frozen prefix) and is then skipped.
  virtual void attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q, Tensor k,
                                  Tensor v, Tensor out, Tensor lse, Tensor cu_seqlens,
                                  int window, Tensor prefix_k, Tensor prefix_v,
                                  Tensor dprefix_k, Tensor dprefix_v) = 0;

  // ---- SwiGLU: out[T,F] = silu(gate) * up ----------------------------------------------
  virtual void swiglu_forward(Tensor out, Tensor gate, Tensor up) = 0;
  // dgate[T,F] +=, dup[T,F] += from dout[T,F]
  virtual void swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) = 0;

  // ---- LM head fused with cross-entropy --------------------------------------------
  // logits = x[T,C] · weight[V,C]ᵀ computed `chunk` tokens at a time, so [T,V] never
  // exists. Returns the summed loss over targets[T] != -100. When dx / dweight are
  // defined, also accumulates the gradient of (grad_scale · summed loss):
  //   dx[T,C] += dlogits · W,  dweight[V,C] += dlogitsᵀ · x,  dlogits = (p − onehot)·grad_scale
  virtual LossSum lm_head_cross_entropy(Tensor dx, Tensor dweight, Tensor x, Tensor weight,
                                        Tensor targets, float grad_scale, int64_t chunk) = 0;

  // ---- vocab-parallel cross-entropy (tensor parallelism) ----------------------------
  // This rank holds logits[n, Vl] for the vocabulary slice [vocab_start, vocab_start + Vl).
  // Per row: stats[n, 3] f32 = (local max m, Σ exp(logit − m) over the slice, the target's
  // logit when the target falls in the slice, else 0). Ignored rows (-100) give (0, 0, 0).
  virtual void cross_entropy_partials(Tensor stats, Tensor logits, Tensor targets,
                                      int64_t vocab_start) = 0;
  // stats_all[R, n, 3]: every rank's partials in rank order (all-gathered). Writes the
  // per-row loss[n] f32 = logsumexp over all slices − target logit (0 for ignored rows);
  // when want_grad, overwrites logits with dlogits = (softmax − onehot)·grad_scale
  // (zero rows for ignored targets).
  virtual void cross_entropy_combine(Tensor loss, Tensor logits, Tensor stats_all, Tensor targets,
                                     int64_t vocab_start, float grad_scale, bool want_grad) = 0;

  // ---- optimizer ------------------------------------------------------------------
  // One AdamW step on a flat tensor. master[N] f32 is updated; when `param` is defined
  // (a lower-precision copy the model computes with) it receives the new values too.
  // grad[N] is read (times hp.grad_scale); m[N], v[N] f32 moments.
  virtual void adamw_update(Tensor master, Tensor param, Tensor grad, Tensor m, Tensor v,
                            const AdamWStep& hp) = 0;

 protected:
  bool deterministic_ = false;
};

// "cpu" or "cuda" (cuda:N picks the device). Throws temper::Error for an unknown name or a
// backend this build does not include.
std::unique_ptr<Backend> make_backend(const std::string& name);
bool cuda_backend_available();
// CUDA devices this process can see (CUDA_VISIBLE_DEVICES applies); 0 without the backend.
int visible_cuda_devices();

}  // namespace temper
