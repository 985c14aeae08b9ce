// Token embedding: forward gathers table rows by id, backward scatter-adds the output
// gradient back into those rows.
#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_common.h"

namespace temper {
using namespace cpu;

namespace {

// Every id must index a row of the [V, C] table, or be negative: a vocab-parallel
// embedding passes the ids of other ranks' slices as -1 (a zero row, no gradient).
// Name the first token that does neither.
void check_ids(const int32_t* ids, int64_t T, int64_t V, const char* op) {
  for (int64_t t = 0; t < T; ++t)
    if (ids[t] >= V)
      fail("{}: token {} has id {}, outside the vocabulary [0, {})", op, t, ids[t], V);
}

}  // namespace

// out[T,C] = table[ids[t], :]
void CpuBackend::embedding_forward(Tensor out, Tensor ids, Tensor table) {
  expect_rank(table, DType::F32, 2, "embedding_forward: table");
  expect_rank(ids, DType::I32, 1, "embedding_forward: ids");
  const int64_t V = table.size(0), C = table.size(1), T = ids.size(0);
  expect_f32(out, {T, C}, "embedding_forward: out");
  const int32_t* id = ids.ptr<int32_t>();  // [T]
  check_ids(id, T, V, "embedding_forward");

  const float* tab = table.ptr<float>();  // [V, C]
  float* o = out.ptr<float>();            // [T, C]
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    if (id[t] < 0)
      std::memset(o + t * C, 0, size_t(C) * sizeof(float));
    else
      std::memcpy(o + t * C, tab + int64_t(id[t]) * C, size_t(C) * sizeof(float));
  }
}

// dtable[V,C] += Σ_{t: ids[t]=v} dout[t,:]
void CpuBackend::embedding_backward(Tensor dtable, Tensor dout, Tensor ids) {
  expect_rank(dtable, DType::F32, 2, "embedding_backward: dtable");
  expect_rank(ids, DType::I32, 1, "embedding_backward: ids");
  const int64_t V = dtable.size(0), C = dtable.size(1), T = ids.size(0);
  expect_f32(dout, {T, C}, "embedding_backward: dout");
  const int32_t* id = ids.ptr<int32_t>();  // [T]
  check_ids(id, T, V, "embedding_backward");

  const float* g = dout.ptr<float>();  // [T, C]
  float* dtab = dtable.ptr<float>();   // [V, C]
  // Tokens repeat ids, so a row of dtable has no single owner t. Each thread owns a
  // block of columns instead and walks the tokens in order: no races, and every sum
  // runs in token order whatever the thread count.
  const int64_t nblocks = column_blocks(C);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b * kColumnBlock, c1 = std::min(C, c0 + kColumnBlock);
    for (int64_t t = 0; t < T; ++t) {
      if (id[t] < 0) continue;  // another rank's vocabulary slice
      float* drow = dtab + int64_t(id[t]) * C;
      const float* grow = g + t * C;
      for (int64_t c = c0; c < c1; ++c) drow[c] += grow[c];
    }
  }
}

}  // namespace temper
