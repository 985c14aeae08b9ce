// CUDA backend: causal attention over packed documents, backward (FlashAttention-2 style).
// The forward, the shared argument checks and the masking rule are in attention.cu; the
// math is that of kernels/cpu/ops_attention.cpp:
//   p_s = exp(score_s − lse_t),  dP_s = dout_t · v_s,  D_t = dout_t · out_t
//   dS_s = p_s (dP_s − D_t),  dq_t += scale Σ_s dS_s k_s,  dk_s += scale Σ_t dS_s q_t,
//   dv_s += Σ_t p_s dout_t
// Three kernels (four with a trainable prefix), all on the backend stream, none with
// atomics, each output element owned by one block and summed in a fixed order, so the
// result is bit-reproducible whether or not deterministic() is set:
// 1. attention_dot_kernel: D[h, t] = dout·out (f32 scratch [Hq, T], one warp per row).
// 2. attention_dkdv_kernel: one block = 64 keys × one kv head; grid (ceil(T/64), Hkv).
//    Keys are tiled over T, so a key tile may straddle documents: the queries that can see
//    any key of the tile are [k0, q_stop) with q_stop = min(end of the last key's document,
//    last key + window) (both bounds are nondecreasing in the key); each (query, key) pair
//    is masked by the query's own [lo(t), t], as in the forward. The block loops over the
//    group's query heads and, per head, over query tiles of BR rows in that range,
//    recomputing Sᵀ and dPᵀ (thread (ty, tx): keys ty + 16i, queries tx + 16j), P and dS,
//    and accumulates dK, dV for keys ty + 16i, columns tx + 16c in fp32 registers. They
//    are added into dk, dv once at the end.
// 3. attention_dq_kernel: one block = BR queries × one query head; grid (ceil(T/BR), Hq);
//    loops over key tiles [lo(q0), min(q0 + BR, T)) as the forward does, recomputes P and
//    dS and accumulates dQ = scale · dS K in registers; added into dq once. With a prefix
//    it first loops over the prefix's key tiles (unmasked below P), as the forward does.
// 4. Only with a prefix and a defined dprefix_k or dprefix_v: attention_dkdv_kernel with
//    PREFIX = true: one block = 64 prefix keys × one kv head; grid (ceil(P/64), Hkv). Keys
//    come from prefix_k/v and are visible to every query, so the block loops over the
//    group's heads and, per head, over all query tiles [0, T) of every document in order;
//    the sums go into dprefix_k, dprefix_v (each skipped when undefined).
// Shared memory (fp32, DS = D | 1): BR = 64 for D <= 128, 32 for D up to 256.
//   dkdv: K, V [64][DS], Q, dO [BR][DS], P, dS [64][BR+1]:
//         D = 64: 98 KiB, D = 128: 162 KiB, D = 256: 209 KiB (fits sm_90's 227 KiB).
//   dq:   Q, dO [BR][DS], K, V [64][DS], dS [BR][65]:
//         D = 64: 81 KiB, D = 128: 145 KiB, D = 256: 201 KiB.
// Plain fp32 FMA; tensor-core mma and cp.async pipelining are left for later.
#include <climits>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/attention_common.cuh"

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::to_f32;
using namespace cuda;

namespace {

constexpr int kKeyTile = 64;       // keys per dkdv block / per dq key tile

// Query rows per tile: 64, or 32 for D > 128 so the tiles fit in shared memory.
template <int DMAX>
constexpr int query_tile() { return DMAX > 128 ? 32 : 64; }

// dst[r, head, col] += scale · acc for one thread's rows (dq, dk, dv: one owner, no race).
template <typename T, int R, int CC, bool EXACT>
__device__ __forceinline__ void add_rows(T* __restrict__ dst, const float (&acc)[R][CC],
                                         int row0, int n_tok, int head, int n_heads, int D,
                                         float scale) {
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int t = row0 + ty + 16 * i;
    if (t >= n_tok) continue;
    T* row = dst + (int64_t(t) * n_heads + head) * D;
#pragma unroll
    for (int c = 0; c < CC; ++c) {
      const int col = tx + 16 * c;
      if (EXACT || col < D) row[col] = from_f32<T>(to_f32(row[col]) + acc[i][c] * scale);
    }
  }
}

// dvec[h, t] = Σ_d dout[t, h, d] · out[t, h, d]; one warp per (t, h), grid-stride.
template <typename T>
__global__ void attention_dot_kernel(float* __restrict__ dvec, const T* __restrict__ dout,
                                     const T* __restrict__ out, int n_tok, int n_heads, int D) {
  const int lane = threadIdx.x & 31, warps_per_block = blockDim.x / 32;
  const int64_t rows = int64_t(n_tok) * n_heads;
  const int64_t stride = int64_t(gridDim.x) * warps_per_block;
  for (int64_t row = int64_t(blockIdx.x) * warps_per_block + threadIdx.x / 32; row < rows;
       row += stride) {
    const T* a = dout + row * D;
    const T* b = out + row * D;
    float acc = 0.0f;
    for (int d = lane; d < D; d += 32) acc = fmaf(to_f32(a[d]), to_f32(b[d]), acc);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) {
      const int64_t t = row / n_heads, h = row - t * n_heads;
      dvec[h * n_tok + t] = acc;
    }
  }
}

// dk, dv += for one 64-key tile of one kv head (see the file comment). PREFIX: the keys
// are the n_pre prefix keys in k/v (prefix_k/v), dk/dv are dprefix_k/v (either may be
// null: skipped), and every query row [0, T) sees every key.
template <typename T, int DMAX, bool EXACT, bool PREFIX>
__global__ void __launch_bounds__(kAttnThreads)
    attention_dkdv_kernel(T* __restrict__ dk, T* __restrict__ dv, const T* __restrict__ dout,
                          const T* __restrict__ q, const T* __restrict__ k,
                          const T* __restrict__ v, const float* __restrict__ lse,
                          const float* __restrict__ dvec, const int32_t* __restrict__ cu,
                          int n_docs, int n_tok, int n_pre, int n_heads, int group, int n_kv,
                          int d_rt, int window, float scale) {
  constexpr int BC = kKeyTile, BR = query_tile<DMAX>(), KI = BC / 16, QJ = BR / 16;
  constexpr int CC = DMAX / 16, PS = BR + 1;
  const int D = EXACT ? DMAX : d_rt;
  const int DS = D | 1;
  const float scale_log2 = scale * kLog2e;
  extern __shared__ float smem[];
  float* ks = smem;            // [BC][DS]
  float* vs = ks + BC * DS;    // [BC][DS]
  float* qs = vs + BC * DS;    // [BR][DS]
  float* dos = qs + BR * DS;   // [BR][DS]
  float* ps = dos + BR * DS;   // [BC][PS] Pᵀ of the tile
  float* dss = ps + BC * PS;   // [BC][PS] dSᵀ of the tile
  __shared__ int row_lo[BR];     // first visible key per query; INT_MAX when none
  __shared__ float row_lse[BR];  // lse · log2(e)
  __shared__ float row_d[BR];    // D_t

  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int kh = blockIdx.y;
  const int k0 = int(blockIdx.x) * BC;  // the first key tiles see the most queries: first
  const int n_keys = PREFIX ? n_pre : n_tok;
  const int k_end = min(k0 + BC, n_keys);
  const int q_begin = PREFIX ? 0 : k0;
  int q_stop = n_tok;
  if (!PREFIX) {
    q_stop = doc_end(cu, n_docs, k_end - 1, n_tok);
    if (window > 0 && int64_t(k_end - 1) + window < q_stop) q_stop = k_end - 1 + window;
  }

  stage_rows(ks, k, k0, k_end, BC, kh, n_kv, D, DS);
  stage_rows(vs, v, k0, k_end, BC, kh, n_kv, D, DS);

  float dk_acc[KI][CC], dv_acc[KI][CC];
#pragma unroll
  for (int i = 0; i < KI; ++i)
#pragma unroll
    for (int c = 0; c < CC; ++c) dk_acc[i][c] = dv_acc[i][c] = 0.0f;

  for (int h = kh * group; h < (kh + 1) * group; ++h) {
    for (int q0 = q_begin; q0 < q_stop; q0 += BR) {
      __syncthreads();  // the previous tile is done with qs, dos, ps, dss and the row data
      stage_rows(qs, q, q0, q_stop, BR, h, n_heads, D, DS);
      stage_rows(dos, dout, q0, q_stop, BR, h, n_heads, D, DS);
      if (tid < BR) {
        const int t = q0 + tid;
        const bool ok = t < q_stop;
        row_lo[tid] = !ok ? INT_MAX : PREFIX ? 0 : first_key(cu, n_docs, t, window);
        row_lse[tid] = ok ? lse[int64_t(h) * n_tok + t] * kLog2e : 0.0f;
        row_d[tid] = ok ? dvec[int64_t(h) * n_tok + t] : 0.0f;
      }
      __syncthreads();

      // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ for keys ty + 16i, queries tx + 16j.
      float st[KI][QJ], dpt[KI][QJ];
#pragma unroll
      for (int i = 0; i < KI; ++i)
#pragma unroll
        for (int j = 0; j < QJ; ++j) st[i][j] = dpt[i][j] = 0.0f;
#pragma unroll 2
      for (int d = 0; d < D; ++d) {
        float kk[KI], vv[KI], qq[QJ], oo[QJ];
#pragma unroll
        for (int i = 0; i < KI; ++i) {
          kk[i] = ks[(ty + 16 * i) * DS + d];
          vv[i] = vs[(ty + 16 * i) * DS + d];
        }
#pragma unroll
        for (int j = 0; j < QJ; ++j) {
          qq[j] = qs[(tx + 16 * j) * DS + d];
          oo[j] = dos[(tx + 16 * j) * DS + d];
        }
#pragma unroll
        for (int i = 0; i < KI; ++i)
#pragma unroll
          for (int j = 0; j < QJ; ++j) {
            st[i][j] = fmaf(kk[i], qq[j], st[i][j]);
            dpt[i][j] = fmaf(vv[i], oo[j], dpt[i][j]);
          }
      }
#pragma unroll
      for (int j = 0; j < QJ; ++j) {
        const int qr = tx + 16 * j, t = q0 + qr, lo = row_lo[qr];
        const float l2 = row_lse[qr], dt = row_d[qr];
#pragma unroll
        for (int i = 0; i < KI; ++i) {
          const int key = k0 + ty + 16 * i;
          const bool seen = key >= lo && (PREFIX ? key < k_end : key <= t);
          const float p = seen ? exp2f(fmaf(st[i][j], scale_log2, -l2)) : 0.0f;
          ps[(ty + 16 * i) * PS + qr] = p;
          dss[(ty + 16 * i) * PS + qr] = seen ? p * (dpt[i][j] - dt) : 0.0f;
        }
      }
      __syncthreads();

      // dV += Pᵀ dO, dK += dSᵀ Q (the scale is applied once at the end).
#pragma unroll 2
      for (int j = 0; j < BR; ++j) {
        float p[KI], g[KI];
#pragma unroll
        for (int i = 0; i < KI; ++i) {
          p[i] = ps[(ty + 16 * i) * PS + j];
          g[i] = dss[(ty + 16 * i) * PS + j];
        }
#pragma unroll
        for (int c = 0; c < CC; ++c) {
          const int col = tx + 16 * c;
          if (EXACT || col < D) {
            const float o = dos[j * DS + col], qv = qs[j * DS + col];
#pragma unroll
            for (int i = 0; i < KI; ++i) {
              dv_acc[i][c] = fmaf(p[i], o, dv_acc[i][c]);
              dk_acc[i][c] = fmaf(g[i], qv, dk_acc[i][c]);
            }
          }
        }
      }
    }
  }
  if (!PREFIX || dk) add_rows<T, KI, CC, EXACT>(dk, dk_acc, k0, n_keys, kh, n_kv, D, scale);
  if (!PREFIX || dv) add_rows<T, KI, CC, EXACT>(dv, dv_acc, k0, n_keys, kh, n_kv, D, 1.0f);
}

// dq += for one BR-row query tile of one query head (see the file comment).
template <typename T, int DMAX, bool EXACT>
__global__ void __launch_bounds__(kAttnThreads)
    attention_dq_kernel(T* __restrict__ dq, const T* __restrict__ dout, const T* __restrict__ q,
                        const T* __restrict__ k, const T* __restrict__ v,
                        const T* __restrict__ pk, const T* __restrict__ pv,
                        const float* __restrict__ lse, const float* __restrict__ dvec,
                        const int32_t* __restrict__ cu, int n_docs, int n_tok, int n_pre,
                        int n_heads, int group, int n_kv, int d_rt, int window, float scale) {
  constexpr int BR = query_tile<DMAX>(), BC = kKeyTile, RI = BR / 16, CJ = BC / 16;
  constexpr int CC = DMAX / 16, PS = BC + 1;
  const int D = EXACT ? DMAX : d_rt;
  const int DS = D | 1;
  const float scale_log2 = scale * kLog2e;
  extern __shared__ float smem[];
  float* qs = smem;            // [BR][DS]
  float* dos = qs + BR * DS;   // [BR][DS]
  float* ks = dos + BR * DS;   // [BC][DS]
  float* vs = ks + BC * DS;    // [BC][DS]
  float* dss = vs + BC * DS;   // [BR][PS] dS of the tile
  __shared__ int row_lo[BR];

  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int h = blockIdx.y, kh = h / group;
  const int q0 = int(gridDim.x - 1 - blockIdx.x) * BR;  // heaviest (last) tiles first
  const int q_end = min(q0 + BR, n_tok);

  if (tid < BR) {
    const int t = q0 + tid;
    row_lo[tid] = t < n_tok ? first_key(cu, n_docs, t, window) : INT_MAX;
  }
  stage_rows(qs, q, q0, q_end, BR, h, n_heads, D, DS);
  stage_rows(dos, dout, q0, q_end, BR, h, n_heads, D, DS);
  __syncthreads();

  int t_r[RI], lo_r[RI];
  float l2_r[RI], d_r[RI], acc[RI][CC];
#pragma unroll
  for (int i = 0; i < RI; ++i) {
    const int t = q0 + ty + 16 * i;
    const bool ok = t < n_tok;
    t_r[i] = t;
    lo_r[i] = row_lo[ty + 16 * i];
    l2_r[i] = ok ? lse[int64_t(h) * n_tok + t] * kLog2e : 0.0f;
    d_r[i] = ok ? dvec[int64_t(h) * n_tok + t] : 0.0f;
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
    const int k_stop = pre ? n_pre : q_end;
    __syncthreads();  // the previous tile is done with ks, vs, dss
    stage_rows(ks, pre ? pk : k, k0, k_stop, BC, kh, n_kv, D, DS);
    stage_rows(vs, pre ? pv : v, k0, k_stop, BC, kh, n_kv, D, DS);
    __syncthreads();

    // S = Q Kᵀ and dP = dO Vᵀ for queries ty + 16i, keys tx + 16j.
    float s[RI][CJ], dp[RI][CJ];
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < CJ; ++j) s[i][j] = dp[i][j] = 0.0f;
#pragma unroll 2
    for (int d = 0; d < D; ++d) {
      float qq[RI], oo[RI], kk[CJ], vv[CJ];
#pragma unroll
      for (int i = 0; i < RI; ++i) {
        qq[i] = qs[(ty + 16 * i) * DS + d];
        oo[i] = dos[(ty + 16 * i) * DS + d];
      }
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        kk[j] = ks[(tx + 16 * j) * DS + d];
        vv[j] = vs[(tx + 16 * j) * DS + d];
      }
#pragma unroll
      for (int i = 0; i < RI; ++i)
#pragma unroll
        for (int j = 0; j < CJ; ++j) {
          s[i][j] = fmaf(qq[i], kk[j], s[i][j]);
          dp[i][j] = fmaf(oo[i], vv[j], dp[i][j]);
        }
    }
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        const int key = k0 + tx + 16 * j;
        const bool seen = pre ? (key < n_pre && t_r[i] < n_tok)
                              : (key >= lo_r[i] && key <= t_r[i]);
        const float p = seen ? exp2f(fmaf(s[i][j], scale_log2, -l2_r[i])) : 0.0f;
        dss[(ty + 16 * i) * PS + tx + 16 * j] = seen ? p * (dp[i][j] - d_r[i]) : 0.0f;
      }
    __syncthreads();

    // dQ += dS K (the scale is applied once at the end).
#pragma unroll 2
    for (int j = 0; j < BC; ++j) {
      float g[RI];
#pragma unroll
      for (int i = 0; i < RI; ++i) g[i] = dss[(ty + 16 * i) * PS + j];
#pragma unroll
      for (int c = 0; c < CC; ++c) {
        const int col = tx + 16 * c;
        if (EXACT || col < D) {
          const float kv = ks[j * DS + col];
#pragma unroll
          for (int i = 0; i < RI; ++i) acc[i][c] = fmaf(g[i], kv, acc[i][c]);
        }
      }
    }
  }
  add_rows<T, RI, CC, EXACT>(dq, acc, q0, n_tok, h, n_heads, D, scale);
}

// As in attention.cu: exact instances for D = 64 and 128, generic ones up to 64/128/256.
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

void CudaBackend::attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q,
                                     Tensor k, Tensor v, Tensor out, Tensor lse,
                                     Tensor cu_seqlens, int window, Tensor prefix_k,
                                     Tensor prefix_v, Tensor dprefix_k, Tensor dprefix_v) {
  const char* op = "attention_backward";
  expect_here(dq, op, "dq");
  expect_here(dk, op, "dk");
  expect_here(dv, op, "dv");
  expect_here(dout, op, "dout");
  expect_here(q, op, "q");
  expect_here(k, op, "k");
  expect_here(v, op, "v");
  expect_here(out, op, "out");
  expect_here(lse, op, "lse");
  expect_here(cu_seqlens, op, "cu_seqlens");
  cuda::check_attention_inputs(op, q, k, v, cu_seqlens, window);
  if (prefix_k.defined()) expect_here(prefix_k, op, "prefix_k");
  if (prefix_v.defined()) expect_here(prefix_v, op, "prefix_v");
  if (dprefix_k.defined()) expect_here(dprefix_k, op, "dprefix_k");
  if (dprefix_v.defined()) expect_here(dprefix_v, op, "dprefix_v");
  const int64_t P = cuda::check_attention_prefix(op, q, k, prefix_k, prefix_v);
  if (!prefix_k.defined() && (dprefix_k.defined() || dprefix_v.defined()))
    fail("CUDA backend: {}: dprefix_k / dprefix_v given without prefix_k / prefix_v", op);
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k.size(1);
  const DType dt = q.dtype();
  if (dprefix_k.defined())
    expect_tensor(dprefix_k, dt, prefix_k.shape(), "CUDA backend: attention_backward: dprefix_k");
  if (dprefix_v.defined())
    expect_tensor(dprefix_v, dt, prefix_v.shape(), "CUDA backend: attention_backward: dprefix_v");
  expect_tensor(dout, dt, Shape{T, Hq, D}, "CUDA backend: attention_backward: dout");
  expect_tensor(out, dt, Shape{T, Hq, D}, "CUDA backend: attention_backward: out");
  expect_tensor(lse, DType::F32, Shape{Hq, T}, "CUDA backend: attention_backward: lse");
  expect_tensor(dq, dt, Shape{T, Hq, D}, "CUDA backend: attention_backward: dq");
  expect_tensor(dk, dt, Shape{T, Hkv, D}, "CUDA backend: attention_backward: dk");
  expect_tensor(dv, dt, Shape{T, Hkv, D}, "CUDA backend: attention_backward: dv");
  if (T == 0 || Hq == 0) return;

  const int n_docs = int(cu_seqlens.size(0) - 1);
  const float scale = 1.0f / std::sqrt(float(D));
  const int group = int(Hq / Hkv);
  StreamScratch dvec(size_t(Hq * T) * sizeof(float), stream_);  // [Hq, T] f32

  dispatch_float(dt, op, [&](auto tag) {
    using T_ = decltype(tag);
    const int64_t rows = T * Hq;
    const unsigned dot_blocks = unsigned(std::clamp<int64_t>((rows + 7) / 8, 1, cuda::kMaxGrid));
    attention_dot_kernel<T_><<<dot_blocks, 256, 0, stream_>>>(
        dvec.get<float>(), dout.ptr<T_>(), out.ptr<T_>(), int(T), int(Hq), int(D));
    cuda_check_last_launch("attention_dot_kernel");

    dispatch_head_dim(D, [&](auto dmax, auto exact) {
      constexpr int DMAX = decltype(dmax)::value;
      constexpr bool EXACT = decltype(exact)::value;
      constexpr int BR = query_tile<DMAX>(), BC = kKeyTile;
      const int64_t DS = D | 1;

      const size_t dkdv_smem =
          size_t(2 * BC * DS + 2 * BR * DS + 2 * BC * (BR + 1)) * sizeof(float);
      auto dkdv = attention_dkdv_kernel<T_, DMAX, EXACT, false>;
      cuda::prepare_attention_launch(reinterpret_cast<const void*>(dkdv), dkdv_smem,
                                     "attention_dkdv_kernel");
      const dim3 dkdv_grid(unsigned((T + BC - 1) / BC), unsigned(Hkv));
      dkdv<<<dkdv_grid, kAttnThreads, dkdv_smem, stream_>>>(
          dk.ptr<T_>(), dv.ptr<T_>(), dout.ptr<T_>(), q.ptr<T_>(), k.ptr<T_>(), v.ptr<T_>(),
          lse.ptr<float>(), dvec.get<float>(), cu_seqlens.ptr<int32_t>(), n_docs, int(T), 0,
          int(Hq), group, int(Hkv), int(D), window, scale);
      cuda_check_last_launch("attention_dkdv_kernel");

      if (P > 0 && (dprefix_k.defined() || dprefix_v.defined())) {
        auto dpre = attention_dkdv_kernel<T_, DMAX, EXACT, true>;
        cuda::prepare_attention_launch(reinterpret_cast<const void*>(dpre), dkdv_smem,
                                       "attention_dkdv_kernel (prefix)");
        const dim3 dpre_grid(unsigned((P + BC - 1) / BC), unsigned(Hkv));
        dpre<<<dpre_grid, kAttnThreads, dkdv_smem, stream_>>>(
            dprefix_k.defined() ? dprefix_k.ptr<T_>() : nullptr,
            dprefix_v.defined() ? dprefix_v.ptr<T_>() : nullptr, dout.ptr<T_>(), q.ptr<T_>(),
            prefix_k.ptr<T_>(), prefix_v.ptr<T_>(), lse.ptr<float>(), dvec.get<float>(),
            cu_seqlens.ptr<int32_t>(), n_docs, int(T), int(P), int(Hq), group, int(Hkv),
            int(D), window, scale);
        cuda_check_last_launch("attention_dkdv_kernel (prefix)");
      }

      const size_t dq_smem = size_t(2 * BR * DS + 2 * BC * DS + BR * (BC + 1)) * sizeof(float);
      auto dqk = attention_dq_kernel<T_, DMAX, EXACT>;
      cuda::prepare_attention_launch(reinterpret_cast<const void*>(dqk), dq_smem,
                                     "attention_dq_kernel");
      const dim3 dq_grid(unsigned((T + BR - 1) / BR), unsigned(Hq));
      dqk<<<dq_grid, kAttnThreads, dq_smem, stream_>>>(
          dq.ptr<T_>(), dout.ptr<T_>(), q.ptr<T_>(), k.ptr<T_>(), v.ptr<T_>(),
          P ? prefix_k.ptr<T_>() : nullptr, P ? prefix_v.ptr<T_>() : nullptr, lse.ptr<float>(),
          dvec.get<float>(), cu_seqlens.ptr<int32_t>(), n_docs, int(T), int(P), int(Hq), group,
          int(Hkv), int(D), window, scale);
      cuda_check_last_launch("attention_dq_kernel");
    });
  });
}

}  // namespace temper
