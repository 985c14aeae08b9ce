#include "kernels/profiling_backend.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"

namespace temper {

// Brackets one forwarded call with the clock; the key is built only when profiling is on.
class ProfilingBackend::Scope {
 public:
  Scope(ProfilingBackend& p, const char* op, Gemm gemm = {}) : p_(p) {
    if (!p_.enabled_) return;
    p_.pending_.push_back(p_.key_index(op, gemm));
    p_.clock_->start();
    active_ = true;
  }
  ~Scope() {
    if (active_) p_.clock_->stop();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  ProfilingBackend& p_;
  bool active_ = false;
};

namespace {

// x[tokens, in] (any leading dims folded into tokens) times a weight [out, in].
int64_t rows_of(const Tensor& x) { return x.ndim() == 0 ? 0 : x.numel() / x.size(-1); }

}  // namespace

ProfilingBackend::ProfilingBackend(Backend& inner) : inner_(inner), clock_(inner.make_op_clock()) {
  set_deterministic(inner.deterministic());
}

int ProfilingBackend::key_index(const char* op, const Gemm& g) {
  auto key = std::make_tuple(std::string(op), g.tokens, g.in, g.out, g.products);
  auto it = keys_.find(key);
  if (it != keys_.end()) return it->second;
  OpProfileRow row;
  row.op = op;
  if (g.products > 0) row.shape = fmt::format("{}×{} → {}", g.tokens, g.in, g.out);
  totals_.push_back(row);
  keys_.emplace(std::move(key), int(totals_.size() - 1));
  return int(totals_.size() - 1);
}

void ProfilingBackend::end_step() {
  inner_.synchronize();
  const std::vector<double> seconds = clock_->take_seconds();
  if (seconds.size() != pending_.size())
    fail("bench --profile: {} timed intervals for {} ops", seconds.size(), pending_.size());
  for (size_t i = 0; i < seconds.size(); ++i) {
    OpProfileRow& row = totals_[size_t(pending_[i])];
    row.calls += 1;
    row.seconds += seconds[i];
  }
  pending_.clear();
  ++steps_;
}

std::vector<OpProfileRow> ProfilingBackend::rows() const {
  std::vector<OpProfileRow> out;
  for (const auto& [key, index] : keys_) {
    OpProfileRow row = totals_[size_t(index)];
    if (row.calls == 0) continue;
    // 2 FLOPs per multiply-add: 2·tokens·in·out per product.
    row.flops = 2.0 * double(std::get<1>(key)) * double(std::get<2>(key)) *
                double(std::get<3>(key)) * std::get<4>(key) * double(row.calls);
    out.push_back(row);
  }
  std::sort(out.begin(), out.end(),
            [](const OpProfileRow& a, const OpProfileRow& b) { return a.seconds > b.seconds; });
  return out;
}

// ---- forwarding ------------------------------------------------------------------------

void ProfilingBackend::copy_from_host(Tensor dst, const void* src) {
  Scope s(*this, "copy_from_host");
  inner_.copy_from_host(dst, src);
}
void ProfilingBackend::copy_to_host(void* dst, Tensor src) {
  Scope s(*this, "copy_to_host");
  inner_.copy_to_host(dst, src);
}
void ProfilingBackend::copy(Tensor dst, Tensor src) {
  Scope s(*this, "copy");
  inner_.copy(dst, src);
}
void ProfilingBackend::zero(Tensor t) {
  Scope s(*this, "zero");
  inner_.zero(t);
}
void ProfilingBackend::fill(Tensor t, float value) {
  Scope s(*this, "fill");
  inner_.fill(t, value);
}
void ProfilingBackend::fill_normal(Tensor t, const RngStream& stream, uint64_t offset, float std) {
  Scope s(*this, "fill_normal");
  inner_.fill_normal(t, stream, offset, std);
}
void ProfilingBackend::add(Tensor out, Tensor a, Tensor b) {
  Scope s(*this, "add");
  inner_.add(out, a, b);
}
void ProfilingBackend::scale(Tensor x, float v) {
  Scope s(*this, "scale");
  inner_.scale(x, v);
}
double ProfilingBackend::sum_squares(Tensor x) {
  Scope s(*this, "sum_squares");
  return inner_.sum_squares(x);
}
void ProfilingBackend::embedding_forward(Tensor out, Tensor ids, Tensor table) {
  Scope s(*this, "embedding_forward");
  inner_.embedding_forward(out, ids, table);
}
void ProfilingBackend::embedding_backward(Tensor dtable, Tensor dout, Tensor ids) {
  Scope s(*this, "embedding_backward");
  inner_.embedding_backward(dtable, dout, ids);
}
void ProfilingBackend::rmsnorm_forward(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
  Scope s(*this, "rmsnorm_forward");
  inner_.rmsnorm_forward(out, rstd, x, weight, eps);
}
void ProfilingBackend::rmsnorm_backward(Tensor dx, Tensor dweight, Tensor dout, Tensor x,
                                        Tensor weight, Tensor rstd) {
  Scope s(*this, "rmsnorm_backward");
  inner_.rmsnorm_backward(dx, dweight, dout, x, weight, rstd);
}
void ProfilingBackend::linear_forward(Tensor out, Tensor x, Tensor weight, Tensor bias) {
  Scope s(*this, "linear_forward", Gemm{rows_of(x), weight.size(1), weight.size(0), 1});
  inner_.linear_forward(out, x, weight, bias);
}
void ProfilingBackend::linear_backward(Tensor dx, Tensor dweight, Tensor dbias, Tensor dout,
                                       Tensor x, Tensor weight) {
  const int products = int(dx.defined()) + int(dweight.defined());
  Scope s(*this, "linear_backward", Gemm{rows_of(x), weight.size(1), weight.size(0), products});
  inner_.linear_backward(dx, dweight, dbias, dout, x, weight);
}
void ProfilingBackend::matmul_add(Tensor out, Tensor x, Tensor weight) {
  Scope s(*this, "matmul_add", Gemm{rows_of(x), weight.size(1), weight.size(0), 1});
  inner_.matmul_add(out, x, weight);
}
void ProfilingBackend::dropout(Tensor out, Tensor x, float p, const RngStream& stream,
                               uint64_t offset, int64_t full_cols, int64_t col0, bool accumulate) {
  Scope s(*this, "dropout");
  inner_.dropout(out, x, p, stream, offset, full_cols, col0, accumulate);
}
void ProfilingBackend::row_sum_squares(Tensor sumsq, Tensor w) {
  Scope s(*this, "row_sum_squares");
  inner_.row_sum_squares(sumsq, w);
}
void ProfilingBackend::dora_scale_forward(Tensor out, Tensor z, Tensor magnitude, Tensor sumsq,
                                          Tensor bias) {
  Scope s(*this, "dora_scale_forward");
  inner_.dora_scale_forward(out, z, magnitude, sumsq, bias);
}
void ProfilingBackend::dora_scale_backward(Tensor dz, Tensor dmagnitude, Tensor dout, Tensor z,
                                           Tensor magnitude, Tensor sumsq) {
  Scope s(*this, "dora_scale_backward");
  inner_.dora_scale_backward(dz, dmagnitude, dout, z, magnitude, sumsq);
}
void ProfilingBackend::activation_forward(Tensor out, Tensor x, Activation f) {
  Scope s(*this, "activation_forward");
  inner_.activation_forward(out, x, f);
}
void ProfilingBackend::activation_backward(Tensor dx, Tensor dout, Tensor x, Activation f) {
  Scope s(*this, "activation_backward");
  inner_.activation_backward(dx, dout, x, f);
}
void ProfilingBackend::nf4_dequantize(Tensor out, const Nf4Weight& w) {
  Scope s(*this, "nf4_dequantize");
  inner_.nf4_dequantize(out, w);
}
void ProfilingBackend::rope_forward(Tensor x, Tensor positions, Tensor cos, Tensor sin) {
  Scope s(*this, "rope_forward");
  inner_.rope_forward(x, positions, cos, sin);
}
void ProfilingBackend::rope_backward(Tensor dx, Tensor positions, Tensor cos, Tensor sin) {
  Scope s(*this, "rope_backward");
  inner_.rope_backward(dx, positions, cos, sin);
}
void ProfilingBackend::attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v,
                                         Tensor cu_seqlens, int window, Tensor prefix_k,
                                         Tensor prefix_v) {
  Scope s(*this, "attention_forward");
  inner_.attention_forward(out, lse, q, k, v, cu_seqlens, window, prefix_k, prefix_v);
}
void ProfilingBackend::attention_backward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor q,
                                          Tensor k, Tensor v, Tensor out, Tensor lse,
                                          Tensor cu_seqlens, int window, Tensor prefix_k,
                                          Tensor prefix_v, Tensor dprefix_k, Tensor dprefix_v) {
  Scope s(*this, "attention_backward");
  inner_.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, cu_seqlens, window, prefix_k,
                            prefix_v, dprefix_k, dprefix_v);
}
void ProfilingBackend::swiglu_forward(Tensor out, Tensor gate, Tensor up) {
  Scope s(*this, "swiglu_forward");
  inner_.swiglu_forward(out, gate, up);
}
void ProfilingBackend::swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate,
                                       Tensor up) {
  Scope s(*this, "swiglu_backward");
  inner_.swiglu_backward(dgate, dup, dout, gate, up);
}
LossSum ProfilingBackend::lm_head_cross_entropy(Tensor dx, Tensor dweight, Tensor x, Tensor weight,
                                                Tensor targets, float grad_scale, int64_t chunk) {
  // The logits product, then one per gradient asked for.
  const int products = 1 + int(dx.defined()) + int(dweight.defined());
  Scope s(*this, "lm_head_cross_entropy",
          Gemm{rows_of(x), weight.size(1), weight.size(0), products});
  return inner_.lm_head_cross_entropy(dx, dweight, x, weight, targets, grad_scale, chunk);
}
void ProfilingBackend::cross_entropy_partials(Tensor stats, Tensor logits, Tensor targets,
                                              int64_t vocab_start) {
  Scope s(*this, "cross_entropy_partials");
  inner_.cross_entropy_partials(stats, logits, targets, vocab_start);
}
void ProfilingBackend::cross_entropy_combine(Tensor loss, Tensor logits, Tensor stats_all,
                                             Tensor targets, int64_t vocab_start,
                                             float grad_scale, bool want_grad) {
  Scope s(*this, "cross_entropy_combine");
  inner_.cross_entropy_combine(loss, logits, stats_all, targets, vocab_start, grad_scale,
                               want_grad);
}
void ProfilingBackend::adamw_update(Tensor master, Tensor param, Tensor grad, Tensor m, Tensor v,
                                    const AdamWStep& hp) {
  Scope s(*this, "adamw_update");
  inner_.adamw_update(master, param, grad, m, v, hp);
}

}  // namespace temper
