#include "parallel/zero.h"

#include <fmt/format.h>

#include "core/error.h"

namespace temper {

ZeroShards::ZeroShards(ParameterSet& params, Communicator& dp) : params_(params), dp_(dp) {
  const int64_t n = params_.padded_numel();
  if (n % dp_.size())
    fail("ZeRO: the flat parameter buffer ({} elements) must be padded to a multiple of dp={}", n,
         dp_.size());
  const int64_t shard = n / dp_.size();
  begin_ = shard * dp_.rank();
  end_ = begin_ + shard;
}

void ZeroShards::reduce_scatter_gradients() {
  Tensor all = params_.flat_grads();
  dp_.reduce_scatter(all.flat(begin_, end_ - begin_), all);
}

double ZeroShards::gradient_sum_squares(Backend& backend) {
  double local = 0.0;
  for (const Parameter& p : params_.all()) {
    if (!p.trainable) continue;
    const int64_t b = std::max(begin_, p.offset), e = std::min(end_, p.offset + p.shape.numel());
    if (b < e) local += backend.sum_squares(params_.flat_grads().flat(b, e - b));
  }
  // An f32 hi/lo pair keeps the sum's precision through the f32 all-reduce.
  float parts[2] = {float(local), float(local - double(float(local)))};
  dp_.all_reduce(Tensor(parts, DType::F32, Shape{2}), ReduceOp::Sum);
  return double(parts[0]) + double(parts[1]);
}

void ZeroShards::all_gather_parameters() {
  Tensor all = params_.flat_values();
  dp_.all_gather(all, all.flat(begin_, end_ - begin_));
}

double MemoryReport::bytes_per_parameter() const {
  return numel ? double(parameters + gradients + optimizer) / double(numel) : 0.0;
}

std::string MemoryReport::str() const {
  return fmt::format("parameters {:.1f} MiB, gradients {:.1f} MiB, optimizer {:.1f} MiB: {:.2f} bytes/parameter",
                     double(parameters) / 1048576.0, double(gradients) / 1048576.0,
                     double(optimizer) / 1048576.0, bytes_per_parameter());
}

MemoryReport memory_report(const ParameterSet& params, const AdamW& optimizer) {
  MemoryReport r;
  r.parameters = params.flat_values().nbytes();
  r.gradients = params.flat_grads().nbytes();
  r.optimizer = optimizer.state_bytes();
  r.numel = params.numel();
  return r;
}

}  // namespace temper
