// A whole model through GGUF: Temper's model saved as a Hugging Face directory, converted
// to GGUF by the PyPI `gguf` package's writer the way llama.cpp converts (Q/K rows
// permuted, GGUF names, llama metadata), then loaded back: the config and every weight
// must come back exactly (F32 tensors), tied or untied, with and without q/k/v biases.
#include <gtest/gtest.h>

#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/hf_model.h"
#include "support/test_util.h"

namespace temper {
namespace {

void round_trip(const std::string& tag, bool tied, bool bias) {
  ModelConfig c;
  c.vocab_size = 80;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 128;
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  auto cpu = make_backend("cpu");
  Transformer a(c, *cpu, DType::F32);
  a.init_weights(11);
  auto dir = test::temp_dir("gguf_model_" + tag);
  save_hf_model(a, (dir / "hf").string());
  const std::string gguf = (dir / "model.gguf").string();
  std::string out;
  ASSERT_EQ(test::run_python("reference/gguf_from_hf.py", {(dir / "hf").string(), gguf}, &out), 0) << out;

  const GgufFile f = read_gguf(gguf);
  const ModelConfig back = model_config_from_gguf(f);
  EXPECT_EQ(back.num_parameters(), a.config().num_parameters()) << tag;
  EXPECT_EQ(back.tie_word_embeddings, tied) << tag;
  EXPECT_EQ(back.num_key_value_heads, 2) << tag;
  Transformer b(back, *cpu, DType::F32);
  load_gguf_weights(b, f);
  for (auto& p : a.params().all())
    EXPECT_EQ(test::to_host(*cpu, p.value), test::to_host(*cpu, b.params().at(p.name).value))
        << tag << " " << p.name;
}

TEST(GgufModel, UntiedRoundTripIsExact) { round_trip("untied", false, false); }
TEST(GgufModel, TiedWithBiasesRoundTripIsExact) { round_trip("tied_bias", true, true); }

}  // namespace
}  // namespace temper
