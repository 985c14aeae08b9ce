// Data parallelism: gradients are summed over the dp group in buckets, each launched
// (async) as soon as backward has produced every gradient in it, so communication
// overlaps the rest of backward. Buckets hold consecutive trainable parameters taken in
// backward order (last declared first), each about `bucket_mb` of gradient bytes, and are
// contiguous slices of the flat gradient buffer. Sum, not mean: the loss is already
// normalised by the target tokens of the whole global batch.
#pragma once
#include <memory>
#include <vector>

#include "model/parameters.h"
#include "parallel/communicator.h"

namespace temper {

class GradientBuckets {
 public:
  GradientBuckets(ParameterSet& params, Communicator& dp, double bucket_mb);
  // Backward finished the gradients of parameters [first, last): launch full buckets.
  void ready(size_t first, size_t last);
  // Launches whatever is still pending and waits for every bucket.
  void finish();
  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket {
    Tensor grads;          // slice of the flat gradient buffer
    size_t params = 0;     // how many parameters it holds
    size_t pending = 0;    // not yet ready this step
    std::unique_ptr<Work> work;
  };
  void launch(Bucket& b);
  ParameterSet& params_;
  Communicator& dp_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;  // parameter index -> bucket (-1: frozen)
};

}  // namespace temper
