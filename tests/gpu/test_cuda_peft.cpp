// The PEFT ops and a LoRA / DoRA step on the GPU against the CPU (skipped without a GPU):
// dropout draws the CPU's mask bit for bit (also for a tensor-parallel column block, and
// accumulating), DoRA's row norms and rescale forward / backward, the accumulating GEMM,
// NF4 dequantization of a tensor-parallel shard,
// the activations of the soft-prompt encoders and bottleneck adapters (relu, tanh, silu),
// then a whole training step of a tiny model for DoRA with dropout, IA3, prompt tuning,
// P-tuning, prefix tuning (with projection and without) and bottleneck adapters: loss,
// every trained gradient and the parameters after two AdamW steps, in f32 (1e-4) and bf16
// (5e-2), as test_cuda_train_step does for full fine-tuning.
#include "gpu_fixture.h"

#include "data/loader.h"
#include "model/transformer.h"
#include "peft/nf4.h"
#include "train/train_step.h"

namespace temper {
namespace {

class CudaPeftOps : public GpuTest {};

TEST_F(CudaPeftOps, DropoutDrawsTheCpuMask) {
  const int64_t T = 37, C = 130, full = 2 * C;
  const RngStream s = rng_stream(3, RngPurpose::Dropout, 11);
  for (DType t : {DType::F32, DType::BF16}) {
    const std::vector<float> x = random(T * C, t), acc = random(T * C, t);
    for (int64_t col0 : {int64_t(0), C}) {  // the left and the right column block of [T, 2C]
      for (bool accumulate : {false, true}) {
        Tensor gx = gpu_with(t, x, {T, C}), gy = gpu_with(t, acc, {T, C});
        Tensor cx = cpu_with(x, {T, C}), cy = cpu_with(acc, {T, C});
        gpu_->dropout(gy, gx, 0.3f, s, 5000, full, col0, accumulate);
        cpu_->dropout(cy, cx, 0.3f, s, 5000, full, col0, accumulate);
        std::vector<float> want = download(*cpu_, cy);
        for (auto& v : want) v = round_to(t, v);
        const std::vector<float> got = download(*gpu_, gy);
        // The same entries are zero on both: the masks agree.
        for (size_t i = 0; i < got.size(); ++i)
          if (!accumulate) ASSERT_EQ(got[i] == 0.0f, want[i] == 0.0f) << i;
        expect_close(got, want, t, "dropout");
      }
    }
  }
}

TEST_F(CudaPeftOps, DoraRowNormsAndRescaleMatchTheCpu) {
  const int64_t T = 19, O = 70, I = 300;
  for (DType t : {DType::F32, DType::BF16}) {
    const std::vector<float> w = random(O * I, t), z = random(T * O, t), g = random(T * O, t);
    std::vector<float> m = random(O, t);
    for (auto& v : m) v = round_to(t, 2.0f + v);
    const std::vector<float> bias = random(O, t);
    Tensor gss = on_gpu(DType::F32, {O}), css = on_cpu(DType::F32, {O});
    gpu_->row_sum_squares(gss, gpu_with(t, w, {O, I}));
    cpu_->row_sum_squares(css, cpu_with(w, {O, I}));
    expect_close(download(*gpu_, gss), download(*cpu_, css), DType::F32, "row_sum_squares");
    Tensor gout = on_gpu(t, {T, O}), cout = on_cpu(DType::F32, {T, O});
    gpu_->dora_scale_forward(gout, gpu_with(t, z, {T, O}), gpu_with(t, m), gss, gpu_with(t, bias));
    cpu_->dora_scale_forward(cout, cpu_with(z, {T, O}), cpu_with(m), css, cpu_with(bias));
    expect_close(download(*gpu_, gout), download(*cpu_, cout), t, "dora_scale_forward");
    Tensor gdz = gpu_with(t, z, {T, O}), cdz = cpu_with(z, {T, O});  // accumulated into
    Tensor gdm = gpu_with(t, m), cdm = cpu_with(m);
    gpu_->dora_scale_backward(gdz, gdm, gpu_with(t, g, {T, O}), gpu_with(t, z, {T, O}), gpu_with(t, m), gss);
    cpu_->dora_scale_backward(cdz, cdm, cpu_with(g, {T, O}), cpu_with(z, {T, O}), cpu_with(m), css);
    expect_close(download(*gpu_, gdz), download(*cpu_, cdz), t, "dora dz");
    expect_close(download(*gpu_, gdm), download(*cpu_, cdm), t, "dora dmagnitude");
  }
}

TEST_F(CudaPeftOps, MatmulAddAccumulates) {
  const int64_t T = 33, O = 48, I = 16;
  for (DType t : {DType::F32, DType::BF16}) {
    const std::vector<float> x = random(T * I, t), w = random(O * I, t), out = random(T * O, t);
    Tensor g = gpu_with(t, out, {T, O}), c = cpu_with(out, {T, O});
    gpu_->matmul_add(g, gpu_with(t, x, {T, I}), gpu_with(t, w, {O, I}));
    cpu_->matmul_add(c, cpu_with(x, {T, I}), cpu_with(w, {O, I}));
    expect_close(download(*gpu_, g), download(*cpu_, c), t, "matmul_add");
  }
}

// NF4 (QLoRA): a double-quantized tensor-parallel shard (a block of columns of a larger
// tensor) dequantizes on the GPU to the CPU's values, in f32 and bf16.
TEST_F(CudaPeftOps, Nf4DequantizeMatchesTheCpu) {
  const int64_t R = 96, C = 256;
  const std::vector<float> w = random(R * C);
  for (bool dq : {false, true}) {
    const Nf4Tensor whole = nf4_quantize(w.data(), R * C, dq);
    for (DType t : {DType::F32, DType::BF16}) {
      std::vector<std::vector<float>> got;
      for (Backend* b : {cpu_.get(), gpu_.get()}) {
        ParameterSet ps(*b);
        ps.declare("w", Shape{R, C}, ParamInit::Normal, false, 1, 2, 1);  // columns [128, 256)
        ps[0].trainable = false;
        ps[0].quantized = true;
        ps[0].double_quant = dq;
        ps.allocate(b == cpu_.get() ? DType::F32 : t);
        set_nf4_parameter(*b, ps[0], whole);
        Arena a(b->memory(), "nf4 test");
        Tensor out = a.allocate(b == cpu_.get() ? DType::F32 : t, Shape{R, C / 2});
        b->nf4_dequantize(out, ps[0].nf4);
        got.push_back(download(*b, out));
      }
      for (auto& v : got[0]) v = round_to(t, v);
      expect_close(got[1], got[0], t, dq ? "nf4 double quantized" : "nf4");
    }
  }
}

TEST_F(CudaPeftOps, ActivationsMatchTheCpu) {
  const int64_t T = 29, C = 77;
  for (DType t : {DType::F32, DType::BF16})
    for (auto f : {Backend::Activation::Relu, Backend::Activation::Tanh, Backend::Activation::Silu}) {
      const std::vector<float> x = random(T * C, t), g = random(T * C, t), acc = random(T * C, t);
      Tensor gy = on_gpu(t, {T, C}), cy = on_cpu(DType::F32, {T, C});
      gpu_->activation_forward(gy, gpu_with(t, x, {T, C}), f);
      cpu_->activation_forward(cy, cpu_with(x, {T, C}), f);
      expect_close(download(*gpu_, gy), download(*cpu_, cy), t, "activation forward");
      Tensor gdx = gpu_with(t, acc, {T, C}), cdx = cpu_with(acc, {T, C});  // accumulated into
      gpu_->activation_backward(gdx, gpu_with(t, g, {T, C}), gpu_with(t, x, {T, C}), f);
      cpu_->activation_backward(cdx, cpu_with(g, {T, C}), cpu_with(x, {T, C}), f);
      expect_close(download(*gpu_, gdx), download(*cpu_, cdx), t, "activation backward");
    }
}

class CudaPeftStep : public GpuTest, public ::testing::WithParamInterface<std::string> {
 protected:
  struct Run {
    std::map<std::string, std::vector<float>> grads, after;
    double loss;
  };
  Run train(Backend& b, DType dtype) {
    ModelConfig c;
    c.vocab_size = 300;
    c.hidden_size = 128;
    c.intermediate_size = 344;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 256;
    c.initializer_range = 0.05;
    PeftSpec spec;
    const std::string method = GetParam();
    spec.method = method == "dora" ? PeftMethod::Lora
                  : method == "prefix_projection" || method == "p_tuning_v2" ? PeftMethod::PrefixTuning
                                                                             : peft_method_of(method);
    spec.lora.r = 8;
    spec.lora.alpha = 16;
    spec.lora.dora = true;
    spec.lora.dropout = 0.1;
    spec.lora.target_modules = {"all-linear"};
    spec.prompt = {5, "", method == "prefix_projection", 32};
    spec.bottleneck = {8, false};
    Transformer m(c, b, dtype, 1, {}, true, spec);
    m.init_weights(7);
    m.init_adapters(8);
    for (auto& p : m.params().all()) {  // B, up != 0 (the same on both backends): nonzero dA, ddown
      if (!p.name.ends_with("lora_B.weight") && !p.name.ends_with("adapter_up.weight")) continue;
      Rng draw(rng_stream(77, RngPurpose::Test, name_hash(p.name)));
      std::vector<float> v(size_t(p.shape.numel()));
      for (auto& x : v) x = round_to(dtype, 0.05f * draw.normal());
      upload(b, p.value, v);
    }
    m.set_dropout_seed(9);
    Rng rng(rng_stream(5, RngPurpose::Test, 1));
    BatchBuilder bb(2, 96, 0);
    for (int len : {40, 70, 1, 33, 50}) {
      std::vector<int32_t> t(len);
      for (auto& x : t) x = int32_t(rng.below(300));
      Document d = causal_document(t);
      bb.add_document(d.tokens, d.targets);
    }
    const MicroBatch batch = bb.finish();
    Run r;
    m.params().zero_grads();
    const LossSum l = m.forward_backward(batch, 1.0f / float(batch.target_count()));
    r.loss = l.loss / double(l.tokens);
    for (auto& p : m.params().all())
      if (p.trainable) r.grads[p.name] = download(b, p.grad);
    AdamW opt(m.params(), b, AdamWConfig{});
    for (int s = 0; s < 2; ++s) train_step(m, opt, {batch}, 1e-3f, 1.0);
    for (auto& p : m.params().all())
      if (p.trainable) r.after[p.name] = download(b, p.value);
    return r;
  }
};

TEST_P(CudaPeftStep, MatchesCpuInF32AndBf16) {
  const Run ref = train(*cpu_, DType::F32);
  for (DType t : {DType::F32, DType::BF16}) {
    const double tol = t == DType::F32 ? 1e-4 : 5e-2;
    const Run got = train(*gpu_, t);
    EXPECT_NEAR(got.loss, ref.loss, tol * ref.loss) << dtype_name(t);
    for (const auto& [name, g] : ref.grads) {
      EXPECT_LE(test::rel_error(got.grads.at(name), g), tol) << dtype_name(t) << " grad " << name;
      EXPECT_LE(test::rel_error(got.after.at(name), ref.after.at(name)), tol) << dtype_name(t) << " " << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, CudaPeftStep,
                         ::testing::Values("dora", "ia3", "prompt_tuning", "p_tuning", "prefix_projection",
                                           "p_tuning_v2", "adapter"));

}  // namespace
}  // namespace temper
