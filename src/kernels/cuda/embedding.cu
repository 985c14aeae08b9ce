// CUDA backend: token embedding. Forward gathers table rows by id; backward scatter-adds
// the rows of dout into dtable. Ids are not validated here (the data loader does that);
// an id outside [0, V) is never dereferenced: its output row is zeros, its gradient dropped.
//
// Backward has two paths:
//   fast:    f32 dtable, non-deterministic mode: one fp32 atomicAdd per element of dout.
//   ordered: everything else (bf16/f16 dtable, or deterministic()): tokens stably sorted by
//            id (CUB radix sort of (id, t) pairs), then one warp per distinct id sums its
//            tokens in increasing t, in fp32, starting from the old dtable value. No float
//            atomics; for f32 this is exactly the CPU backend's order of additions.
#include <algorithm>
#include <bit>
#include <climits>
#include <cstdint>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"

#include <cub/device/device_radix_sort.cuh>

namespace temper {

using cuda::dispatch_float;
using cuda::from_f32;
using cuda::grid_for;
using cuda::kThreads;
using cuda::StreamScratch;
using cuda::to_f32;

namespace {

constexpr int kWarp = 32;

void expect_shape(const Tensor& t, const Shape& shape, const char* op, const char* what) {
  if (!(t.shape() == shape))
    fail("CUDA backend: {}: {} is {}, expected shape {}", op, what, t.str(), shape.str());
}

// out[T,C] = table[ids[t], :] (zeros for an id outside [0,V)).
// One block per token row (grid-stride over rows), the block's threads across C.
template <typename S>
__global__ void embedding_forward_kernel(S* __restrict__ out, const int32_t* __restrict__ ids,
                                         const S* __restrict__ table, int64_t T, int64_t C,
                                         int64_t V) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const int64_t id = ids[t];
    S* orow = out + t * C;                                       // [C]
    const bool valid = id >= 0 && id < V;
    const S* row = table + (valid ? id : 0) * C;                 // [C]
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      orow[c] = valid ? row[c] : from_f32<S>(0.0f);
  }
}

// Fast path: dtable[ids[t], c] += dout[t, c], one thread per element of dout[T,C].
__global__ void embedding_backward_atomic_kernel(float* __restrict__ dtable,
                                                 const float* __restrict__ dout,
                                                 const int32_t* __restrict__ ids, int64_t T,
                                                 int64_t C, int64_t V) {
  for (int64_t i = cuda::global_index(); i < T * C; i += cuda::grid_stride()) {
    const int64_t t = i / C, c = i - t * C;
    const int64_t id = ids[t];
    if (id >= 0 && id < V) atomicAdd(dtable + id * C + c, dout[i]);
  }
}

// Ordered path, step 1: the (key, value) pairs to sort. keys[t] = ids[t], or V for an
// invalid id (sorts after every real id; skipped below); toks[t] = t.
__global__ void embedding_sort_keys_kernel(uint32_t* __restrict__ keys, int32_t* __restrict__ toks,
                                           const int32_t* __restrict__ ids, int64_t T, int64_t V) {
  for (int64_t t = cuda::global_index(); t < T; t += cuda::grid_stride()) {
    const int64_t id = ids[t];
    keys[t] = uint32_t(id >= 0 && id < V ? id : V);
    toks[t] = int32_t(t);
  }
}

// Ordered path, step 3 (step 2 is the stable sort): keys[T] sorted, toks[T] the token of
// each, in increasing t within one id. One warp per sorted position i; only the first
// position of each id's run works: its lanes split the C columns, and each sums the
// run's dout rows in token order on top of the old dtable value.
template <typename S>
__global__ void embedding_backward_sorted_kernel(S* __restrict__ dtable,       // [V, C]
                                                 const S* __restrict__ dout,   // [T, C]
                                                 const uint32_t* __restrict__ keys,  // [T]
                                                 const int32_t* __restrict__ toks,   // [T]
                                                 int64_t T, int64_t C, int64_t V) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = cuda::grid_stride() / kWarp;
  for (int64_t i = cuda::global_index() / kWarp; i < T; i += warps) {  // warp-uniform
    const uint32_t id = keys[i];
    if (id >= V || (i > 0 && keys[i - 1] == id)) continue;  // invalid, or not a run's start
    int64_t end = i + 1;
    while (end < T && keys[end] == id) ++end;
    S* drow = dtable + int64_t(id) * C;
    for (int64_t c = lane; c < C; c += kWarp) {
      float acc = to_f32(drow[c]);
      for (int64_t j = i; j < end; ++j) acc += to_f32(dout[int64_t(toks[j]) * C + c]);
      drow[c] = from_f32<S>(acc);
    }
  }
}

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

}  // namespace

// out[T,C] = table[ids[t], :]
void CudaBackend::embedding_forward(Tensor out, Tensor ids, Tensor table) {
  const char* op = "embedding_forward";
  expect_here(out, op, "out");
  expect_here(ids, op, "ids");
  expect_here(table, op, "table");
  if (table.ndim() != 2) fail("CUDA backend: {}: table is {}, expected [V, C]", op, table.str());
  if (ids.ndim() != 1) fail("CUDA backend: {}: ids is {}, expected [T]", op, ids.str());
  cuda::expect_dtype(ids, DType::I32, op, "ids");
  cuda::expect_dtype(out, table.dtype(), op, "out");
  const int64_t V = table.size(0), C = table.size(1), T = ids.size(0);
  expect_shape(out, {T, C}, op, "out");
  if (T == 0 || C == 0) return;
  dispatch_float(table.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    const unsigned grid = unsigned(std::min<int64_t>(T, cuda::kMaxGrid));
    embedding_forward_kernel<S><<<grid, kThreads, 0, stream_>>>(
        out.ptr<S>(), ids.ptr<int32_t>(), table.ptr<S>(), T, C, V);
    cuda_check_last_launch("embedding_forward_kernel");
  });
}

// dtable[V,C] += Σ_{t: ids[t]=v} dout[t,:]
void CudaBackend::embedding_backward(Tensor dtable, Tensor dout, Tensor ids) {
  const char* op = "embedding_backward";
  expect_here(dtable, op, "dtable");
  expect_here(dout, op, "dout");
  expect_here(ids, op, "ids");
  if (dtable.ndim() != 2)
    fail("CUDA backend: {}: dtable is {}, expected [V, C]", op, dtable.str());
  if (ids.ndim() != 1) fail("CUDA backend: {}: ids is {}, expected [T]", op, ids.str());
  cuda::expect_dtype(ids, DType::I32, op, "ids");
  cuda::expect_dtype(dout, dtable.dtype(), op, "dout");
  const int64_t V = dtable.size(0), C = dtable.size(1), T = ids.size(0);
  expect_shape(dout, {T, C}, op, "dout");
  if (T == 0 || C == 0) return;

  if (dtable.dtype() == DType::F32 && !deterministic()) {
    embedding_backward_atomic_kernel<<<grid_for(T * C), kThreads, 0, stream_>>>(
        dtable.ptr<float>(), dout.ptr<float>(), ids.ptr<int32_t>(), T, C, V);
    cuda_check_last_launch("embedding_backward_atomic_kernel");
    return;
  }

  // Ordered path. Keys lie in [0, V] (V = invalid), so only their low bits are sorted.
  if (T > INT_MAX || V >= INT_MAX)
    fail("CUDA backend: {}: {} tokens over a {}-row table exceed the 2^31 limit of the ordered "
         "path", op, T, V);
  dispatch_float(dtable.dtype(), op, [&](auto tag) {
    using S = decltype(tag);
    const int end_bit = std::max(1, int(std::bit_width(uint64_t(V))));
    const int n = int(T);
    size_t sort_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (const uint32_t*)nullptr,
                                               (uint32_t*)nullptr, (const int32_t*)nullptr,
                                               (int32_t*)nullptr, n, 0, end_bit, stream_));
    // One allocation: [sort temp | keys_in[T] | keys[T] | toks_in[T] | toks[T]], 256-aligned.
    const size_t arr = align256(size_t(T) * 4), sort_pad = align256(sort_bytes);
    StreamScratch scratch(sort_pad + 4 * arr, stream_);
    char* base = scratch.get();
    auto* keys_in = reinterpret_cast<uint32_t*>(base + sort_pad);
    auto* keys = reinterpret_cast<uint32_t*>(base + sort_pad + arr);
    auto* toks_in = reinterpret_cast<int32_t*>(base + sort_pad + 2 * arr);
    auto* toks = reinterpret_cast<int32_t*>(base + sort_pad + 3 * arr);

    embedding_sort_keys_kernel<<<grid_for(T), kThreads, 0, stream_>>>(keys_in, toks_in,
                                                                      ids.ptr<int32_t>(), T, V);
    cuda_check_last_launch("embedding_sort_keys_kernel");
    // LSD radix sort is stable: equal ids keep increasing t.
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base, sort_bytes, keys_in, keys, toks_in, toks, n,
                                               0, end_bit, stream_));
    embedding_backward_sorted_kernel<S><<<grid_for(T * kWarp), kThreads, 0, stream_>>>(
        dtable.ptr<S>(), dout.ptr<S>(), keys, toks, T, C, V);
    cuda_check_last_launch("embedding_backward_sorted_kernel");
  });
}

}  // namespace temper
