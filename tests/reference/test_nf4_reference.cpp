// NF4 against an independent torch implementation (tests/reference/nf4_reference.py):
//   - the NF4 code book and the dynamic map equal their definitions (bitsandbytes'
//     create_normal_map and create_dynamic_map, computed live);
//   - a checkpoint whose projections are stored as bitsandbytes 4-bit weights (NF4 with
//     double quantization, the keys bitsandbytes writes) loads as a QLoRA base without
//     being quantized again: the codes are the file's bytes and the weights dequantize to
//     the reference's values exactly; a dense model gets those values too;
//   - a truncated or foreign quant state is an error naming the file and the key.
// Bit-equality with bitsandbytes itself (quantize_4bit / dequantize_4bit) needs torch >= 2.4
// and runs on the GPU host.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_model.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "peft/nf4.h"
#include "support/test_util.h"

namespace temper {
namespace {

SafetensorsFile run_reference(const std::vector<std::string>& args, const std::string& out) {
  std::string log;
  std::vector<std::string> all = args;
  all.push_back(out);
  const int status = test::run_python("reference/nf4_reference.py", all, &log);
  if (status != 0) fail("nf4_reference.py failed:\n{}", log);
  return read_safetensors(out);
}

TEST(Nf4Reference, CodeBooksEqualTheirDefinitions) {
  const std::string dir = test::temp_dir("nf4_codes").string();
  const SafetensorsFile ref = run_reference({"codes"}, dir + "/codes.safetensors");
  const std::vector<float> nf4 = ref.at("nf4").to_f32(), dyn = ref.at("dynamic").to_f32();
  ASSERT_EQ(nf4.size(), 16u);
  ASSERT_EQ(dyn.size(), 256u);
  // The published values are the definition computed with scipy and rounded to float32;
  // torch's erfinv differs from scipy's ppf in the last bit for two of them (1.2e-7).
  for (size_t i = 0; i < 16; ++i) EXPECT_NEAR(nf4_code()[i], nf4[i], 2.5e-7) << "NF4 value " << i;
  for (size_t i = 0; i < 256; ++i)
    EXPECT_NEAR(dynamic_map()[i], dyn[i], 1e-7 * std::max(1e-3f, std::fabs(dyn[i]))) << "dynamic map " << i;
}

// The bitsandbytes-format model directory and the reference's dequantized projections.
struct BnbModel {
  std::string dir;
  SafetensorsFile deq;
};

BnbModel bnb_model(const std::string& name) {
  auto cpu = make_backend("cpu");
  Transformer dense(test::nf4_model_config(), *cpu, DType::F32);
  test::randomize_parameters(dense.params(), *cpu, 7, 0.2f, 0.1f, 0.1f);
  SafetensorsFile in;
  in.metadata = {{"config", model_config_to_hf_json(dense.config()).dump()}};
  for (auto& p : dense.params().all())
    in.tensors[p.name] = safetensors_f32(test::to_host(*cpu, p.value), {p.shape[0], p.shape.ndim > 1 ? p.shape[1] : 1});
  for (auto& [n, e] : in.tensors)
    if (dense.params().at(n).shape.ndim == 1) e.shape.pop_back();
  BnbModel m;
  const std::string root = test::temp_dir(name).string();
  m.dir = root + "/model";
  write_safetensors(root + "/in.safetensors", in);
  m.deq = run_reference({"model", root + "/in.safetensors", m.dir}, root + "/deq.safetensors");
  return m;
}

TEST(Nf4Reference, BitsandbytesCheckpointLoadsWithoutRequantizing) {
  const BnbModel m = bnb_model("nf4_bnb_load");
  const SafetensorsFile file = read_safetensors(m.dir + "/model.safetensors");
  auto cpu = make_backend("cpu");
  PeftSpec qlora;
  qlora.method = PeftMethod::Lora;
  qlora.nf4 = true;
  Transformer q(test::nf4_model_config(), *cpu, DType::F32, 1, {}, false, qlora);
  load_hf_weights(q, m.dir);
  Transformer dense(test::nf4_model_config(), *cpu, DType::F32, 1, {}, false);
  load_hf_weights(dense, m.dir);
  int quantized = 0;
  for (const Parameter& p : q.params().all()) {
    if (!p.quantized) continue;
    ++quantized;
    const std::vector<float> want = m.deq.at("deq." + p.name).to_f32();
    EXPECT_EQ(nf4_parameter_values(*cpu, p), want) << p.name;
    std::vector<uint8_t> codes(size_t(p.nf4.packed.numel()));
    cpu->copy_to_host(codes.data(), p.nf4.packed);
    EXPECT_EQ(codes, file.at(p.name).data) << p.name << ": the file's codes, not new ones";
    EXPECT_EQ(test::to_host(*cpu, dense.params().at(p.name).value), want) << p.name << " (dense)";
  }
  EXPECT_EQ(quantized, 2 * 7);
}

TEST(Nf4Reference, TruncatedOrForeignQuantStatesAreErrors) {
  const BnbModel m = bnb_model("nf4_bnb_bad");
  const std::string st = m.dir + "/model.safetensors";
  const SafetensorsFile good = read_safetensors(st);
  const std::string key = "model.layers.1.mlp.up_proj.weight.quant_state.bitsandbytes__nf4";
  auto state = [&] {
    const auto& d = good.at(key).data;
    return nlohmann::json::parse(std::string(d.begin(), d.end()));
  };
  auto with_state = [&](const std::string& text) {
    SafetensorsFile f = good;
    f.tensors[key].data.assign(text.begin(), text.end());
    f.tensors[key].shape = {int64_t(text.size())};
    write_safetensors(st, f);
  };
  auto error = [&] {
    auto cpu = make_backend("cpu");
    PeftSpec qlora;
    qlora.method = PeftMethod::Lora;
    qlora.nf4 = true;
    Transformer q(test::nf4_model_config(), *cpu, DType::F32, 1, {}, false, qlora);
    return test::error_of([&] { load_hf_weights(q, m.dir); });
  };
  const std::string text = state().dump();
  with_state(text.substr(0, text.size() / 2));  // truncated
  EXPECT_NE(error().find(key + "' is not a JSON quant state"), std::string::npos) << error();
  nlohmann::json fp4 = state();
  fp4["quant_type"] = "fp4";
  with_state(fp4.dump());
  EXPECT_NE(error().find("quant_type \"fp4\""), std::string::npos) << error();
  nlohmann::json shape = state();
  shape["shape"] = {64, 128};
  with_state(shape.dump());
  EXPECT_NE(error().find("is for shape [64,128]"), std::string::npos) << error();
  SafetensorsFile no_nested = good;  // double quantized codes without their nested absmax
  no_nested.tensors.erase("model.layers.0.self_attn.q_proj.weight.nested_quant_map");
  write_safetensors(st, no_nested);
  EXPECT_NE(error().find("'model.layers.0.self_attn.q_proj.weight.nested_quant_map' is missing"),
            std::string::npos) << error();
}

}  // namespace
}  // namespace temper
