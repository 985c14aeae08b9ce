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

SumSquares ZeroShards::gradient_sum_squares(Backend& backend) {
  SumSquares local = temper::gradient_sum_squares(params_, backend, begin_, end_);
  // f64 values travel as f32 (value, remainder) pairs through the f32 all-reduce.
  float parts[4];
  const double v[2] = {local.sharded, local.replicated};
  for (int i = 0; i < 2; ++i) {
    parts[2 * i] = float(v[i]);
    parts[2 * i + 1] = float(v[i] - double(parts[2 * i]));
  }
  dp_.all_reduce(Tensor(parts, DType::F32, Shape{4}), ReduceOp::Sum);
  return {double(parts[0]) + double(parts[1]), double(parts[2]) + double(parts[3])};
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
