// A whole training step of a tiny model on the GPU against the CPU: same Philox init on
// both backends, same packed batch; loss, every parameter gradient and the parameters
// after two AdamW steps. f32 on the GPU must agree within 1e-4 (whole-model reductions in
// another order), bf16 within 5e-2 (bf16 activations and gradients through two layers).
// Then deterministic mode: two runs give identical bits. Skipped without a GPU.
#include "gpu_fixture.h"

#include "data/loader.h"
#include "model/transformer.h"
#include "train/train_step.h"

namespace temper {
namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 300;
  c.hidden_size = 128;
  c.intermediate_size = 344;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 256;
  c.initializer_range = 0.05;
  return c;
}

MicroBatch packed_batch() {
  Rng rng(rng_stream(5, RngPurpose::Test, 1));
  BatchBuilder b(2, 96, 0);
  for (int len : {40, 70, 1, 33, 50}) {
    std::vector<int32_t> t(len);
    for (auto& x : t) x = int32_t(rng.below(300));
    Document d = causal_document(t);
    b.add_document(d.tokens, d.targets);
  }
  return b.finish();
}

class CudaTrainStep : public GpuTest {
 protected:
  struct Run {
    std::vector<float> grads, params;
    double loss;
  };
  Run train(Backend& b, DType dtype, int steps, bool deterministic) {
    b.set_deterministic(deterministic);
    Transformer m(tiny(), b, dtype);
    m.init_weights(7);
    MicroBatch batch = packed_batch();
    Run r;
    m.params().zero_grads();
    LossSum l = m.forward_backward(batch, 1.0f / float(batch.target_count()));
    r.loss = l.loss / double(l.tokens);
    r.grads = download(b, m.params().flat_grads());
    AdamW opt(m.params(), b, AdamWConfig{});
    for (int s = 0; s < steps; ++s) train_step(m, opt, {batch}, 1e-3f, 1.0);
    r.params = download(b, m.params().flat_values());
    return r;
  }
};

TEST_F(CudaTrainStep, MatchesCpuInF32AndBf16) {
  Run ref = train(*cpu_, DType::F32, 2, false);
  for (DType t : {DType::F32, DType::BF16}) {
    const double tol = t == DType::F32 ? 1e-4 : 5e-2;
    Run got = train(*gpu_, t, 2, false);
    EXPECT_NEAR(got.loss, ref.loss, tol * ref.loss) << dtype_name(t);
    EXPECT_LE(test::rel_error(got.grads, ref.grads), tol) << dtype_name(t) << " gradients";
    EXPECT_LE(test::rel_error(got.params, ref.params), tol) << dtype_name(t) << " parameters";
  }
}

TEST_F(CudaTrainStep, DeterministicModeGivesIdenticalBits) {
  for (DType t : {DType::F32, DType::BF16}) {
    Run a = train(*gpu_, t, 3, true), b = train(*gpu_, t, 3, true);
    EXPECT_EQ(a.loss, b.loss) << dtype_name(t);
    EXPECT_EQ(std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * 4), 0) << dtype_name(t);
    EXPECT_EQ(std::memcmp(a.params.data(), b.params.data(), a.params.size() * 4), 0) << dtype_name(t);
  }
}

}  // namespace
}  // namespace temper
