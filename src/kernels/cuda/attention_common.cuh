// Pieces the attention forward (attention.cu) and backward (attention_backward.cu) share:
// host-side argument checks and launch set-up (defined in attention.cu), and the inline
// device helpers that locate documents in cu_seqlens and stage rows into shared memory.
#pragma once
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"

namespace temper::cuda {

// Checks the inputs both directions share and throws a temper::Error naming the problem:
// q[T,Hq,D] f32/bf16/f16 with 1 <= D <= 256, k and v [T,Hkv,D] of q's dtype, Hq a multiple
// of Hkv, cu_seqlens i32[N+1] with N >= 1, window >= 0. Device placement is checked by the
// caller (CudaBackend::expect_here). The contents of cu_seqlens are not read on the host
// (that would need a sync): the kernels clamp every document bound to [0, T], so a
// malformed cu_seqlens gives wrong values but never an access outside the tensors.
void check_attention_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& cu_seqlens, int window);
// Checks prefix_k / prefix_v [P, Hkv, D] (both or neither); returns P (0 without prefix).
int64_t check_attention_prefix(const char* op, const Tensor& q, const Tensor& k,
                               const Tensor& prefix_k, const Tensor& prefix_v);
// Opts `kernel` into `bytes` of dynamic shared memory, with a clear error past the limit.
void prepare_attention_launch(const void* kernel, size_t bytes, const char* name);

constexpr int kAttnThreads = 256;  // 16 × 16
constexpr float kLog2e = 1.4426950408889634f;

// Start of the document holding token t: the largest cu[d] <= t over d in [0, N],
// clamped to [0, t] (see check_attention_inputs). Empty documents are harmless.
__device__ __forceinline__ int doc_start(const int32_t* __restrict__ cu, int n_docs, int t) {
  int lo = 0, hi = n_docs;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return min(max(cu[lo], 0), t);
}

// The first key query t sees.
__device__ __forceinline__ int first_key(const int32_t* __restrict__ cu, int n_docs, int t,
                                         int window) {
  const int b = doc_start(cu, n_docs, t);
  return window > 0 ? max(b, t - window + 1) : b;
}

// End (exclusive) of the document holding token s: the smallest cu[d] > s, in [s + 1, T].
__device__ __forceinline__ int doc_end(const int32_t* __restrict__ cu, int n_docs, int s,
                                       int n_tok) {
  int lo = 0, hi = n_docs + 1;  // the smallest d in [0, N] with cu[d] > s; N + 1 if none
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (cu[mid] > s) hi = mid;
    else lo = mid + 1;
  }
  const int e = lo <= n_docs ? cu[lo] : n_tok;
  return min(max(e, s + 1), n_tok);
}

// dst[r][0, D) (row stride DS) = mul · src[row0 + r, head, :] for r < rows; rows at or past
// row_end are zero.
template <typename T>
__device__ __forceinline__ void stage_rows(float* __restrict__ dst, const T* __restrict__ src,
                                           int row0, int row_end, int rows, int head,
                                           int n_heads, int D, int DS, float mul = 1.0f) {
  for (int i = threadIdx.x; i < rows * D; i += kAttnThreads) {
    const int r = i / D, d = i - r * D, t = row0 + r;
    dst[r * DS + d] =
        t < row_end ? to_f32(src[(int64_t(t) * n_heads + head) * D + d]) * mul : 0.0f;
  }
}

}  // namespace temper::cuda
