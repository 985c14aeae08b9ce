#include "support/tokenizer_fixture.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "io/hf_model.h"
#include "kernels/backend.h"
#include "model/transformer.h"

namespace temper::test {

void write_byte_tokenizer(const std::filesystem::path& dir) {
  using json = nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer_detail::byte_to_unicode(uint8_t(b))] = 3 + b;
  json added = json::array();
  int id = 0;
  for (const char* t : {"<|im_end|>", "<|im_start|>", "<|endoftext|>"})
    added.push_back({{"id", id++}, {"content", t}, {"special", true}, {"normalized", false}});
  json tok = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
              {"decoder", {{"type", "ByteLevel"}}},
              {"added_tokens", added}};
  std::ofstream(dir / "tokenizer.json") << tok.dump();
  const std::string chatml =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
      "{{ '<|im_start|>assistant\\n' }}{% endif %}";
  json cfg = {{"eos_token", "<|endoftext|>"}, {"chat_template", chatml}};
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump();
}

std::filesystem::path write_byte_tokenizer_model(const std::filesystem::path& dir, uint64_t seed) {
  ModelConfig c;
  c.vocab_size = kByteTokenizerVocab;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 512;
  auto cpu = make_backend("cpu");
  Transformer m(c, *cpu, DType::F32);
  m.init_weights(seed);
  const std::filesystem::path model = dir / "model";
  std::filesystem::create_directories(model);
  save_hf_model(m, model.string());
  write_byte_tokenizer(model);
  return model;
}

}  // namespace temper::test
