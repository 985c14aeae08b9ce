// Helpers shared by the CPU kernels (internal to src/kernels/cpu): argument checks that
// throw temper::Error naming the op and the argument, so a wrong dtype or shape coming
// from model code is reported at the op boundary, not as a wrong number later.
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"

namespace temper::cpu {

// `what` names the op and the argument, e.g. "linear_forward: weight".
inline void expect_host(const Tensor& t, const char* what) {
  if (t.defined() && t.device().kind != DeviceKind::CPU)
    fail("{}: the cpu backend got a tensor on {}", what, t.device().str());
}

// A defined host tensor of `dtype` with `ndim` dims; the op reads its sizes next.
inline void expect_rank(const Tensor& t, DType dtype, int ndim, const char* what) {
  if (!t.defined()) fail("{}: tensor is missing (expected a {}-D {} tensor)", what, ndim, dtype_name(dtype));
  if (t.dtype() != dtype || t.ndim() != ndim)
    fail("{}: expected a {}-D {} tensor, got {}", what, ndim, dtype_name(dtype), t.str());
  expect_host(t, what);
}

// A defined host tensor of exactly dtype[shape].
inline void expect(const Tensor& t, DType dtype, const Shape& shape, const char* what) {
  expect_tensor(t, dtype, shape, what);
  expect_host(t, what);
}
inline void expect_f32(const Tensor& t, const Shape& shape, const char* what) {
  expect(t, DType::F32, shape, what);
}
// An optional f32 argument: checked only when defined.
inline void expect_f32_opt(const Tensor& t, const Shape& shape, const char* what) {
  if (t.defined()) expect(t, DType::F32, shape, what);
}

// An f32 tensor of any shape (elementwise ops), and one with the same shape as `like`.
inline void expect_f32_any(const Tensor& t, const char* what) {
  if (!t.defined()) fail("{}: tensor is missing (expected f32)", what);
  if (t.dtype() != DType::F32) fail("{}: the cpu backend computes in f32, got {}", what, t.str());
  expect_host(t, what);
}
inline void expect_same_f32(const Tensor& t, const Tensor& like, const char* what) {
  expect(t, DType::F32, like.shape(), what);
}

// Columns [0, C) are split into blocks of this many for the "parallel over columns,
// sequential over rows" reductions (dweight, dbias, dtable): each column's sum runs in
// row order whatever the thread count, so results are bitwise reproducible.
constexpr int64_t kColumnBlock = 64;
inline int64_t column_blocks(int64_t C) { return (C + kColumnBlock - 1) / kColumnBlock; }

}  // namespace temper::cpu
