#include "model/config.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/limits.h"

namespace temper {

void ModelConfig::finalize() {
  if (model_type != "llama" && model_type != "mistral" && model_type != "qwen2")
    fail("model_type '{}' is not supported (expected llama, mistral or qwen2)", model_type);
  if (model_type == "qwen2") attention_bias = true;
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0) fail("model config: {} must be > 0, got {}", name, v);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  // Bounds before anything is sized from them (core/limits.h).
  auto bounded = [](int64_t v, const char* name, int64_t limit) {
    if (v > limit) fail("model config: {} {} exceeds the limit {}", name, v, limit);
  };
  bounded(vocab_size, "vocab_size", limits::kMaxVocabSize);
  for (auto [v, name] : {std::pair{hidden_size, "hidden_size"}, {intermediate_size, "intermediate_size"},
                         {num_hidden_layers, "num_hidden_layers"}, {num_attention_heads, "num_attention_heads"},
                         {num_key_value_heads, "num_key_value_heads"}, {head_dim, "head_dim"},
                         {max_position_embeddings, "max_position_embeddings"}})
    bounded(v, name, limits::kMaxModelDim);
  if (num_key_value_heads == 0) num_key_value_heads = num_attention_heads;
  if (head_dim == 0) {
    if (hidden_size % num_attention_heads)
      fail("model config: hidden_size {} is not divisible by num_attention_heads {}", hidden_size,
           num_attention_heads);
    head_dim = hidden_size / num_attention_heads;
  }
  if (head_dim % 2) fail("model config: head_dim {} must be even for RoPE", head_dim);
  if (num_attention_heads % num_key_value_heads)
    fail("model config: num_attention_heads {} is not a multiple of num_key_value_heads {}",
         num_attention_heads, num_key_value_heads);
  positive(max_position_embeddings, "max_position_embeddings");
  if (rms_norm_eps <= 0) fail("model config: rms_norm_eps must be > 0");
  if (rope_theta <= 0) fail("model config: rope_theta must be > 0");
  if (!rope_scaling.rope_type.empty() && rope_scaling.rope_type != "default" &&
      rope_scaling.rope_type != "llama3")
    fail("model config: rope_scaling.rope_type '{}' is not supported (expected llama3)",
         rope_scaling.rope_type);
  if (sliding_window < 0) fail("model config: sliding_window must be >= 0");
  // The weight matrices' sizes, in double: int64 products of such dimensions could overflow.
  const double C = double(hidden_size), F = double(intermediate_size), L = double(num_hidden_layers);
  const double q = double(num_attention_heads) * double(head_dim), kv = double(num_key_value_heads) * double(head_dim);
  const double parameters = L * (2 * C * q + 2 * C * kv + 3 * C * F) + 2 * double(vocab_size) * C;
  if (parameters > double(limits::kMaxModelParameters))
    fail("model config: {:.3g} parameters exceed the limit {}", parameters, limits::kMaxModelParameters);
}

int64_t ModelConfig::num_non_embedding_parameters() const {
  int64_t C = hidden_size, F = intermediate_size;
  int64_t attn = C * q_dim() + 2 * C * kv_dim() + q_dim() * C;
  if (attention_bias) attn += q_dim() + 2 * kv_dim();
  int64_t per_layer = attn + 3 * C * F + 2 * C;
  int64_t head = tie_word_embeddings ? 0 : vocab_size * C;
  return num_hidden_layers * per_layer + C + head;
}

int64_t ModelConfig::num_parameters() const {
  return num_non_embedding_parameters() + vocab_size * hidden_size;
}

ModelConfig model_config_from_hf_json(const nlohmann::json& j, const std::string& source) {
  return with_context(source, [&] {
    if (!j.is_object()) fail("expected a JSON object");
    ModelConfig c;
    auto get_int = [&](const char* key, int64_t& dst, bool required) {
      if (j.contains(key) && !j[key].is_null()) {
        if (!j[key].is_number_integer()) fail("field '{}' must be an integer", key);
        dst = j[key].get<int64_t>();
      } else if (required) {
        fail("missing required field '{}'", key);
      }
    };
    auto get_float = [&](const nlohmann::json& o, const char* key, double& dst) {
      if (o.contains(key) && !o[key].is_null()) {
        if (!o[key].is_number()) fail("field '{}' must be a number", key);
        dst = o[key].get<double>();
      }
    };
    auto get_bool = [&](const char* key, bool& dst) {
      if (j.contains(key) && !j[key].is_null()) {
        if (!j[key].is_boolean()) fail("field '{}' must be true or false", key);
        dst = j[key].get<bool>();
      }
    };
    if (j.contains("model_type")) c.model_type = j["model_type"].get<std::string>();
    get_int("vocab_size", c.vocab_size, true);
    get_int("hidden_size", c.hidden_size, true);
    get_int("intermediate_size", c.intermediate_size, true);
    get_int("num_hidden_layers", c.num_hidden_layers, true);
    get_int("num_attention_heads", c.num_attention_heads, true);
    get_int("num_key_value_heads", c.num_key_value_heads, false);
    get_int("head_dim", c.head_dim, false);
    get_int("max_position_embeddings", c.max_position_embeddings, false);
    get_float(j, "rms_norm_eps", c.rms_norm_eps);
    get_float(j, "rope_theta", c.rope_theta);
    get_float(j, "initializer_range", c.initializer_range);
    get_bool("tie_word_embeddings", c.tie_word_embeddings);
    get_bool("attention_bias", c.attention_bias);
    // eos may be a list in newer configs; the first entry is the end-of-text token.
    for (const char* key : {"bos_token_id", "eos_token_id"}) {
      int64_t& dst = key[0] == 'b' ? c.bos_token_id : c.eos_token_id;
      if (j.contains(key) && j[key].is_number_integer()) dst = j[key].get<int64_t>();
      if (j.contains(key) && j[key].is_array() && !j[key].empty()) dst = j[key][0].get<int64_t>();
    }
    // Qwen2 and Mistral store sliding_window even when unused; honour use_sliding_window.
    if (j.contains("sliding_window") && j["sliding_window"].is_number_integer()) {
      bool use = j.value("use_sliding_window", c.model_type == "mistral");
      if (use) c.sliding_window = j["sliding_window"].get<int64_t>();
    }
    if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
      const auto& r = j["rope_scaling"];
      c.rope_scaling.rope_type = r.value("rope_type", r.value("type", std::string()));
      get_float(r, "factor", c.rope_scaling.factor);
      get_float(r, "low_freq_factor", c.rope_scaling.low_freq_factor);
      get_float(r, "high_freq_factor", c.rope_scaling.high_freq_factor);
      if (r.contains("original_max_position_embeddings"))
        c.rope_scaling.original_max_position_embeddings =
            r["original_max_position_embeddings"].get<int64_t>();
    }
    c.finalize();
    return c;
  });
}

ModelConfig load_hf_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot open model config '{}'", path);
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  return model_config_from_hf_json(j, path);
}

nlohmann::json model_config_to_hf_json(const ModelConfig& c) {
  nlohmann::json j = {
      {"architectures", {c.model_type == "qwen2" ? "Qwen2ForCausalLM"
                         : c.model_type == "mistral" ? "MistralForCausalLM"
                                                     : "LlamaForCausalLM"}},
      {"model_type", c.model_type},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"attention_bias", c.attention_bias},
      {"initializer_range", c.initializer_range},
      {"hidden_act", "silu"},
  };
  if (c.rope_scaling.enabled())
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings",
                          c.rope_scaling.original_max_position_embeddings}};
  if (c.sliding_window > 0) {
    j["sliding_window"] = c.sliding_window;
    j["use_sliding_window"] = true;
  }
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  return j;
}

}  // namespace temper
