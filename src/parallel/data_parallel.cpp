#include "parallel/data_parallel.h"

#include "core/error.h"

namespace temper {

GradientBuckets::GradientBuckets(ParameterSet& params, Communicator& dp, double bucket_mb)
    : params_(params), dp_(dp), bucket_of_(params.size(), -1) {
  const size_t limit = size_t(bucket_mb * 1024.0 * 1024.0);
  const Tensor flat = params_.flat_grads();
  const size_t elem = dtype_size(flat.dtype());
  // Walk in backward order; a full bucket closes the current one. Frozen parameters have
  // no gradient and are not in the trainable region, so the trainable ones around them
  // are adjacent there.
  int64_t lo = -1, hi = -1;  // element range [lo, hi) of the open bucket
  auto close = [&] {
    if (lo < 0) return;
    buckets_.back().grads = flat.flat(lo, hi - lo);
    lo = hi = -1;
  };
  for (size_t i = params_.size(); i-- > 0;) {
    const Parameter& p = params_[i];
    if (!p.trainable) continue;
    if (lo >= 0 && size_t(hi - lo) * elem >= limit) close();
    if (lo < 0) {
      buckets_.emplace_back();
      hi = p.offset + p.shape.numel();
    }
    TEMPER_CHECK(p.offset + p.shape.numel() == (lo < 0 ? hi : lo), "parameter {} not contiguous",
                 p.name);
    lo = p.offset;
    buckets_.back().params++;
    bucket_of_[i] = int(buckets_.size() - 1);
  }
  close();
  for (auto& b : buckets_) b.pending = b.params;
}

void GradientBuckets::launch(Bucket& b) {
  b.work = dp_.all_reduce_async(b.grads, ReduceOp::Sum);
}

void GradientBuckets::ready(size_t first, size_t last) {
  for (size_t i = first; i < last; ++i) {
    const int k = bucket_of_[i];
    if (k < 0) continue;
    Bucket& b = buckets_[size_t(k)];
    TEMPER_CHECK(b.pending > 0, "gradient of {} reported ready twice", params_[i].name);
    if (--b.pending == 0) launch(b);
  }
}

void GradientBuckets::finish() {
  for (auto& b : buckets_) {
    if (!b.work) launch(b);  // e.g. a parameter the hook never reported
    b.work->wait();
    b.work.reset();
    b.pending = b.params;
  }
}

}  // namespace temper
