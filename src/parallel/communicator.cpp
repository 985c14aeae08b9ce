#include "parallel/communicator.h"

#include <vector>

namespace temper {

uint64_t CommBytes::total() const {
  uint64_t t = 0;
  for (const auto& [op, n] : by_op) t += n;
  return t;
}

void all_reduce_sum_f64(Communicator& comm, std::span<double> values) {
  if (comm.size() == 1 || values.empty()) return;
  // Each value travels as an f32 part plus the f32 remainder through the f32 all-reduce.
  std::vector<float> parts(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    parts[2 * i] = float(values[i]);
    parts[2 * i + 1] = float(values[i] - double(parts[2 * i]));
  }
  comm.all_reduce(Tensor(parts.data(), DType::F32, Shape{int64_t(parts.size())}), ReduceOp::Sum);
  for (size_t i = 0; i < values.size(); ++i) values[i] = double(parts[2 * i]) + double(parts[2 * i + 1]);
}

}  // namespace temper
