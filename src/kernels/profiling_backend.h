// A Backend that forwards every op to another one and, while enabled, times each call with
// that backend's OpClock (CUDA events on CUDA, the host clock on the CPU): the per-op table
// of `temper bench --profile`. Ops are keyed by name; the GEMM ops (linear_forward,
// linear_backward, matmul_add, lm_head_cross_entropy) also by their shape, with the
// FLOPs they do, so the table says which projection takes the time and at what rate.
//
// Only outer calls are timed: an op the inner backend runs inside another (a GEMM inside
// lm_head_cross_entropy) counts toward the outer op. Disabled, it only forwards.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/backend.h"

namespace temper {

// One row of the profile: an op (and for GEMMs a shape) summed over the profiled steps.
struct OpProfileRow {
  std::string op;
  std::string shape;  // GEMMs: "tokens×in → out" of the product; else ""
  int64_t calls = 0;
  double seconds = 0;
  double flops = 0;  // GEMMs: 2·tokens·in·out per product; else 0
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner);

  // Off: calls are forwarded untimed. On: each call is bracketed by the clock.
  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  // Waits for the device, then adds the op times since the last call to the totals.
  void end_step();
  int64_t steps() const { return steps_; }
  std::string clock() const { return clock_->what(); }  // "CUDA events", "host clock"
  // Totals over the steps ended so far, the most time first.
  std::vector<OpProfileRow> rows() const;

  std::string name() const override { return inner_.name(); }
  Device device() const override { return inner_.device(); }
  std::string device_name() const override { return inner_.device_name(); }
  MemoryResource& memory() override { return inner_.memory(); }
  void synchronize() override { inner_.synchronize(); }
  std::unique_ptr<OpClock> make_op_clock() override { return inner_.make_op_clock(); }

  void copy_from_host(Tensor dst, const void* src) override;
  void copy_to_host(void* dst, Tensor src) override;
  void copy(Tensor dst, Tensor src) override;
  void zero(Tensor t) override;
  void fill(Tensor t, float value) override;
  void fill_normal(Tensor t, const RngStream& stream, uint64_t offset, float std) override;
  void add(Tensor out, Tensor a, Tensor b) override;
  void scale(Tensor x, float s) override;
  double sum_squares(Tensor x) override;
  void embedding_forward(Tensor out, Tensor ids, Tensor table) override;
  void embedding_backward(Tensor dtable, Tensor dout, Tensor ids) override;
  void rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) override;
  void rmsnorm_backward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight,
                        Tensor rstd) override;
  void linear_forward(Tensor out, Tensor x, Tensor weight, Tensor bias) override;
  void linear_backward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                       Tensor weight) override;
  void matmul_add(Tensor out, Tensor x, Tensor weight) override;
  void dropout(Tensor out, Tensor x, float p, const RngStream& stream, uint64_t offset,
               int64_t full_cols, int64_t col0, bool accumulate) override;
  void row_sum_squares(Tensor sumsq, Tensor w) override;
  void dora_scale_forward(Tensor out, Tensor z, Tensor magnitude, Tensor sumsq, Tensor bias) override;
  void dora_scale_backward(Tensor dz, Tensor dmagnitude, Tensor dout, Tensor z, Tensor magnitude,
                           Tensor sumsq) override;
  void activation_forward(Tensor out, Tensor x, Activation f) override;
  void activation_backward(Tensor dx, Tensor dout, Tensor x, Activation f) override;
  void nf4_dequantize(Tensor out, const Nf4Weight& w) override;
  void rope_forward(Tensor x, Tensor positions, Tensor cos, Tensor sin) override;
  void rope_backward(Tensor dx, Tensor positions, Tensor cos, Tensor sin) override;
  void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor cu_seqlens,
                         int window, Tensor prefix_k, Tensor prefix_v) override;
  void attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q, Tensor k,
                          Tensor v, Tensor out, Tensor lse, Tensor cu_seqlens, int window,
                          Tensor prefix_k, Tensor prefix_v, Tensor dprefix_k,
                          Tensor dprefix_v) override;
  void swiglu_forward(Tensor out, Tensor gate, Tensor up) override;
  void swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up) override;
  LossSum lm_head_cross_entropy(Tensor dx, Tensor dweight, Tensor x, Tensor weight, Tensor targets,
                                float grad_scale, int64_t chunk) override;
  void cross_entropy_partials(Tensor stats, Tensor logits, Tensor targets,
                              int64_t vocab_start) override;
  void cross_entropy_combine(Tensor loss, Tensor logits, Tensor stats_all, Tensor targets,
                             int64_t vocab_start, float grad_scale, bool want_grad) override;
  void adamw_update(Tensor master, Tensor param, Tensor grad, Tensor m, Tensor v,
                    const AdamWStep& hp) override;

 private:
  // A GEMM op's product: x[tokens, in] · W[out, in]ᵀ, done `products` times (a backward
  // with dx and dweight does two). products == 0: not a GEMM.
  struct Gemm {
    int64_t tokens = 0, in = 0, out = 0;
    int products = 0;
  };
  class Scope;  // starts the clock on construction, stops it on destruction (when enabled)
  int key_index(const char* op, const Gemm& gemm);

  Backend& inner_;
  std::unique_ptr<OpClock> clock_;
  bool enabled_ = false;
  int64_t steps_ = 0;
  std::map<std::tuple<std::string, int64_t, int64_t, int64_t, int>, int> keys_;
  std::vector<OpProfileRow> totals_;  // by key index
  std::vector<int> pending_;          // key index of each interval of the current step
};

}  // namespace temper
