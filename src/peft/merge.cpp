#include "peft/merge.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace temper {

void merge_adapters(Transformer& adapted, Transformer& plain) {
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
