// CUDA backend: causal attention over packed documents, forward (FlashAttention-style).
// The backward is in attention_backward.cu; both compute what kernels/cpu/ops_attention.cpp
// computes: token t of document [b, e) attends to keys s in [lo(t), t] with
//   lo(t) = max(b, t − window + 1) when window > 0, else b,
// query head h reads kv head h / (Hq/Hkv), scores are scaled by 1/sqrt(D), and
// lse[h, t] = log Σ_s exp(score) is saved for the backward. With a learned prefix
// (prefix_k, prefix_v [P, Hkv, D]) every query also sees the P prefix keys, unmasked.
//
// Design (plain CUDA, fp32 FMA; tensor-core mma (wgmma / mma.sync on bf16 tiles) and
// cp.async / TMA pipelining can come later without changing the block mapping):
// - One block = 64 query rows × one query head; grid (ceil(T/64), Hq), heaviest (last)
//   query tiles scheduled first. 256 threads as 16 × 16: thread (ty, tx) owns query rows
//   ty + 16i (i < 4) and, per key tile, key columns tx + 16j (j < 4) of the 64 × 64 score
//   tile, and output columns tx + 16c (c < D/16) of its four rows.
// - Block → keys: tiles are over T, not over documents, so a query tile may straddle a
//   document boundary. lo(t) is nondecreasing in t, so keys [lo(q0), min(q0 + 64, T)) cover
//   every key any row of the tile can see; each row then masks keys outside its own
//   [lo(t), t] (which also removes the other document's keys and the causal future).
//   Documents and lo(t) come from a binary search of cu_seqlens on the device: no host
//   sync, no [T] scratch, any number of documents, any T. A straddling tile does at most
//   the work of a tile wholly inside the longer document.
// - Prefix: each query tile first runs the P prefix keys as ceil(P/64) extra key tiles
//   (read from prefix_k/prefix_v, masked only past P), then its own key tiles.
// - Online softmax in fp32 (running max m and sum l per row, in log2 units: q is
//   pre-multiplied by log2(e)/sqrt(D) as it is staged), never a T × T buffer: S and P live
//   one 64 × 64 tile at a time (S in registers, P in shared memory for the P·V product).
// - Shared memory, fp32: Q [64][DS], one K-then-V tile [64][DS], P [64][65], with
//   DS = D | 1 (an odd row stride: column walks by 16 lanes hit 16 distinct banks).
//   D = 64: 49 KiB, D = 128: 81 KiB, D = 256: 145 KiB (opted in beyond 48 KiB).
// - Head dims 64 and 128 are compiled exactly (fast path); any other D in [1, 256] runs the
//   generic instance for the next of 64/128/256 with runtime bounds.
#include <climits>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/attention_common.cuh"

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::to_f32;
using namespace cuda;

// ---- shared with attention_backward.cu (declared there) --------------------------------
namespace cuda {

// See attention_common.cuh.
void check_attention_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& cu_seqlens, int window) {
  if (q.ndim() != 3) fail("CUDA backend: {}: q must be [T, Hq, D], got {}", op, q.str());
  if (k.ndim() != 3) fail("CUDA backend: {}: k must be [T, Hkv, D], got {}", op, k.str());
  if (q.dtype() != DType::F32 && q.dtype() != DType::BF16 && q.dtype() != DType::F16)
    fail("CUDA backend: {}: q is {}, expected f32, bf16 or f16", op, q.str());
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k.size(1);
  if (D < 1 || D > 256)
    fail("CUDA backend: {}: head dim {} is not supported (1..256)", op, D);
  if (k.dtype() != q.dtype() || k.size(0) != T || k.size(2) != D)
    fail("CUDA backend: {}: k is {}, expected {}[{}, Hkv, {}] like q {}", op, k.str(),
         dtype_name(q.dtype()), T, D, q.str());
  if (!v.defined() || v.dtype() != k.dtype() || !(v.shape() == k.shape()))
    fail("CUDA backend: {}: v is {}, expected the dtype and shape of k {}", op, v.str(), k.str());
  if (Hkv < 1 || Hq % Hkv != 0)
    fail("CUDA backend: {}: {} query heads are not a multiple of {} kv heads", op, Hq, Hkv);
  if (Hq > 65535) fail("CUDA backend: {}: {} query heads (at most 65535)", op, Hq);
  if (T > INT32_MAX) fail("CUDA backend: {}: T = {} does not fit i32 cu_seqlens", op, T);
  if (window < 0) fail("CUDA backend: {}: window must be >= 0 (0 = none), got {}", op, window);
  if (cu_seqlens.dtype() != DType::I32 || cu_seqlens.ndim() != 1 || cu_seqlens.size(0) < 2)
    fail("CUDA backend: {}: cu_seqlens must be i32[N+1] with N >= 1, got {}", op,
         cu_seqlens.str());
}

// Checks the optional prefix: prefix_k and prefix_v both undefined (returns 0) or both
// [P, Hkv, D] in q's dtype (returns P). Device placement is checked by the caller.
int64_t check_attention_prefix(const char* op, const Tensor& q, const Tensor& k,
                               const Tensor& prefix_k, const Tensor& prefix_v) {
  if (prefix_k.defined() != prefix_v.defined())
    fail("CUDA backend: {}: prefix_k and prefix_v must both be given or both be undefined", op);
  if (!prefix_k.defined()) return 0;
  const int64_t P = prefix_k.ndim() == 3 ? prefix_k.size(0) : 0;
  const Shape want{P, k.size(1), q.size(2)};
  if (prefix_k.ndim() != 3 || prefix_k.dtype() != q.dtype() || !(prefix_k.shape() == want))
    fail("CUDA backend: {}: prefix_k is {}, expected {}[P, {}, {}]", op, prefix_k.str(),
         dtype_name(q.dtype()), k.size(1), q.size(2));
  if (prefix_v.dtype() != q.dtype() || !(prefix_v.shape() == want))
    fail("CUDA backend: {}: prefix_v is {}, expected the dtype and shape of prefix_k {}", op,
         prefix_v.str(), prefix_k.str());
  if (P > INT32_MAX / 2) fail("CUDA backend: {}: {} prefix keys is too many", op, P);
  return P;
}

// Lets `kernel` use `bytes` of dynamic shared memory on the current device, or throws when
// the device cannot give that much to one block.
void prepare_attention_launch(const void* kernel, size_t bytes, const char* name) {
  int dev = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (bytes > size_t(optin))
    fail("CUDA backend: {} needs {} bytes of shared memory per block, device {} allows {}",
         name, bytes, dev, optin);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  int(bytes)));
}

}  // namespace cuda

namespace {

constexpr int kTile = 64;          // query rows per block, keys per tile
constexpr float kLn2 = 0.6931471805599453f;

// Max / sum over the 16 lanes sharing ty (lanes 0-15 or 16-31 of a warp); every lane gets
// the same bits (xor butterflies add commuted pairs).
__device__ __forceinline__ float max16(float x) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}
__device__ __forceinline__ float sum16(float x) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// out[T,Hq,D], lse[Hq,T] for one 64-row query tile of one head (see the file comment).
template <typename T, int DMAX, bool EXACT>
__global__ void __launch_bounds__(kAttnThreads)
    attention_forward_kernel(T* __restrict__ out, float* __restrict__ lse,
                             const T* __restrict__ q, const T* __restrict__ k,
                             const T* __restrict__ v, const T* __restrict__ pk,
                             const T* __restrict__ pv, const int32_t* __restrict__ cu,
                             int n_docs, int n_tok, int n_pre, int n_heads, int group, int n_kv,
                             int d_rt, int window, float qk_log2) {
  constexpr int BR = kTile, BC = kTile, RI = BR / 16, CJ = BC / 16, CC = DMAX / 16;
  constexpr int PS = BC + 1;
  const int D = EXACT ? DMAX : d_rt;
  const int DS = D | 1;
  extern __shared__ float smem[];
  float* qs = smem;            // [BR][DS] q · log2(e)/sqrt(D)
  float* kvs = qs + BR * DS;   // [BC][DS] the K tile, then the V tile
  float* ps = kvs + BC * DS;   // [BR][PS] probabilities of the tile (unnormalised)
  __shared__ int row_lo[BR];   // first visible key per row; INT_MAX past T

  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int h = blockIdx.y, kh = h / group;
  const int q0 = int(gridDim.x - 1 - blockIdx.x) * BR;
  const int q_end = min(q0 + BR, n_tok);

  if (tid < BR) {
    const int t = q0 + tid;
    row_lo[tid] = t < n_tok ? first_key(cu, n_docs, t, window) : INT_MAX;
  }
  stage_rows(qs, q, q0, n_tok, BR, h, n_heads, D, DS, qk_log2);
  __syncthreads();

  int t_r[RI], lo_r[RI];
  float m_r[RI], l_r[RI], acc[RI][CC];
#pragma unroll
  for (int i = 0; i < RI; ++i) {
    t_r[i] = q0 + ty + 16 * i;
    lo_r[i] = row_lo[ty + 16 * i];
    m_r[i] = -INFINITY;
    l_r[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < CC; ++c) acc[i][c] = 0.0f;
  }
  const int k_begin = row_lo[0];  // lo is nondecreasing in t; row 0 is always < T
  // Key tiles: first the prefix's (keys [0, P) of pk/pv), then [k_begin, q_end) of k/v.
  const int n_pre_tiles = (n_pre + BC - 1) / BC;
  const int n_tiles = n_pre_tiles + (q_end - k_begin + BC - 1) / BC;

  for (int it = 0; it < n_tiles; ++it) {
    const bool pre = it < n_pre_tiles;
    const int k0 = pre ? it * BC : k_begin + (it - n_pre_tiles) * BC;
    const int k_stop = pre ? n_pre : q_end;  // rows past it are staged as zeros
    __syncthreads();  // the previous tile's P·V is done with kvs and ps
    stage_rows(kvs, pre ? pk : k, k0, k_stop, BC, kh, n_kv, D, DS, 1.0f);
    __syncthreads();

    // S = Q Kᵀ for rows ty + 16i, keys tx + 16j (log2 units).
    float s[RI][CJ];
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < CJ; ++j) s[i][j] = 0.0f;
#pragma unroll 4
    for (int d = 0; d < D; ++d) {
      float a[RI], b[CJ];
#pragma unroll
      for (int i = 0; i < RI; ++i) a[i] = qs[(ty + 16 * i) * DS + d];
#pragma unroll
      for (int j = 0; j < CJ; ++j) b[j] = kvs[(tx + 16 * j) * DS + d];
#pragma unroll
      for (int i = 0; i < RI; ++i)
#pragma unroll
        for (int j = 0; j < CJ; ++j) s[i][j] = fmaf(a[i], b[j], s[i][j]);
    }

    // Mask, then the online-softmax update of each row.
#pragma unroll
    for (int i = 0; i < RI; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        const int key = k0 + tx + 16 * j;
        const bool seen = pre ? key < n_pre : (key >= lo_r[i] && key <= t_r[i]);
        if (!seen) s[i][j] = -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      const float m_new = fmaxf(m_r[i], max16(mx));
      // A row with nothing visible yet keeps m = −inf; subtract 0 so exp2 gives 0, not NaN.
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(m_r[i] - m_use);
      float rs = 0.0f;
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        const float p = exp2f(s[i][j] - m_use);
        ps[(ty + 16 * i) * PS + tx + 16 * j] = p;
        rs += p;
      }
      l_r[i] = l_r[i] * alpha + sum16(rs);
      m_r[i] = m_new;
#pragma unroll
      for (int c = 0; c < CC; ++c) acc[i][c] *= alpha;
    }
    __syncthreads();  // every S read of the K tile is done; P is complete
    stage_rows(kvs, pre ? pv : v, k0, k_stop, BC, kh, n_kv, D, DS, 1.0f);
    __syncthreads();

    // O += P V for rows ty + 16i, columns tx + 16c. Keys past k_stop have p = 0, v = 0.
#pragma unroll 4
    for (int j = 0; j < BC; ++j) {
      float p[RI];
#pragma unroll
      for (int i = 0; i < RI; ++i) p[i] = ps[(ty + 16 * i) * PS + j];
#pragma unroll
      for (int c = 0; c < CC; ++c) {
        const int col = tx + 16 * c;
        if (EXACT || col < D) {
          const float vv = kvs[j * DS + col];
#pragma unroll
          for (int i = 0; i < RI; ++i) acc[i][c] = fmaf(p[i], vv, acc[i][c]);
        }
      }
    }
  }

  // Every row < T saw at least its own key, so l > 0.
#pragma unroll
  for (int i = 0; i < RI; ++i) {
    const int t = t_r[i];
    if (t >= n_tok) continue;
    const float inv = 1.0f / l_r[i];
    T* o = out + (int64_t(t) * n_heads + h) * D;
#pragma unroll
    for (int c = 0; c < CC; ++c) {
      const int col = tx + 16 * c;
      if (EXACT || col < D) o[col] = from_f32<T>(acc[i][c] * inv);
    }
    if (tx == 0) lse[int64_t(h) * n_tok + t] = m_r[i] * kLn2 + logf(l_r[i]);
  }
}

// Calls fn(DMAX, EXACT) as integral constants: exact instances for D = 64 and 128, the
// generic one for the next of 64/128/256 otherwise (kept in step with attention_backward.cu).
template <typename Fn>
void dispatch_head_dim(int64_t D, Fn&& fn) {
  using std::integral_constant;
  if (D == 64) fn(integral_constant<int, 64>{}, std::true_type{});
  else if (D == 128) fn(integral_constant<int, 128>{}, std::true_type{});
  else if (D < 64) fn(integral_constant<int, 64>{}, std::false_type{});
  else if (D < 128) fn(integral_constant<int, 128>{}, std::false_type{});
  else fn(integral_constant<int, 256>{}, std::false_type{});
}

}  // namespace

void CudaBackend::attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v,
                                    Tensor cu_seqlens, int window, Tensor prefix_k,
                                    Tensor prefix_v) {
  const char* op = "attention_forward";
  expect_here(out, op, "out");
  expect_here(lse, op, "lse");
  expect_here(q, op, "q");
  expect_here(k, op, "k");
  expect_here(v, op, "v");
  expect_here(cu_seqlens, op, "cu_seqlens");
  cuda::check_attention_inputs(op, q, k, v, cu_seqlens, window);
  if (prefix_k.defined()) expect_here(prefix_k, op, "prefix_k");
  if (prefix_v.defined()) expect_here(prefix_v, op, "prefix_v");
  const int64_t P = cuda::check_attention_prefix(op, q, k, prefix_k, prefix_v);
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k.size(1);
  expect_tensor(out, q.dtype(), Shape{T, Hq, D}, "CUDA backend: attention_forward: out");
  expect_tensor(lse, DType::F32, Shape{Hq, T}, "CUDA backend: attention_forward: lse");
  if (T == 0 || Hq == 0) return;

  const int n_docs = int(cu_seqlens.size(0) - 1);
  const float qk_log2 = kLog2e / std::sqrt(float(D));
  const dim3 grid(unsigned((T + kTile - 1) / kTile), unsigned(Hq));
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T_ = decltype(tag);
    dispatch_head_dim(D, [&](auto dmax, auto exact) {
      constexpr int DMAX = decltype(dmax)::value;
      constexpr bool EXACT = decltype(exact)::value;
      const int64_t DS = D | 1;
      const size_t smem = size_t(2 * kTile * DS + kTile * (kTile + 1)) * sizeof(float);
      auto kernel = attention_forward_kernel<T_, DMAX, EXACT>;
      cuda::prepare_attention_launch(reinterpret_cast<const void*>(kernel), smem,
                                     "attention_forward_kernel");
      kernel<<<grid, kAttnThreads, smem, stream_>>>(
          out.ptr<T_>(), lse.ptr<float>(), q.ptr<T_>(), k.ptr<T_>(), v.ptr<T_>(),
          P ? prefix_k.ptr<T_>() : nullptr, P ? prefix_v.ptr<T_>() : nullptr,
          cu_seqlens.ptr<int32_t>(), n_docs, int(T), int(P), int(Hq), int(Hq / Hkv), int(Hkv),
          int(D), window, qk_log2);
      cuda_check_last_launch("attention_forward_kernel");
    });
  });
}

}  // namespace temper
