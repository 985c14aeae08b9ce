// Llama-family model shape and variant flags, named as in Hugging Face config.json.
// One struct covers Llama 2/3.x, Mistral (sliding window), Qwen2 (qkv bias) and SmolLM2
// (tied embeddings).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace temper {

// Llama 3.x "rope_scaling" (rope_type "llama3"); rope_type "default"/empty means none.
struct RopeScaling {
  std::string rope_type;  // "", "default" or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
  bool enabled() const { return rope_type == "llama3"; }
};

struct ModelConfig {
  std::string model_type = "llama";  // llama | mistral | qwen2 (SmolLM2 is "llama")
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // 0 in a file means = num_attention_heads
  int64_t head_dim = 0;             // 0 in a file means hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (always true for qwen2)
  int64_t sliding_window = 0;   // 0 = full causal attention
  double initializer_range = 0.02;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;

  // Fills the derived defaults above and checks consistency (heads divide, sizes > 0);
  // throws temper::Error naming the field.
  void finalize();
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t q_dim() const { return num_attention_heads * head_dim; }
  // Parameters in total and without the input embedding (for FLOP counts).
  int64_t num_parameters() const;
  int64_t num_non_embedding_parameters() const;
};

// From a Hugging Face config.json object / file; unknown fields are ignored (HF files
// carry many), missing required ones are errors naming the file and field.
ModelConfig model_config_from_hf_json(const nlohmann::json& j, const std::string& source);
ModelConfig load_hf_config(const std::string& path);
nlohmann::json model_config_to_hf_json(const ModelConfig& c);

}  // namespace temper
