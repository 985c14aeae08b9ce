#include "parallel/tensor_parallel.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/backend.h"

namespace temper {

void TensorParallel::gather_cross_entropy_partials(Tensor all, Tensor mine) const {
  TEMPER_CHECK(active(), "vocab-parallel cross-entropy without a tensor-parallel group");
  comm_->all_gather(all, mine);
}

std::vector<int32_t> TensorParallel::local_ids(const std::vector<int32_t>& ids, int64_t V) const {
  const int64_t lo = vocab_begin(V), hi = lo + V / size();
  std::vector<int32_t> out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    out[i] = ids[i] >= lo && ids[i] < hi ? int32_t(ids[i] - lo) : -1;
  return out;
}

double TensorParallel::combine_sum_squares(double sharded, double replicated) const {
  double local[1] = {sharded + replicated / size()};
  if (active()) all_reduce_sum_f64(*host_, local);
  return local[0];
}

SumSquares gradient_sum_squares(const ParameterSet& params, Backend& backend, int64_t begin,
                                int64_t end) {
  if (end < 0) end = params.trainable_numel();
  SumSquares s;
  for (const Parameter& p : params.all()) {
    if (!p.trainable) continue;
    const int64_t b = std::max(begin, p.offset), e = std::min(end, p.offset + p.shape.numel());
    if (b >= e) continue;
    const double v = backend.sum_squares(params.flat_grads().flat(b, e - b));
    (p.split_dim >= 0 ? s.sharded : s.replicated) += v;
  }
  return s;
}

std::vector<std::vector<uint8_t>> gather_full_parameters(ParameterSet& params, Backend& backend,
                                                         const TensorParallel& tp,
                                                         Communicator* group) {
  std::vector<std::vector<uint8_t>> out;
  const size_t elem = dtype_size(params.dtype());
  for (const Parameter& p : params.all()) {
    std::vector<uint8_t> local(size_t(p.shape.numel()) * elem);
    if (p.quantized) {  // an NF4 weight leaves dense, dequantized
      Arena scratch(backend.memory(), "dequantized weight");
      Tensor dense = scratch.allocate(params.dtype(), p.shape);
      backend.nf4_dequantize(dense, p.nf4);
      backend.copy_to_host(local.data(), dense);
    } else {
      backend.copy_to_host(local.data(), p.value);
    }
    if (p.split_dim < 0 || !tp.active()) {
      out.push_back(std::move(local));
      continue;
    }
    TEMPER_CHECK(group && group->size() == p.shards, "{}: tp group of {} for {} shards", p.name,
                 group ? group->size() : 0, p.shards);
    std::vector<uint8_t> gathered(local.size() * size_t(p.shards));
    group->all_gather(Tensor(gathered.data(), DType::U8, Shape{int64_t(gathered.size())}),
                      Tensor(local.data(), DType::U8, Shape{int64_t(local.size())}));
    if (p.split_dim == 0) {  // shards are consecutive row blocks: already in order
      out.push_back(std::move(gathered));
      continue;
    }
    // Column blocks: shard k holds columns [k·c, (k+1)·c) of every row.
    const int64_t rows = p.shape[0], cols = p.shape.numel() / rows;
    std::vector<uint8_t> full(gathered.size());
    for (int k = 0; k < p.shards; ++k)
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(full.data() + (size_t(r) * cols * p.shards + size_t(k) * cols) * elem,
                    gathered.data() + (size_t(k) * rows * cols + size_t(r) * cols) * elem,
                    size_t(cols) * elem);
    out.push_back(std::move(full));
  }
  return out;
}

}  // namespace temper
