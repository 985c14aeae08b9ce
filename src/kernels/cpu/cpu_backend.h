// The CPU backend: fp32 reference kernels, OpenBLAS sgemm for the GEMMs, OpenMP threads.
// It is the ruler every CUDA kernel is checked against, so clarity beats speed here.
#pragma once
#include "kernels/backend.h"

namespace temper {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  Device device() const override { return {DeviceKind::CPU, 0}; }
  std::string device_name() const override;  // "cpu (N OpenMP threads)"
  MemoryResource& memory() override { return memory_; }
  void synchronize() override {}

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

  void nf4_dequantize(Tensor out, const Nf4Weight& w) override;
  void activation_forward(Tensor out, Tensor x, Activation f) override;
  void activation_backward(Tensor dx, Tensor dout, Tensor x, Activation f) override;

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
  HostMemory memory_;
};

}  // namespace temper
