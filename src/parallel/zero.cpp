#include "parallel/zero.h"

#include <algorithm>
#include <tuple>
#include <fmt/format.h>

#include "core/error.h"

namespace temper {
namespace {

SumSquares sum_over_dp(Communicator& host, SumSquares s) {
  double v[2] = {s.sharded, s.replicated};
  all_reduce_sum_f64(host, v);
  return {v[0], v[1]};
}

}  // namespace

ZeroShards::ZeroShards(ParameterSet& params, Communicator& dp, Communicator* host)
    : params_(params), dp_(dp), host_(host ? *host : dp) {
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
  return sum_over_dp(host_, local);
}

void ZeroShards::all_gather_parameters() {
  Tensor all = params_.flat_values();
  dp_.all_gather(all, all.flat(begin_, end_ - begin_));
}

double MemoryReport::bytes_per_parameter() const {
  return numel ? double(parameters + gradients + optimizer) / double(numel) : 0.0;
}

std::string MemoryReport::str() const {
  std::string s = fmt::format(
      "parameters {:.1f} MiB, gradients {:.1f} MiB, optimizer {:.1f} MiB: {:.2f} bytes/parameter",
      double(parameters) / 1048576.0, double(gradients) / 1048576.0, double(optimizer) / 1048576.0,
      bytes_per_parameter());
  if (transient) s += fmt::format(" (+ {:.1f} MiB transient gradient buffers)", double(transient) / 1048576.0);
  return s;
}

MemoryReport memory_report(const ParameterSet& params, const AdamW& optimizer,
                           const ZeroGradientShards* zero2) {
  MemoryReport r;
  r.parameters = params.value_bytes();
  r.gradients = zero2 ? zero2->shard_bytes()
                      : (params.flat_grads().defined() ? params.flat_grads().nbytes() : 0);
  r.transient = zero2 ? zero2->transient_peak_bytes() : 0;
  r.optimizer = optimizer.state_bytes();
  r.numel = params.numel();
  return r;
}


ZeroGradientShards::ZeroGradientShards(ParameterSet& params, Communicator& dp, Backend& backend,
                                       const std::vector<std::pair<size_t, size_t>>& groups,
                                       Communicator* host)
    : params_(params), dp_(dp), host_(host ? *host : dp), backend_(backend), state_(backend.memory(), "zero2 shards"),
      pool_(backend.memory(), "zero2 transient gradients") {
  const int n = dp_.size(), r = dp_.rank();
  int64_t total = 0;
  for (auto [first, last] : groups) {
    Group g;
    g.first = first;
    g.last = last;
    // The group's trainable gradients are one contiguous run of the trainable region
    // (none when every parameter of the group is frozen: then it has no buffer at all).
    std::tie(g.offset, g.numel) = params_.trainable_range(first, last);
    g.shard = (g.numel + n - 1) / n;
    g.shard_offset = total;
    total += g.shard;
    groups_.push_back(g);
  }
  (void)r;
  shards_ = state_.allocate(params_.flat_values().dtype(), Shape{std::max<int64_t>(total, 1)});
  zero();
}

const ZeroGradientShards::Group& ZeroGradientShards::group_of(size_t first) const {
  for (const Group& g : groups_)
    if (g.first == first) return g;
  fail("ZeRO-2: no gradient group starts at parameter {}", first);
}

void ZeroGradientShards::zero() { backend_.zero(shards_); }

void ZeroGradientShards::bind(size_t first, size_t last) {
  const Group& g = group_of(first);
  TEMPER_CHECK(g.last == last, "ZeRO-2: group [{}, {}) bound as [{}, {})", g.first, g.last, first, last);
  if (g.numel == 0) return;  // all frozen: no gradients to hold
  bound_.emplace_back(first, pool_.mark());
  Tensor buffer = pool_.allocate(shards_.dtype(), Shape{g.shard * dp_.size()});  // padded
  backend_.zero(buffer);
  buffers_.push_back(buffer);
  params_.bind_grads(first, last, buffer);
}

void ZeroGradientShards::ready(size_t first, size_t last) {
  if (group_of(first).numel == 0) return;
  TEMPER_CHECK(!bound_.empty() && bound_.back().first == first,
               "ZeRO-2: group at parameter {} finished out of order", first);
  const Group& g = group_of(first);
  Tensor buffer = buffers_.back();
  // In place: this rank's slice of the buffer receives the sum over ranks.
  Tensor mine = buffer.flat(g.shard * dp_.rank(), g.shard);
  dp_.reduce_scatter(mine, buffer);
  Tensor acc = shards_.flat(g.shard_offset, g.shard);
  backend_.add(acc, acc, mine);
  pool_.release(bound_.back().second);
  bound_.pop_back();
  buffers_.pop_back();
  (void)last;
}

std::vector<AdamWSegment> ZeroGradientShards::segments() const {
  std::vector<AdamWSegment> out;
  const int64_t r = dp_.rank();
  for (const Group& g : groups_) {
    const int64_t lo = g.offset + r * g.shard, hi = lo + g.shard;  // flat elements owned
    for (size_t i = g.first; i < g.last; ++i) {
      const Parameter& p = params_[i];
      const int64_t b = std::max(lo, p.offset), e = std::min(hi, p.offset + p.shape.numel());
      if (b >= e || !p.trainable) continue;
      out.push_back({i, b - p.offset, e - p.offset,
                     shards_.flat(g.shard_offset + (b - lo), e - b)});
    }
  }
  return out;
}

SumSquares ZeroGradientShards::gradient_sum_squares() {
  SumSquares local;
  for (const AdamWSegment& s : segments()) {
    const double v = backend_.sum_squares(s.grad);
    (params_[s.param].split_dim >= 0 ? local.sharded : local.replicated) += v;
  }
  return sum_over_dp(host_, local);
}

void ZeroGradientShards::all_gather_parameters() {
  const Tensor values = params_.flat_values();
  const int64_t r = dp_.rank();
  for (const Group& g : groups_) {
    if (g.numel == 0) continue;
    Arena::Mark mark = pool_.mark();
    Tensor buffer = pool_.allocate(values.dtype(), Shape{g.shard * dp_.size()});
    // This rank's slice (the last one may run past the group: padding stays zero).
    Tensor mine = buffer.flat(r * g.shard, g.shard);
    backend_.zero(mine);
    const int64_t own = std::clamp<int64_t>(g.numel - r * g.shard, 0, g.shard);
    if (own > 0) backend_.copy(mine.flat(0, own), values.flat(g.offset + r * g.shard, own));
    dp_.all_gather(buffer, mine);
    backend_.copy(values.flat(g.offset, g.numel), buffer.flat(0, g.numel));
    pool_.release(mark);
  }
}

}  // namespace temper
