// The CUDA backend: bf16/f16/f32 kernels on one device, all work queued on one
// non-blocking compute stream. Plain C++ includes this header (kernels/backend.cpp), so
// it names CUDA handle types only opaquely; .cu files include cuda_check.h for the rest.
//
// Ordering: every op is enqueued on stream() and returns without waiting, except
// copy_to_host and sum_squares, which wait for their own result. copy_from_host from
// pinned host memory is truly asynchronous: keep the source unchanged until synchronize().
// Threads: a backend is driven from one host thread; its device is made current when it
// is constructed and when memory is allocated.
#pragma once
#include "kernels/cuda/fmt_nvcc.h"  // first: before any fmt header (no-op outside nvcc)

#include <cstddef>
#include <memory>
#include <string>

#include "kernels/backend.h"

struct CUstream_st;      // = cudaStream_t
struct cublasLtContext;  // = cublasLtHandle_t

namespace temper {

// Number of visible CUDA devices; 0 (never an error) without a GPU or a driver.
int cuda_device_count();
// The backend for device `index`; throws temper::Error when that device is not visible.
std::unique_ptr<Backend> make_cuda_backend(int index);

// cudaMalloc / cudaFree on one device, with the base class's byte accounting.
class CudaMemory final : public MemoryResource {
 public:
  explicit CudaMemory(int index) : index_(index) {}
  Device device() const override { return {DeviceKind::CUDA, index_}; }

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_deallocate(void* p) override;  // logs (never throws: arenas free in destructors)

 private:
  int index_;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int index);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  Device device() const override { return {DeviceKind::CUDA, index_}; }
  MemoryResource& memory() override { return memory_; }
  void synchronize() override;
  // CUDA events on stream() (cuda_op_clock.cpp): device time per op, recorded without waiting.
  std::unique_ptr<OpClock> make_op_clock() override;

  // For kernels of this backend (and the next issue's GEMMs).
  CUstream_st* stream() const { return stream_; }
  cublasLtContext* cublaslt() const { return cublaslt_; }
  // cuBLASLt workspace (kGemmWorkspaceBytes, allocated once) for this stream's GEMMs (gemm.h).
  void* gemm_workspace() const { return gemm_workspace_; }
  static constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;

  void copy_from_host(Tensor dst, const void* src) override;
  void copy_to_host(void* dst, Tensor src) override;  // blocks until the bytes are on the host
  void copy(Tensor dst, Tensor src) override;         // same dtype, or any f32/bf16/f16 cast
  void zero(Tensor t) override;
  void fill(Tensor t, float value) override;  // f32/bf16/f16, and i32 (value truncated)
  void fill_normal(Tensor t, const RngStream& stream, uint64_t offset, float std) override;

  void add(Tensor out, Tensor a, Tensor b) override;
  void scale(Tensor x, float s) override;
  double sum_squares(Tensor x) override;  // deterministic; waits for the result

  // ---- transformer ops: one file per op family (embedding.cu, rmsnorm.cu, linear.cu, ...) ----
  void embedding_forward(Tensor out, Tensor ids, Tensor table) override;
  void embedding_backward(Tensor dtable, Tensor dout, Tensor ids) override;
  void rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) override;
  void rmsnorm_backward(Tensor dx, Tensor dweight, Tensor dout, Tensor x, Tensor weight,
                        Tensor rstd) override;
  void linear_forward(Tensor out, Tensor x, Tensor weight, Tensor bias) override;
  void linear_backward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                       Tensor weight) override;
  void matmul_add(Tensor out, Tensor x, Tensor weight) override;
  // ---- PEFT ops (peft.cu) ----
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

  // master/m/v f32; grad f32/bf16/f16; param (optional) f32/bf16/f16.
  void adamw_update(Tensor master, Tensor param, Tensor grad, Tensor m, Tensor v,
                    const AdamWStep& hp) override;

  // Blocks in sum_squares' first pass (fixed, so the summation order depends only on n).
  static constexpr int kMaxReduceBlocks = 4096;

 private:
  void release() noexcept;  // frees everything below that exists (constructor failure, dtor)
  // Throws unless t is defined and lives on this backend's device.
  void expect_here(const Tensor& t, const char* op, const char* what) const;

  int index_;
  CudaMemory memory_;
  CUstream_st* stream_ = nullptr;
  cublasLtContext* cublaslt_ = nullptr;
  void* gemm_workspace_ = nullptr;     // device [kGemmWorkspaceBytes]
  double* reduce_partials_ = nullptr;  // device [kMaxReduceBlocks + 1] f64; last = total
  double* reduce_host_ = nullptr;      // pinned host [1] f64
};

}  // namespace temper
