// Exact causal softmax attention over packed documents, with grouped-query heads and an
// optional sliding window. Token t of a document [b, e) attends to keys s in
//   [lo(t), t],  lo(t) = max(b, t − window + 1) when window > 0, else b.
// Query head h reads kv head h / (Hq/Hkv). Scores are scaled by 1/sqrt(D).
// With a learned prefix (prefix_k, prefix_v [P, Hkv, D]), every query also sees the P
// prefix keys, unmasked (no causal or window limit): each row's softmax runs over the P
// prefix scores first, then its own keys, and lse covers both.
//
// No [T, T] matrix: forward keeps one query row of scores (at most one document long)
// per thread, and saves lse = log Σ exp(scores) so backward can recompute
//   p_s = exp(score_s − lse)                     (the softmax row)
//   dP_s = dout_t · v_s,   D_t = dout_t · out_t  (= Σ_s p_s dP_s)
//   dS_s = p_s · (dP_s − D_t)
//   dq_t += scale Σ_s dS_s k_s,  dk_s += scale dS_s q_t,  dv_s += p_s dout_t
// (s over the prefix keys too; dprefix_k/v get the same sums over every query row.)
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

namespace {

struct AttnDims {
  int64_t T = 0, Hq = 0, Hkv = 0, D = 0, N = 0;
  int64_t max_len = 0;        // longest document
  std::vector<int32_t> cu;    // [N+1] document boundaries
};

// Validates q/k/v/cu_seqlens/window and reads the sizes.
AttnDims check_attention(const char* op, Tensor q, Tensor k, Tensor v, Tensor cu_seqlens,
                         int window) {
  const std::string o(op);
  expect_rank(q, DType::F32, 3, (o + ": q").c_str());
  expect_rank(k, DType::F32, 3, (o + ": k").c_str());
  AttnDims a;
  a.T = q.size(0), a.Hq = q.size(1), a.D = q.size(2), a.Hkv = k.size(1);
  expect_f32(k, {a.T, a.Hkv, a.D}, (o + ": k").c_str());
  expect_f32(v, {a.T, a.Hkv, a.D}, (o + ": v").c_str());
  if (a.Hkv == 0 || a.Hq % a.Hkv != 0)
    fail("{}: {} query heads are not a multiple of {} kv heads", op, a.Hq, a.Hkv);
  if (window < 0) fail("{}: window must be >= 0 (0 = none), got {}", op, window);
  expect_rank(cu_seqlens, DType::I32, 1, (o + ": cu_seqlens").c_str());
  a.N = cu_seqlens.size(0) - 1;
  if (a.N < 1) fail("{}: cu_seqlens needs at least 2 entries, got {}", op, cu_seqlens.str());
  const int32_t* cu = cu_seqlens.ptr<int32_t>();
  a.cu.assign(cu, cu + a.N + 1);
  if (a.cu[0] != 0 || a.cu[a.N] != a.T)
    fail("{}: cu_seqlens must run from 0 to T = {}, got {} .. {}", op, a.T, a.cu[0], a.cu[a.N]);
  for (int64_t d = 0; d < a.N; ++d) {
    if (a.cu[d + 1] < a.cu[d])
      fail("{}: cu_seqlens decreases at document {} ({} then {})", op, d, a.cu[d], a.cu[d + 1]);
    a.max_len = std::max<int64_t>(a.max_len, a.cu[d + 1] - a.cu[d]);
  }
  return a;
}

// Checks the optional prefix (both or neither, f32 [P, Hkv, D]) and returns P (0 = none).
int64_t check_prefix(const char* op, const AttnDims& a, Tensor prefix_k, Tensor prefix_v) {
  const std::string o(op);
  if (prefix_k.defined() != prefix_v.defined())
    fail("{}: prefix_k and prefix_v must both be given or both be undefined", op);
  if (!prefix_k.defined()) return 0;
  expect_rank(prefix_k, DType::F32, 3, (o + ": prefix_k").c_str());
  const int64_t P = prefix_k.size(0);
  expect_f32(prefix_k, {P, a.Hkv, a.D}, (o + ": prefix_k").c_str());
  expect_f32(prefix_v, {P, a.Hkv, a.D}, (o + ": prefix_v").c_str());
  return P;
}

// First key position visible to query t of a document starting at b.
inline int64_t first_key(int64_t t, int64_t b, int window) {
  return window > 0 ? std::max<int64_t>(b, t - window + 1) : b;
}

// Σ a_i b_i in eight interleaved partial sums combined in a fixed tree: the compiler keeps
// them in vector registers (one running sum would serialise every add), and the order
// depends only on n, so results stay deterministic.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

}  // namespace

// out[T,Hq,D], lse[Hq,T] from q[T,Hq,D], k[T,Hkv,D], v[T,Hkv,D], cu_seqlens[N+1]
void CpuBackend::attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v,
                                   Tensor cu_seqlens, int window, Tensor prefix_k,
                                   Tensor prefix_v) {
  const AttnDims a = check_attention("attention_forward", q, k, v, cu_seqlens, window);
  const int64_t P = check_prefix("attention_forward", a, prefix_k, prefix_v);
  const int64_t T = a.T, Hq = a.Hq, Hkv = a.Hkv, D = a.D, group = Hq / Hkv;
  expect_f32(out, {T, Hq, D}, "attention_forward: out");
  expect_f32(lse, {Hq, T}, "attention_forward: lse");
  std::vector<int32_t> doc_start(T);  // [T] first token of each token's document
  for (int64_t d = 0; d < a.N; ++d)
    for (int64_t t = a.cu[d]; t < a.cu[d + 1]; ++t) doc_start[t] = a.cu[d];

  const float* pq = q.ptr<float>();  // [T, Hq, D]
  const float* pk = k.ptr<float>();  // [T, Hkv, D]
  const float* pv = v.ptr<float>();  // [T, Hkv, D]
  float* po = out.ptr<float>();      // [T, Hq, D]
  float* pl = lse.ptr<float>();      // [Hq, T]
  const float* ppk = P ? prefix_k.ptr<float>() : nullptr;  // [P, Hkv, D]
  const float* ppv = P ? prefix_v.ptr<float>() : nullptr;  // [P, Hkv, D]
  const float scale = 1.0f / std::sqrt(float(D));

#pragma omp parallel
  {
    // [P + len] scores, then exp(score − max), of one row: the P prefix keys first.
    std::vector<float> p(P + a.max_len);
    std::vector<float> acc(D);        // [D] Σ_s p_s v_s
#pragma omp for collapse(2) schedule(static)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t lo = first_key(t, doc_start[t], window), n = P + t - lo + 1;
        const int64_t kh = h / group;
        // Row j < P is prefix key j, row j >= P is key lo + j − P.
        auto key = [&](const float* base, const float* prefix, int64_t j) {
          return j < P ? prefix + (j * Hkv + kh) * D : base + ((lo + j - P) * Hkv + kh) * D;
        };
        const float* qr = pq + (t * Hq + h) * D;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < n; ++j) {
          p[j] = dot(qr, key(pk, ppk, j), D) * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < n; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j < n; ++j) {
          const float* vr = key(pv, ppv, j);
          for (int64_t i = 0; i < D; ++i) acc[i] += p[j] * vr[i];
        }
        const float inv = float(1.0 / sum);
        float* orow = po + (t * Hq + h) * D;
        for (int64_t i = 0; i < D; ++i) orow[i] = acc[i] * inv;
        pl[h * T + t] = mx + float(std::log(sum));
      }
  }
}

// dq[T,Hq,D] +=, dk[T,Hkv,D] +=, dv[T,Hkv,D] += from dout[T,Hq,D], out, lse[Hq,T];
// dprefix_k, dprefix_v [P,Hkv,D] += (each optional) when there is a prefix.
void CpuBackend::attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q,
                                    Tensor k, Tensor v, Tensor out, Tensor lse,
                                    Tensor cu_seqlens, int window, Tensor prefix_k,
                                    Tensor prefix_v, Tensor dprefix_k, Tensor dprefix_v) {
  const AttnDims a = check_attention("attention_backward", q, k, v, cu_seqlens, window);
  const int64_t P = check_prefix("attention_backward", a, prefix_k, prefix_v);
  const int64_t T = a.T, Hq = a.Hq, Hkv = a.Hkv, D = a.D, N = a.N, group = Hq / Hkv;
  expect_f32(dout, {T, Hq, D}, "attention_backward: dout");
  expect_f32(out, {T, Hq, D}, "attention_backward: out");
  expect_f32(lse, {Hq, T}, "attention_backward: lse");
  expect_f32(dq, {T, Hq, D}, "attention_backward: dq");
  expect_f32(dk, {T, Hkv, D}, "attention_backward: dk");
  expect_f32(dv, {T, Hkv, D}, "attention_backward: dv");
  if (!P && (dprefix_k.defined() || dprefix_v.defined()))
    fail("attention_backward: dprefix_k / dprefix_v given without prefix_k / prefix_v");
  if (P) {
    expect_f32_opt(dprefix_k, {P, Hkv, D}, "attention_backward: dprefix_k");
    expect_f32_opt(dprefix_v, {P, Hkv, D}, "attention_backward: dprefix_v");
  }

  const float* pq = q.ptr<float>();     // [T, Hq, D]
  const float* pk = k.ptr<float>();     // [T, Hkv, D]
  const float* pv = v.ptr<float>();     // [T, Hkv, D]
  const float* po = out.ptr<float>();   // [T, Hq, D]
  const float* pg = dout.ptr<float>();  // [T, Hq, D]
  const float* pl = lse.ptr<float>();   // [Hq, T]
  float* pdq = dq.ptr<float>();         // [T, Hq, D]
  float* pdk = dk.ptr<float>();         // [T, Hkv, D]
  float* pdv = dv.ptr<float>();         // [T, Hkv, D]
  const float* ppk = P ? prefix_k.ptr<float>() : nullptr;  // [P, Hkv, D]
  const float* ppv = P ? prefix_v.ptr<float>() : nullptr;  // [P, Hkv, D]
  const float scale = 1.0f / std::sqrt(float(D));

  // One task per (document, kv head): it owns dk/dv of that head on that document's
  // tokens, and dq of the group's query heads there, so no two threads write one value
  // and every sum runs in a fixed order.
#pragma omp parallel
  {
    std::vector<float> dqr(D);  // [D] dq of one (t, h), accumulated then added once
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t d = 0; d < N; ++d)
      for (int64_t kh = 0; kh < Hkv; ++kh)
        for (int64_t h = kh * group; h < (kh + 1) * group; ++h)
          for (int64_t t = a.cu[d]; t < a.cu[d + 1]; ++t) {
            const int64_t lo = first_key(t, a.cu[d], window);
            const float* qr = pq + (t * Hq + h) * D;
            const float* gr = pg + (t * Hq + h) * D;
            const float Dt = dot(gr, po + (t * Hq + h) * D, D);  // Σ_s p_s dP_s
            const float l = pl[h * T + t];
            std::fill(dqr.begin(), dqr.end(), 0.0f);
            for (int64_t j = 0; j < P; ++j) {  // prefix keys: dq only (dprefix below)
              const float* kr = ppk + (j * Hkv + kh) * D;
              const float p = std::exp(dot(qr, kr, D) * scale - l);
              const float dS = p * (dot(gr, ppv + (j * Hkv + kh) * D, D) - Dt) * scale;
              for (int64_t i = 0; i < D; ++i) dqr[i] += dS * kr[i];
            }
            for (int64_t s = lo; s <= t; ++s) {
              const float* kr = pk + (s * Hkv + kh) * D;
              const float* vr = pv + (s * Hkv + kh) * D;
              const float p = std::exp(dot(qr, kr, D) * scale - l);
              const float dS = p * (dot(gr, vr, D) - Dt) * scale;  // includes the score scale
              float* dkr = pdk + (s * Hkv + kh) * D;
              float* dvr = pdv + (s * Hkv + kh) * D;
              for (int64_t i = 0; i < D; ++i) {
                dqr[i] += dS * kr[i];
                dkr[i] += dS * qr[i];
                dvr[i] += p * gr[i];
              }
            }
            float* dqrow = pdq + (t * Hq + h) * D;
            for (int64_t i = 0; i < D; ++i) dqrow[i] += dqr[i];
          }
  }

  // dprefix: one task per (prefix key, kv head) owns that row of dprefix_k and dprefix_v
  // and sums over all query rows t (every document) and the group's heads in order.
  if (!P || (!dprefix_k.defined() && !dprefix_v.defined())) return;
  float* pdpk = dprefix_k.defined() ? dprefix_k.ptr<float>() : nullptr;  // [P, Hkv, D]
  float* pdpv = dprefix_v.defined() ? dprefix_v.ptr<float>() : nullptr;  // [P, Hkv, D]
#pragma omp parallel
  {
    std::vector<float> gk(D), gv(D);  // [D] sums of one (j, kh), added once at the end
#pragma omp for collapse(2) schedule(static)
    for (int64_t j = 0; j < P; ++j)
      for (int64_t kh = 0; kh < Hkv; ++kh) {
        const float* kr = ppk + (j * Hkv + kh) * D;
        const float* vr = ppv + (j * Hkv + kh) * D;
        std::fill(gk.begin(), gk.end(), 0.0f);
        std::fill(gv.begin(), gv.end(), 0.0f);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
            const float* qr = pq + (t * Hq + h) * D;
            const float* gr = pg + (t * Hq + h) * D;
            const float p = std::exp(dot(qr, kr, D) * scale - pl[h * T + t]);
            const float dS = p * (dot(gr, vr, D) - dot(gr, po + (t * Hq + h) * D, D)) * scale;
            for (int64_t i = 0; i < D; ++i) {
              gk[i] += dS * qr[i];
              gv[i] += p * gr[i];
            }
          }
        if (pdpk)
          for (int64_t i = 0; i < D; ++i) pdpk[(j * Hkv + kh) * D + i] += gk[i];
        if (pdpv)
          for (int64_t i = 0; i < D; ++i) pdpv[(j * Hkv + kh) * D + i] += gv[i];
      }
  }
}

}  // namespace temper
