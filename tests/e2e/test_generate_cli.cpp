// `temper generate` end to end on a tiny Hugging Face directory (random weights, a byte-level
// tokenizer.json, a ChatML template in tokenizer_config.json): what it streams to stdout is
// the text of the tokens the library's generate() picks for the same model, prompt and
// seed; a seed reproduces the text; --chat stops at the template's end-of-turn token even
// where EOS is another token; tokens/s goes to stderr.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/model_tokenizer.h"
#include "generate/generate.h"
#include "io/hf_model.h"
#include "support/test_util.h"
#include "support/tokenizer_fixture.h"

namespace temper {
namespace {

using json = nlohmann::json;

// A tiny model directory; zero_final_norm makes every logit 0, so greedy picks id 0
// (<|im_end|>) at once.
std::filesystem::path make_model(const std::string& name, bool zero_final_norm) {
  ModelConfig c;
  c.vocab_size = test::kByteTokenizerVocab;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 128;
  auto cpu = make_backend("cpu");
  Transformer m(c, *cpu, DType::F32);
  test::randomize_parameters(m.params(), *cpu, 3, 0.3f, 0.1f, 0.0f);
  if (zero_final_norm) cpu->zero(m.params().at("model.norm.weight").value);
  const auto dir = test::temp_dir("generate_cli_" + name) / "model";
  std::filesystem::create_directories(dir);
  save_hf_model(m, dir.string());
  test::write_byte_tokenizer(dir);
  return dir;
}

struct CliRun {
  int status;
  std::string out, err;
};

// Runs `temper generate <model> <args>`, stdout and stderr captured in files beside the model.
CliRun temper_generate(const std::filesystem::path& model, const std::string& args) {
  const auto o = model.parent_path() / "stdout.txt", e = model.parent_path() / "stderr.txt";
  // Grouped, so run_command's trailing 2>&1 does not undo the split.
  const auto r = test::run_command("{ " + std::string(TEMPER_BINARY_DIR) + "/bin/temper generate " +
                                   model.string() + " " + args + " > " + o.string() + " 2> " +
                                   e.string() + "; }");
  auto slurp = [](const std::filesystem::path& p) {
    std::stringstream ss;
    ss << std::ifstream(p).rdbuf();
    return ss.str();
  };
  return {r.status, slurp(o), slurp(e)};
}

TEST(GenerateCli, StreamsTheTextOfTheLibrarysTokensAndASeedReproducesIt) {
  const auto dir = make_model("sample", false);
  const std::string args = "--prompt 'héllo wörld' --max-new-tokens 24 --temperature 1.2 --top-k 50 --seed 9";
  const CliRun a = temper_generate(dir, args), b = temper_generate(dir, args);
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.err.find("tokens/s"), std::string::npos) << a.err;

  // The same generation in-process.
  auto cpu = make_backend("cpu");
  auto model = load_model_for_generation(dir.string(), *cpu, DType::F32);
  const ModelTokenizer mt = load_model_tokenizer(dir);
  const std::vector<int32_t> prompt = mt.tokenizer.encode("héllo wörld");
  GenerateOptions o;
  o.max_new_tokens = 24;
  o.sampling.temperature = 1.2f, o.sampling.top_k = 50, o.sampling.seed = 9;
  o.stop_tokens = {2};  // <|endoftext|>, the tokenizer_config's eos_token
  CachedDecoder dec(*model, 64);
  const GenerateResult r = generate(dec, prompt, o);
  EXPECT_EQ(a.out, mt.tokenizer.decode(r.tokens, /*skip_special=*/true) + "\n");
  EXPECT_FALSE(a.out.size() <= 1) << "the sample should produce some text";

  const CliRun c = temper_generate(dir, "--prompt 'héllo wörld' --max-new-tokens 24 --temperature 1.2 --top-k 50 --seed 10");
  ASSERT_EQ(c.status, 0) << c.err;
  EXPECT_NE(a.out, c.out) << "another seed should give another text";
}

TEST(GenerateCli, ChatStopsAtEndOfTurn) {
  const auto dir = make_model("eot", true);
  // Plain mode knows only EOS (<|endoftext|>): it runs to the limit on <|im_end|> tokens.
  const CliRun plain = temper_generate(dir, "--prompt hi --max-new-tokens 5");
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_NE(plain.err.find("generated: 5 tokens"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("--max-new-tokens"), std::string::npos) << plain.err;
  EXPECT_EQ(plain.out, "\n");  // special tokens print nothing
  // Chat mode also stops at the template's end of turn.
  const CliRun chat = temper_generate(dir, "--prompt hi --chat --system 'be brief' --max-new-tokens 5");
  ASSERT_EQ(chat.status, 0) << chat.err;
  EXPECT_NE(chat.err.find("generated: 1 tokens"), std::string::npos) << chat.err;
  EXPECT_NE(chat.err.find("stop token"), std::string::npos) << chat.err;
}

TEST(GenerateCli, BadArgumentsExitOneWithAMessage) {
  const auto dir = make_model("bad", false);
  CliRun r = temper_generate(dir, "--prompt hi --top-p 0");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--top-p"), std::string::npos) << r.err;
  r = temper_generate(dir, "--prompt hi --system x");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--system needs --chat"), std::string::npos) << r.err;
  r = temper_generate(dir / "missing", "--prompt hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace temper
