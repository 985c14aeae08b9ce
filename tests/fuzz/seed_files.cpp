#include "seed_files.h"

#include "checkpoint/checkpoint.h"
#include "kernels/backend.h"
#include "model/transformer.h"
#include "optim/adamw.h"

namespace temper::fuzz {

ModelConfig seed_model_config() {
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

TokenDataset seed_dataset(bool chat) {
  TokenDataset d;
  d.vocab_size = 32;
  d.eos_id = 2;
  d.tokenizer_fingerprint = "0123456789abcdef";
  d.source_format = chat ? "chat" : "text";
  d.chat_template = chat ? "chatml" : "";
  d.creator_version = "seed";
  if (chat) {
    d.add({1, 20, 21, 2, 1, 22, 23, 2}, {0, 0, 0, 0, 0, 1, 1, 1}, false);
    d.add({1, 24, 2, 1, 25, 2}, {0, 0, 0, 0, 1, 1}, true);
  } else {
    d.add({5, 6, 7, 2}, {1, 1, 1, 1}, false);
    d.add({8, 9, 2}, {1, 1, 1}, true);
    d.add({10, 11, 12, 13, 2}, {1, 1, 1, 1, 1}, false);
  }
  return d;
}

void write_seed_checkpoint(const std::string& path, bool with_optimizer) {
  const auto cpu = make_backend("cpu");  // computes in f32: the seeds are f32 checkpoints
  Transformer model(seed_model_config(), *cpu, DType::F32);
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
  write_checkpoint(path, meta, model, with_optimizer ? &optimizer : nullptr, state);
}

}  // namespace temper::fuzz
