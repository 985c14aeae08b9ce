#include "peft/merge.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace temper {
namespace {

// IA3: W[o, :] ·= l[o] and b[o] ·= l[o] (output scale), or W[:, i] ·= l[i] (input scale).
void merge_ia3(Backend& be, const ParameterSet& from, ParameterSet& to, const Projection& unit) {
  Parameter& w = to.at(from[unit.weight()].name);
  const int64_t O = w.shape[0], I = w.shape[1];
  Arena scratch(be.memory(), "merge ia3");
  auto host = [&](Tensor t) {  // f32 host copy of any float tensor
    Tensor f = scratch.allocate(DType::F32, t.shape());
    be.copy(f, t);
    std::vector<float> v(size_t(t.numel()));
    be.copy_to_host(v.data(), f);
    return v;
  };
  auto put = [&](Tensor t, const std::vector<float>& v) {
    Tensor f = scratch.allocate(DType::F32, t.shape());
    be.copy_from_host(f, v.data());
    be.copy(t, f);
  };
  std::vector<float> W = host(w.value);
  const std::vector<float> l = host(from[unit.ia3().scale].value);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i) W[size_t(o * I + i)] *= unit.ia3().feedforward ? l[size_t(i)] : l[size_t(o)];
  put(w.value, W);
  if (!unit.ia3().feedforward && unit.bias() != kNoParam) {
    Parameter& b = to.at(from[unit.bias()].name);
    std::vector<float> bias = host(b.value);
    for (int64_t o = 0; o < O; ++o) bias[size_t(o)] *= l[size_t(o)];
    put(b.value, bias);
  }
  be.synchronize();
}

}  // namespace

void merge_adapters(Transformer& adapted, Transformer& plain) {
  const PeftMethod method = adapted.peft().method;
  if (method != PeftMethod::Lora && method != PeftMethod::Ia3 && method != PeftMethod::Full &&
      method != PeftMethod::Partial)
    fail("peft.method {} cannot be merged into the base weights: {}; use its adapter directory "
         "(`temper export --to peft`) with the base model", peft_method_name(method),
         method == PeftMethod::Adapter ? "its bottleneck layers add computation the base model does not have"
                                       : "its virtual tokens or prefix are inputs, not weights");
  Backend& be = adapted.backend();
  ParameterSet& from = adapted.params();
  for (Parameter& p : plain.params().all()) {
    const Parameter& src = from.at(p.name);
    TEMPER_CHECK(src.shards == 1 && p.shape == src.shape && p.value.dtype() == from.dtype(),
                 "merge: {} differs between the adapted and the plain model", p.name);
    if (src.quantized) be.nf4_dequantize(p.value, src.nf4);  // QLoRA: onto the dequantized base
    else be.copy(p.value, src.value);
  }
  Arena scratch(be.memory(), "merge");
  for (int64_t l = 0; l < adapted.config().num_hidden_layers; ++l)
    for (int s = 0; s < 7; ++s) {
      const Projection& unit = kProjectionSites[s].column_parallel
                                   ? static_cast<const Projection&>(adapted.column_projection(l, s))
                                   : static_cast<const Projection&>(adapted.row_projection(l, s));
      if (unit.ia3().defined()) {
        merge_ia3(be, from, plain.params(), unit);
        continue;
      }
      const LoraAttachment& lora = unit.lora();
      if (!lora.defined()) continue;
      Tensor W = plain.params().at(from[unit.weight()].name).value;  // [O, I] = W0 now
      const Tensor A = from[lora.A].value, B = from[lora.B].value;    // [r, I], [O, r]
      Arena::Mark mark = scratch.mark();
      Tensor sB = scratch.allocate(B.dtype(), B.shape());
      be.copy(sB, B);
      be.scale(sB, lora.scale);
      be.linear_backward(W, Tensor{}, Tensor{}, sB, Tensor{}, A);  // W += s·B·A
      if (lora.dora()) {  // each row times m / its norm
        const int64_t O = W.size(0), I = W.size(1);
        Tensor sumsq = scratch.allocate(DType::F32, Shape{O});
        Tensor w32 = scratch.allocate(DType::F32, W.shape()), m32 = scratch.allocate(DType::F32, Shape{O});
        be.row_sum_squares(sumsq, W);
        be.copy(w32, W);
        be.copy(m32, from[lora.magnitude].value);
        std::vector<float> w(static_cast<size_t>(O * I)), m(static_cast<size_t>(O)), ss(static_cast<size_t>(O));
        be.copy_to_host(w.data(), w32);
        be.copy_to_host(m.data(), m32);
        be.copy_to_host(ss.data(), sumsq);
        for (int64_t o = 0; o < O; ++o) {
          const float c = m[size_t(o)] / std::sqrt(ss[size_t(o)]);
          for (int64_t i = 0; i < I; ++i) w[size_t(o * I + i)] *= c;
        }
        be.copy_from_host(w32, w.data());
        be.copy(W, w32);
      }
      be.synchronize();
      scratch.release(mark);
    }
}

}  // namespace temper
