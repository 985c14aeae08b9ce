// Writes the binary seed files that our own writers make (tests/fuzz/make-seeds.sh calls
// it; the output is committed under tests/fuzz/corpus/): token datasets, f32 checkpoints of a
// very small model (with and without optimizer state) and safetensors.
//   temper_fuzz_make_seeds CORPUS_DIR
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "checkpoint/checkpoint.h"
#include "data/dataset.h"
#include "io/safetensors.h"
#include "kernels/backend.h"
#include "model/transformer.h"
#include "optim/adamw.h"

using namespace temper;
namespace fs = std::filesystem;

namespace {

void write_datasets(const fs::path& dir) {
  fs::create_directories(dir);
  TokenDataset text;
  text.vocab_size = 32;
  text.eos_id = 2;
  text.tokenizer_fingerprint = "0123456789abcdef";
  text.source_format = "text";
  text.creator_version = "seed";
  text.add({5, 6, 7, 2}, {1, 1, 1, 1}, false);
  text.add({8, 9, 2}, {1, 1, 1}, true);
  text.add({10, 11, 12, 13, 2}, {1, 1, 1, 1, 1}, false);
  write_token_dataset((dir / "text.h5").string(), text);

  TokenDataset chat = text;
  chat.source_format = "chat";
  chat.chat_template = "chatml";
  chat.tokens.clear(), chat.loss_mask.clear(), chat.doc_offsets = {0}, chat.split.clear();
  chat.add({1, 20, 21, 2, 1, 22, 23, 2}, {0, 0, 0, 0, 0, 1, 1, 1}, false);
  chat.add({1, 24, 2, 1, 25, 2}, {0, 0, 0, 0, 1, 1}, true);
  write_token_dataset((dir / "chat.h5").string(), chat);
}

ModelConfig tiny_model() {
  ModelConfig c;
  c.vocab_size = 16;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 16;
  return c;
}

void write_checkpoints(const fs::path& dir) {
  fs::create_directories(dir);
  auto cpu = make_backend("cpu");
  for (const DType dtype : {DType::F32}) {  // the cpu backend computes in f32
    for (const bool with_optimizer : {false, true}) {
      Transformer model(tiny_model(), *cpu, dtype);
      model.init_weights(1234);
      AdamW optimizer(model.params(), *cpu, AdamWConfig{});
      CheckpointMeta meta;
      meta.step = 3;
      meta.tokens_seen = 96;
      meta.config_yaml = "train:\n  steps: 10\n";
      meta.lr = 1e-3;
      meta.schedule = {1e-3, 0.1, 1, 10, "cosine"};
      RankState state;
      state.rng = {1, 2, 3};
      state.data = {0, 3};
      const std::string name = fmt::format("{}{}.h5", dtype_name(dtype), with_optimizer ? "-adamw" : "");
      write_checkpoint((dir / name).string(), meta, model, with_optimizer ? &optimizer : nullptr,
                       state);
    }
  }
}

void write_safetensors_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  SafetensorsFile file;
  file.metadata["format"] = "pt";
  file.tensors["model.embed_tokens.weight"] = safetensors_f32({0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -0.5f}, {3, 2});
  file.tensors["model.norm.weight"] = safetensors_f32({1.0f, 1.0f}, {2});
  file.tensors["step"] = safetensors_i32({7}, {});
  SafetensorsEntry bf16;
  bf16.dtype = "BF16";
  bf16.shape = {2, 2};
  bf16.data = {0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0xbf};
  file.tensors["lm_head.weight"] = bf16;
  SafetensorsEntry empty;
  empty.dtype = "F16";
  empty.shape = {0, 4};
  file.tensors["empty"] = empty;
  write_safetensors((dir / "mixed.safetensors").string(), file);
  SafetensorsFile none;
  write_safetensors((dir / "empty.safetensors").string(), none);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const fs::path corpus = argv[1];
  write_datasets(corpus / "hdf5_dataset");
  write_checkpoints(corpus / "hdf5_checkpoint");
  write_safetensors_seeds(corpus / "safetensors");
  return 0;
}
