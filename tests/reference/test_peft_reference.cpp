// LoRA, rsLoRA, DoRA, IA3 and the soft prompts against Hugging Face PEFT 0.13.2, and the
// bottleneck adapters against AdapterHub adapters 1.0.1 (tests/reference/adapterhub_reference.py) on transformers' own model classes
// (tests/reference/peft_reference.py), live, on the same weights and batches:
//   - logits, loss and the gradient of every trainable parameter (float64 autograd there),
//     also with dropout (PEFT's dropout replaced by the masks we draw);
//   - five AdamW steps from the same adapter: the loss trajectory and the final adapters;
//   - files both ways: PeftModel.from_pretrained loads the adapter we write and gives our
//     logits; an adapter PEFT saved loads here and gives PEFT's logits;
//   - merge: transformers on our merged model gives the unmerged PeftModel's logits.
// Models: a tiny Llama (GQA, untied head) and a tiny Qwen2 (q/k/v biases, tied head, MQA),
// on packed documents (the reference runs each document alone).
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "io/hf_model.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "peft/adapter_files.h"
#include "peft/merge.h"
#include "support/test_util.h"
#include "train/train_step.h"

namespace temper {
namespace {

constexpr double kFp32Bound = 1e-4;  // fp32 here against float64 there (norm-wise relative)

ModelConfig tiny(const std::string& type) {
  ModelConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  if (type == "qwen2") {
    c.model_type = "qwen2";
    c.num_key_value_heads = 1;
    c.tie_word_embeddings = true;
  }
  return c;
}

PeftSpec spec_of(const std::string& variant, const ModelConfig& c) {
  PeftSpec s;
  // Soft prompts: 3 virtual tokens, encoders 16 wide.
  s.prompt = {3, "", variant == "prefix_projection", 16};
  if (variant == "prompt_tuning") s.method = PeftMethod::PromptTuning;
  if (variant == "p_tuning") s.method = PeftMethod::PTuning;
  if (variant.starts_with("prefix")) s.method = PeftMethod::PrefixTuning;
  if (s.method != PeftMethod::Full) return s;
  s.method = variant == "ia3" ? PeftMethod::Ia3 : PeftMethod::Lora;  // IA3: PEFT's default targets
  s.lora.r = 4;
  s.lora.alpha = 8.0;
  s.lora.target_modules = {"all-linear"};
  if (variant.ends_with("_dropout")) s.lora.dropout = 0.25;
  if (variant == "rslora") {
    s.lora.rslora = true;
    s.lora.target_modules = {"q_proj", "v_proj", "down_proj"};
    s.lora.layers = {1};
  }
  s.lora.dora = variant.starts_with("dora");
  if (!c.tie_word_embeddings) s.modules_to_save = {"lm_head"};
  return s;
}


void add_batch(SafetensorsFile& f, int k, const MicroBatch& b) {
  const std::string p = fmt::format("batch.{}.", k);
  const int64_t T = b.tokens();
  f.tensors[p + "ids"] = safetensors_i32(b.ids, {T});
  f.tensors[p + "targets"] = safetensors_i32(b.targets, {T});
  f.tensors[p + "positions"] = safetensors_i32(b.positions, {T});
  f.tensors[p + "cu_seqlens"] = safetensors_i32(b.cu_seqlens, {int64_t(b.cu_seqlens.size())});
}

void check_close(const std::vector<float>& ours, const std::vector<float>& ref, double bound,
                 const std::string& what) {
  ASSERT_EQ(ours.size(), ref.size()) << what;
  const double err = test::rel_error(ours, ref);
  EXPECT_LE(err, bound) << what << ": relative error " << err;
}

// A model whose adapters change its output: random base, B != 0, magnitudes off the norms.
std::unique_ptr<Transformer> adapted_model(Backend& cpu, const ModelConfig& c, const PeftSpec& s) {
  auto m = std::make_unique<Transformer>(c, cpu, DType::F32, 1, TensorParallel{}, true, s);
  test::randomize_parameters(m->params(), cpu, 42, 0.2f, 0.1f, 0.1f);
  m->init_adapters(3);  // A drawn, B = 0, m = row norms ...
  for (auto& p : m->params().all()) {  // ... then moved off the no-op start
    if (p.init != ParamInit::Adapter) continue;
    std::vector<float> v = test::to_host(cpu, p.value);
    Rng rng(rng_stream(9, RngPurpose::Test, name_hash(p.name)));
    const bool magnitude = p.name.ends_with("magnitude_vector");
    for (auto& x : v) x = magnitude ? x * (1.0f + 0.1f * rng.normal()) : x + 0.2f * rng.normal();
    cpu.copy_from_host(p.value, v.data());
  }
  return m;
}

std::string json_of(const PeftSpec& s) { return peft_spec_to_json(s).dump(); }

// The dropout masks our forward_backward draws for micro-batch `index` of the run keyed by
// `seed`, one [T, in] 0/1 tensor per adapted projection ("mask.<module path>"), computed
// from the documented rule (kernels/backend.h dropout): PEFT's dropout is replaced by
// them, so both sides drop the same entries.
void add_dropout_masks(SafetensorsFile& f, const Transformer& m, const MicroBatch& b, uint64_t seed,
                       uint64_t index) {
  const float p = float(m.peft().lora.dropout);
  const int64_t T = b.tokens();
  for (const auto& param : m.params().all()) {
    if (!param.name.ends_with(".lora_A.weight")) continue;
    const std::string path = param.name.substr(0, param.name.size() - std::string(".lora_A.weight").size());
    const int64_t I = param.full_shape[1];
    const RngStream s = rng_stream(seed, RngPurpose::Dropout, name_hash(path));
    std::vector<float> mask(size_t(T * I));
    for (int64_t i = 0; i < T * I; ++i) mask[size_t(i)] = s.uniform(index * uint64_t(T * I) + uint64_t(i)) > p;
    f.tensors["mask." + path] = safetensors_f32(mask, {T, I});
  }
}

std::vector<float> run_reference(const std::vector<std::string>& args, const std::string& dir,
                                 const std::string& tensor, SafetensorsFile* out = nullptr,
                                 const char* script = "reference/peft_reference.py") {
  std::string log;
  std::vector<std::string> full = args;
  full.push_back(dir + "/out.safetensors");
  const int status = test::run_python(script, full, &log);
  EXPECT_EQ(status, 0) << log;
  if (status != 0) return {};
  SafetensorsFile f = read_safetensors(dir + "/out.safetensors");
  std::vector<float> v = f.at(tensor).to_f32();
  if (out) *out = std::move(f);
  return v;
}

class PeftReference : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(PeftReference, OutputsGradientsAndTrainingEqualPeft) {
  const auto& [type, variant] = GetParam();
  auto cpu = make_backend("cpu");
  const ModelConfig c = tiny(type);
  const PeftSpec spec = spec_of(variant, c);
  std::unique_ptr<Transformer> m = adapted_model(*cpu, c, spec);
  const std::vector<MicroBatch> batches = {test::packed_batch(c.vocab_size, 3), test::packed_batch(c.vocab_size, 4)};
  const float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  const double max_norm = type == "qwen2" ? 0.5 : 0.0;  // clipping active on one of them
  const bool dropout = spec.lora.dropout > 0;
  const int steps = dropout ? 0 : 5;  // with dropout: outputs and gradients under one mask
  m->set_dropout_seed(77);
  m->set_micro_batch_index(0);

  SafetensorsFile in;
  in.metadata = {{"config", model_config_to_hf_json(m->config()).dump()},
                 {"peft", json_of(spec)},
                 {"train", nlohmann::json{{"lr", lr}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps},
                                          {"weight_decay", wd}, {"steps", steps},
                                          {"max_grad_norm", max_norm}}.dump()}};
  std::map<std::string, std::vector<float>> initial;
  for (auto& p : m->params().all()) {
    initial[p.name] = test::to_host(*cpu, p.value);
    in.tensors[p.name] = safetensors_f32(initial[p.name], std::vector<int64_t>(
        p.full_shape.dims.begin(), p.full_shape.dims.begin() + p.full_shape.ndim));
  }
  for (size_t k = 0; k < batches.size(); ++k) add_batch(in, int(k), batches[k]);
  if (dropout) add_dropout_masks(in, *m, batches[0], 77, 0);
  const std::string dir = test::temp_dir("peft_reference_" + type + "_" + variant).string();
  write_safetensors(dir + "/in.safetensors", in);
  SafetensorsFile ref;
  const std::vector<float> ref_logits = run_reference({"lora", dir + "/in.safetensors"}, dir, "logits", &ref);
  ASSERT_FALSE(ref_logits.empty());

  const MicroBatch& b = batches[0];
  if (!dropout) check_close(m->logits(b), ref_logits, kFp32Bound, "logits");  // (logits: no dropout)
  m->params().zero_grads();
  const LossSum loss = m->forward_backward(b, 1.0f / float(b.target_count()));
  const double ref_loss = ref.at("loss").to_f32()[0];
  EXPECT_NEAR(loss.loss / double(loss.tokens), ref_loss, kFp32Bound * std::abs(ref_loss));
  int trainable = 0;
  for (auto& p : m->params().all()) {
    if (!p.trainable) continue;
    ++trainable;
    check_close(test::to_host(*cpu, p.grad), ref.at("grad." + p.name).to_f32(), kFp32Bound, "grad " + p.name);
  }
  // Every tensor PEFT trains is one we train (and the reverse).
  int theirs = 0;
  for (const auto& [name, e] : ref.tensors) theirs += name.starts_with("grad.");
  EXPECT_EQ(trainable, theirs);

  AdamW opt(m->params(), *cpu, AdamWConfig{beta1, beta2, eps, wd, false});
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s)
    losses.push_back(float(train_step(*m, opt, {batches[size_t(s) % batches.size()]}, lr, max_norm).loss));
  check_close(losses, ref.at("train.losses").to_f32(), kFp32Bound, "training losses");
  for (auto& p : m->params().all()) {
    if (!p.trainable) continue;
    // The updates (after − before), so the bound is not diluted by the unchanged part.
    std::vector<float> ours = test::to_host(*cpu, p.value), after = ref.at("train." + p.name).to_f32();
    for (size_t i = 0; i < ours.size(); ++i) {
      ours[i] -= initial[p.name][i];
      after[i] -= initial[p.name][i];
    }
    check_close(ours, after, 1e-3, "update of " + p.name);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, PeftReference,
    ::testing::Values(std::pair{std::string("llama"), std::string("lora")},
                      std::pair{std::string("llama"), std::string("rslora")},
                      std::pair{std::string("llama"), std::string("dora")},
                      std::pair{std::string("qwen2"), std::string("lora")},
                      std::pair{std::string("qwen2"), std::string("rslora")},
                      std::pair{std::string("qwen2"), std::string("dora")},
                      std::pair{std::string("llama"), std::string("ia3")},
                      std::pair{std::string("qwen2"), std::string("ia3")},
                      std::pair{std::string("llama"), std::string("lora_dropout")},
                      std::pair{std::string("qwen2"), std::string("dora_dropout")}),
    [](const auto& info) { return info.param.first + "_" + info.param.second; });

// Documents that each start at position 0 (PEFT ignores position ids with soft prompts):
// two rows of 12, [5, 6, pad] and [4, 3, 4, pad].
MicroBatch whole_documents_batch(int64_t vocab, uint64_t seed) {
  Rng rng(rng_stream(seed, RngPurpose::Test, 11));
  BatchBuilder b(2, 12, 0);
  for (int len : {5, 6, -1, 4, 3, 4}) {
    if (len < 0) {
      b.finish_row();
      continue;
    }
    std::vector<int32_t> tokens(size_t(len), 0);
    for (auto& t : tokens) t = int32_t(rng.below(uint64_t(vocab)));
    Document d = causal_document(tokens);
    b.add_document(d.tokens, d.targets);
  }
  return b.finish();
}

// The reference's input: every parameter of `m` by our names, its config and spec, batch 0.
void write_reference_input(Transformer& m, const PeftSpec& spec, const MicroBatch& b, const std::string& file) {
  SafetensorsFile in;
  in.metadata = {{"config", model_config_to_hf_json(m.config()).dump()}, {"peft", json_of(spec)}};
  for (auto& p : m.params().all())
    in.tensors[p.name] = safetensors_f32(test::to_host(m.backend(), p.value), std::vector<int64_t>(
        p.full_shape.dims.begin(), p.full_shape.dims.begin() + p.full_shape.ndim));
  add_batch(in, 0, b);
  write_safetensors(file, in);
}

// Our logits, loss and every trained gradient on `b` against the reference's `ref`; the
// reference must compute a gradient for exactly the parameters we train. Returns how many.
int expect_outputs_and_gradients(Transformer& m, const MicroBatch& b, const std::vector<float>& ref_logits,
                                 const SafetensorsFile& ref) {
  check_close(m.logits(b), ref_logits, kFp32Bound, "logits");
  m.params().zero_grads();
  const LossSum loss = m.forward_backward(b, 1.0f / float(b.target_count()));
  const double ref_loss = ref.at("loss").to_f32()[0];
  EXPECT_NEAR(loss.loss / double(loss.tokens), ref_loss, kFp32Bound * std::abs(ref_loss));
  int trainable = 0, theirs = 0;
  for (auto& p : m.params().all()) {
    if (!p.trainable) continue;
    ++trainable;
    check_close(test::to_host(m.backend(), p.grad), ref.at("grad." + p.name).to_f32(), kFp32Bound, "grad " + p.name);
  }
  for (const auto& [name, e] : ref.tensors) theirs += name.starts_with("grad.");
  EXPECT_EQ(trainable, theirs);
  return trainable;
}

// Prompt tuning, P-tuning and prefix tuning (with PEFT's projection, and without: P-tuning
// v2): the same base, soft-prompt parameters and batch give PEFT's logits, loss and
// soft-prompt gradients (PEFT's one prefix table compared by its per-layer columns).
class PeftPromptReference : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(PeftPromptReference, OutputsAndGradientsEqualPeft) {
  const auto& [type, variant] = GetParam();
  auto cpu = make_backend("cpu");
  const ModelConfig c = tiny(type);
  const PeftSpec spec = spec_of(variant, c);
  std::unique_ptr<Transformer> m = adapted_model(*cpu, c, spec);
  const MicroBatch b = whole_documents_batch(c.vocab_size, 3);
  const std::string dir = test::temp_dir("peft_prompt_reference_" + type + "_" + variant).string();
  write_reference_input(*m, spec, b, dir + "/in.safetensors");
  SafetensorsFile ref;
  const std::vector<float> ref_logits = run_reference({"prompt", dir + "/in.safetensors"}, dir, "logits", &ref);
  ASSERT_FALSE(ref_logits.empty());
  EXPECT_GT(expect_outputs_and_gradients(*m, b, ref_logits, ref), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Methods, PeftPromptReference,
    ::testing::Values(std::pair{std::string("llama"), std::string("prompt_tuning")},
                      std::pair{std::string("llama"), std::string("p_tuning")},
                      std::pair{std::string("llama"), std::string("prefix_projection")},
                      std::pair{std::string("llama"), std::string("prefix")},
                      std::pair{std::string("qwen2"), std::string("prompt_tuning")},
                      std::pair{std::string("qwen2"), std::string("p_tuning")},
                      std::pair{std::string("qwen2"), std::string("prefix_projection")},
                      std::pair{std::string("qwen2"), std::string("prefix")}),
    [](const auto& info) { return info.param.first + "_" + info.param.second; });

// A files case: an adapted model whose base is written as a Hugging Face directory
// (DIR/base) with a batch for the reference (DIR/in.safetensors).
struct FilesCase {
  ModelConfig config;
  PeftSpec spec;
  std::unique_ptr<Transformer> model;
  std::string dir;
  MicroBatch batch;
};

FilesCase files_case(Backend& cpu, const std::string& type, const std::string& variant,
                     const std::string& name, bool whole_documents = false) {
  FilesCase f;
  f.config = tiny(type);
  f.spec = spec_of(variant, f.config);
  f.model = adapted_model(cpu, f.config, f.spec);
  f.dir = test::temp_dir(name + "_" + type).string();
  f.batch = whole_documents ? whole_documents_batch(f.config.vocab_size, 5)
                            : test::packed_batch(f.config.vocab_size, 5);
  save_hf_model(*f.model, f.dir + "/base");
  SafetensorsFile in;
  in.metadata = {{"peft", json_of(f.spec)}};
  add_batch(in, 0, f.batch);
  write_safetensors(f.dir + "/in.safetensors", in);
  return f;
}

const std::pair<const char*, const char*> kFilesCases[] = {
    {"llama", "dora"}, {"qwen2", "lora"}, {"qwen2", "ia3"}};
const std::pair<const char*, const char*> kPromptFilesCases[] = {
    {"llama", "prompt_tuning"}, {"qwen2", "p_tuning"}, {"llama", "prefix_projection"}, {"qwen2", "prefix"}};

void check_files_both_ways(Backend& cpu, const char* type, const char* variant, bool whole_documents) {
  FilesCase f = files_case(cpu, type, variant, std::string("peft_files_") + variant, whole_documents);
  const std::string& dir = f.dir;

  // Ours into PEFT.
  save_peft_adapter(*f.model, dir + "/ours", dir + "/base");
  const std::vector<float> peft_logits =
      run_reference({"load", dir + "/base", dir + "/ours", dir + "/in.safetensors"}, dir, "logits");
  check_close(f.model->logits(f.batch), peft_logits, kFp32Bound, "PeftModel on our adapter");

  // PEFT's into ours, as model.adapter and generate --adapter read it.
  const std::vector<float> saved_logits =
      run_reference({"save", dir + "/base", dir + "/theirs", dir + "/in.safetensors"}, dir, "logits");
  const PeftAdapter adapter = read_peft_adapter(dir + "/theirs");
  PeftSpec theirs;
  adopt_adapter_structure(theirs, adapter);
  // A soft prompt continues as what PEFT's file holds: P-tuning's output as a prompt
  // table, a projected prefix as P-tuning v2's keys and values.
  const PeftMethod want = f.spec.method == PeftMethod::PTuning ? PeftMethod::PromptTuning : f.spec.method;
  EXPECT_EQ(theirs.method, want);
  EXPECT_EQ(theirs.lora.dora, f.spec.lora.dora);
  EXPECT_FALSE(theirs.prompt.prefix_projection);
  Transformer loaded(f.config, cpu, DType::F32, 1, {}, false, theirs);
  load_hf_weights(loaded, dir + "/base");
  load_peft_adapter(loaded, adapter);
  check_close(loaded.logits(f.batch), saved_logits, kFp32Bound, "our model on PEFT's adapter");
}

TEST(PeftFiles, PeftLoadsOurAdapterAndWeLoadPeftsAdapter) {
  auto cpu = make_backend("cpu");
  for (const auto& [type, variant] : kFilesCases) {
    SCOPED_TRACE(std::string(type) + " " + variant);
    check_files_both_ways(*cpu, type, variant, false);
  }
}

TEST(PeftFiles, SoftPromptsLoadBothWays) {
  auto cpu = make_backend("cpu");
  for (const auto& [type, variant] : kPromptFilesCases) {
    SCOPED_TRACE(std::string(type) + " " + variant);
    check_files_both_ways(*cpu, type, variant, true);
  }
}

TEST(PeftFiles, MergedModelGivesTheUnmergedPeftModelsLogits) {
  auto cpu = make_backend("cpu");
  for (const auto& [type, variant] : kFilesCases) {
    SCOPED_TRACE(std::string(type) + " " + variant);
    FilesCase f = files_case(*cpu, type, variant, "peft_merge");
    const std::string& dir = f.dir;
    save_peft_adapter(*f.model, dir + "/adapter", dir + "/base");
    Transformer plain(f.config, *cpu, DType::F32, 1, {}, false);
    merge_adapters(*f.model, plain);
    save_hf_model(plain, dir + "/merged");
    SafetensorsFile out;
    const std::vector<float> merged = run_reference(
        {"merged", dir + "/merged", dir + "/base", dir + "/adapter", dir + "/in.safetensors"}, dir,
        "merged_logits", &out);
    ASSERT_FALSE(merged.empty());
    check_close(merged, out.at("peft_logits").to_f32(), kFp32Bound, "transformers on the merge vs PeftModel");
    check_close(merged, f.model->logits(f.batch), kFp32Bound, "merged vs our unmerged");
  }
}

// Bottleneck adapters, Houlsby's placement and Pfeiffer's (after the MLP only), against
// AdapterHub's BnConfig on transformers' Llama (adapters 1.0.1 has no Qwen2): logits, loss
// and every adapter gradient; AdapterHub loads the directory we write and gives our logits;
// the one it saves loads here and gives its logits.
class AdapterHubReference : public ::testing::TestWithParam<std::string> {};

TEST_P(AdapterHubReference, OutputsGradientsAndFilesEqualAdapterHub) {
  const char* script = "reference/adapterhub_reference.py";
  auto cpu = make_backend("cpu");
  const ModelConfig c = tiny("llama");
  PeftSpec spec;
  spec.method = PeftMethod::Adapter;
  spec.bottleneck = {4, GetParam() == "pfeiffer"};
  std::unique_ptr<Transformer> m = adapted_model(*cpu, c, spec);
  const MicroBatch b = test::packed_batch(c.vocab_size, 3);
  const std::string dir = test::temp_dir("adapterhub_reference_" + GetParam()).string();
  write_reference_input(*m, spec, b, dir + "/in.safetensors");
  SafetensorsFile ref;
  const std::vector<float> ref_logits = run_reference({"grad", dir + "/in.safetensors"}, dir, "logits", &ref, script);
  ASSERT_FALSE(ref_logits.empty());
  const int trainable = expect_outputs_and_gradients(*m, b, ref_logits, ref);
  EXPECT_EQ(trainable, GetParam() == "pfeiffer" ? 2 * 4 : 2 * 2 * 4);

  // Files both ways.
  save_hf_model(*m, dir + "/base");
  save_peft_adapter(*m, dir + "/ours", dir + "/base");
  const std::vector<float> hub_logits =
      run_reference({"load", dir + "/base", dir + "/ours", dir + "/in.safetensors"}, dir, "logits", nullptr, script);
  check_close(m->logits(b), hub_logits, kFp32Bound, "AdapterHub on our adapter");
  const std::vector<float> saved_logits =
      run_reference({"save", dir + "/base", dir + "/theirs", dir + "/in.safetensors"}, dir, "logits", nullptr, script);
  const PeftAdapter adapter = read_peft_adapter(dir + "/theirs");
  PeftSpec loaded_spec;
  adopt_adapter_structure(loaded_spec, adapter);
  EXPECT_EQ(loaded_spec.method, PeftMethod::Adapter);
  EXPECT_EQ(loaded_spec.bottleneck.mlp_only, spec.bottleneck.mlp_only);
  EXPECT_EQ(loaded_spec.bottleneck.reduction_factor, 4);
  Transformer loaded(c, *cpu, DType::F32, 1, {}, false, loaded_spec);
  load_hf_weights(loaded, dir + "/base");
  load_peft_adapter(loaded, adapter);
  check_close(loaded.logits(b), saved_logits, kFp32Bound, "our model on AdapterHub's adapter");
}

INSTANTIATE_TEST_SUITE_P(Placements, AdapterHubReference, ::testing::Values("houlsby", "pfeiffer"));

}  // namespace
}  // namespace temper
