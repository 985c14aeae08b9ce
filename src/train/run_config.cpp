#include "train/run_config.h"

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "model/config.h"
#include "train/config_schema.h"

namespace temper {

using namespace config_detail;

namespace {

// Where a value was set: "configs/tiny.yaml:3" or the command line.
struct Origin {
  std::string where;
  bool command_line = false;
  std::string describe() const { return command_line ? "on the command line" : "in " + where; }
};
using Origins = std::map<std::string, Origin>;

[[noreturn]] void fail_unknown_key(const std::string& key, const Origin& origin) {
  std::optional<std::string> near = closest_config_key(key);
  if (near)
    fail("unknown config key '{}' {} (did you mean '{}'?)", key, origin.describe(), *near);
  fail("unknown config key '{}' {} ({})", key, origin.describe(), describe_valid_keys_near(key));
}

// `key` names a section ("train") but was given `got` instead of a map of its keys.
[[noreturn]] void fail_section_value(const std::string& key, const Origin& origin,
                                     const char* got) {
  fail("config key '{}' {} is a section, not a single value (got {}); set its keys instead "
       "({})",
       key, origin.describe(), got, describe_valid_keys_near(key + ".x"));
}

const char* node_kind(const YAML::Node& node) {
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a sequence";
  return "a scalar";
}

// A value as read: a scalar's text, or null (`~`, `null`, an empty value), or a sequence
// of scalars (list keys only).
struct ScalarValue {
  std::string text;
  bool is_null = false;
  bool is_list = false;
  std::vector<std::string> items;
};

template <typename T>
void parse_into(T& field, const std::string& key, const ScalarValue& value, const Origin& origin) {
  using Traits = FieldTraits<T>;
  const char* type_name = config_value_type_name(Traits::type);
  if constexpr (Traits::type == ConfigValueType::List) {
    // A list key takes a sequence, one scalar (a one-item list) or null (empty).
    if (value.is_list) field = value.items;
    else if (value.is_null) field.clear();
    else field = {value.text};
  } else if (value.is_list) {
    fail("config key '{}' {}: expected a single value ({}), got a sequence", key,
         origin.describe(), type_name);
  } else if constexpr (Traits::optional) {
    if (value.is_null) {
      field.reset();  // unset: the preset / config.json value stays
    } else {
      typename T::value_type v{};
      parse_into(v, key, value, origin);
      field = std::move(v);
    }
  } else if constexpr (std::is_same_v<T, std::string>) {
    field = value.is_null ? std::string() : value.text;
  } else {
    if (value.is_null)
      fail("config key '{}' {} has no value (expected {})", key, origin.describe(), type_name);
    std::optional<T> parsed;
    if constexpr (std::is_same_v<T, int64_t>) parsed = parse_int(value.text);
    if constexpr (std::is_same_v<T, double>) parsed = parse_float(value.text);
    if constexpr (std::is_same_v<T, bool>) parsed = parse_bool(value.text);
    if (!parsed)
      fail("config key '{}' {}: expected {}, got '{}'", key, origin.describe(), type_name,
           value.text);
    field = *parsed;
  }
}

// Sets `key` in `config` from `value`; an unknown key is an error.
void assign(RunConfig& config, Origins& origins, const std::string& key, const ScalarValue& value,
            const Origin& origin) {
  bool found = false;
  for_each_config_field(config, [&](const char* name, auto& field, const char*) {
    if (found || key != name) return;
    found = true;
    parse_into(field, key, value, origin);
  });
  if (!found) fail_unknown_key(key, origin);
  origins[key] = origin;
}

// A scalar, null, or a sequence of scalars; `key` and `origin` name a bad sequence.
ScalarValue value_of(const YAML::Node& node, const std::string& key, const Origin& origin) {
  if (node.IsNull()) return {"", true};
  if (node.IsSequence()) {
    ScalarValue v;
    v.is_list = true;
    for (const auto& item : node) {
      if (!item.IsScalar())
        fail("config key '{}' {}: a list of plain values is expected, got an item that is {}",
             key, origin.describe(), node_kind(item));
      v.items.push_back(item.Scalar());
    }
    return v;
  }
  return {node.Scalar(), false};
}

// Reads the map `node` whose keys are under `prefix` ("" at the top).
void read_map(const YAML::Node& node, const std::string& prefix, const std::string& source,
              RunConfig& config, Origins& origins) {
  for (const auto& entry : node) {
    const YAML::Node key_node = entry.first;  // handles, copied (cheap)
    const YAML::Node value = entry.second;
    const int line = key_node.Mark().line + 1;
    if (!key_node.IsScalar())
      fail("{} line {}: config keys must be plain names, got {}", source, line,
           node_kind(key_node));
    const std::string key = prefix.empty() ? key_node.Scalar() : prefix + "." + key_node.Scalar();
    const Origin origin{fmt::format("{}:{}", source, line), false};
    if (is_config_key(key)) {
      if (value.IsMap())
        fail("config key '{}' {}: expected a single value, got {}", key, origin.describe(),
             node_kind(value));
      if (auto seen = origins.find(key); seen != origins.end())
        fail("config key '{}' is given twice in {} (at {} and line {})", key, source,
             seen->second.where, line);
      assign(config, origins, key, value_of(value, key, origin), origin);
    } else if (is_config_section(key)) {
      if (value.IsMap()) {
        read_map(value, key, source, config, origins);
      } else if (!value.IsNull()) {  // `train:` with nothing under it is an empty section
        fail_section_value(key, origin, node_kind(value));
      }
    } else {
      fail_unknown_key(key, origin);
    }
  }
}

void apply_override(RunConfig& config, Origins& origins, const std::string& override_text) {
  const size_t eq = override_text.find('=');
  if (eq == std::string::npos)
    fail("command-line override '{}' is not key=value (e.g. train.steps=10)", override_text);
  std::string key = override_text.substr(0, eq);
  key.erase(0, key.find_first_not_of(" \t"));
  key.erase(key.find_last_not_of(" \t") + 1);
  if (key.empty()) fail("command-line override '{}' has no key before '='", override_text);
  const Origin origin{"command line", true};
  YAML::Node value;
  try {
    value = YAML::Load(override_text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail("command-line override '{}': the value is not a valid YAML scalar: {}", override_text,
         e.msg);
  }
  if (!is_config_key(key)) {
    if (is_config_section(key)) fail_section_value(key, origin, "a scalar");
    fail_unknown_key(key, origin);
  }
  if (value.IsMap())
    fail("config key '{}' {}: expected a single value, got {}", key, origin.describe(),
         node_kind(value));
  assign(config, origins, key, value_of(value, key, origin), origin);
}

// ---- validation ------------------------------------------------------------------------

class Validator {
 public:
  explicit Validator(const Origins* origins) : origins_(origins) {}

  template <typename T>
  void require(const char* key, const T& value, bool ok, const std::string& rule) const {
    if (!ok)
      fail("config key '{}' = {}{} is out of range: must be {}", key, format_value(value),
           where(key), rule);
  }
  // For a model override: checked only when set.
  template <typename T>
  void require_if_set(const char* key, const std::optional<T>& value, bool (*ok)(T),
                      const std::string& rule) const {
    if (value) require(key, *value, ok(*value), rule);
  }
  void one_of(const char* key, const std::string& value,
              std::initializer_list<const char*> allowed) const {
    for (const char* a : allowed)
      if (value == a) return;
    std::vector<std::string> quoted;
    for (const char* a : allowed) quoted.push_back(format_value(std::string(a)));
    fail("config key '{}' = {}{} is invalid: must be one of {}", key, format_value(value),
         where(key), fmt::join(quoted, ", "));
  }
  std::string where(const std::string& key) const {
    if (!origins_) return "";
    auto it = origins_->find(key);
    return it == origins_->end() ? std::string(" (the default)")
                                  : fmt::format(" {}", it->second.describe());
  }

 private:
  const Origins* origins_;
};

bool positive_int(int64_t v) { return v > 0; }
bool non_negative_int(int64_t v) { return v >= 0; }
bool positive_float(double v) { return v > 0; }

bool is_backend_name(const std::string& s) {
  if (s == "cpu" || s == "cuda") return true;
  if (s.rfind("cuda:", 0) != 0 || s.size() == 5) return false;
  return s.find_first_not_of("0123456789", 5) == std::string::npos;
}

void validate(const RunConfig& c, const Origins* origins) {
  const Validator v(origins);
  v.require("seed", c.seed, c.seed >= 0, ">= 0");
  v.require("out_dir", c.out_dir, !c.out_dir.empty(), "a directory path");
  v.require("backend", c.backend, is_backend_name(c.backend), "cpu, cuda or cuda:N");

  const ModelSection& m = c.model;
  // At most one source for the model shape.
  const std::pair<const char*, const std::string*> sources[] = {
      {"model.preset", &m.preset}, {"model.config", &m.config}, {"model.path", &m.path}};
  for (size_t i = 0; i < 3; ++i)
    for (size_t j = i + 1; j < 3; ++j)
      if (!sources[i].second->empty() && !sources[j].second->empty())
        fail("config keys '{}' = {}{} and '{}' = {}{} are both set: give only one",
             sources[i].first, format_value(*sources[i].second), v.where(sources[i].first),
             sources[j].first, format_value(*sources[j].second), v.where(sources[j].first));
  v.one_of("model.dtype", m.dtype, {"f32", "bf16", "f16"});
  const ModelOverrides& o = m.overrides;
  if (o.model_type) v.one_of("model.model_type", *o.model_type, {"llama", "mistral", "qwen2"});
  v.require_if_set("model.vocab_size", o.vocab_size, positive_int, "> 0");
  v.require_if_set("model.hidden_size", o.hidden_size, positive_int, "> 0");
  v.require_if_set("model.intermediate_size", o.intermediate_size, positive_int, "> 0");
  v.require_if_set("model.num_hidden_layers", o.num_hidden_layers, positive_int, "> 0");
  v.require_if_set("model.num_attention_heads", o.num_attention_heads, positive_int, "> 0");
  v.require_if_set("model.num_key_value_heads", o.num_key_value_heads, non_negative_int,
            ">= 0 (0 = num_attention_heads)");
  v.require_if_set("model.head_dim", o.head_dim, non_negative_int, ">= 0 (0 = hidden / heads)");
  v.require_if_set("model.max_position_embeddings", o.max_position_embeddings, positive_int, "> 0");
  v.require_if_set("model.rms_norm_eps", o.rms_norm_eps, positive_float, "> 0");
  v.require_if_set("model.rope_theta", o.rope_theta, positive_float, "> 0");
  v.require_if_set("model.sliding_window", o.sliding_window, non_negative_int, ">= 0 (0 = full)");
  v.require_if_set("model.initializer_range", o.initializer_range, positive_float, "> 0");
  if (o.rope_scaling.rope_type)
    v.one_of("model.rope_scaling.rope_type", *o.rope_scaling.rope_type, {"", "default", "llama3"});
  v.require_if_set("model.rope_scaling.factor", o.rope_scaling.factor, positive_float, "> 0");
  v.require_if_set("model.rope_scaling.low_freq_factor", o.rope_scaling.low_freq_factor, positive_float,
            "> 0");
  v.require_if_set("model.rope_scaling.high_freq_factor", o.rope_scaling.high_freq_factor,
            positive_float, "> 0");
  v.require_if_set("model.rope_scaling.original_max_position_embeddings",
            o.rope_scaling.original_max_position_embeddings, positive_int, "> 0");

  const DataSection& d = c.data;
  v.one_of("data.source", d.source, {"synthetic", "hdf5"});
  if (d.source == "hdf5" && d.path.empty())
    fail("config key 'data.path'{} must name the HDF5 token dataset when data.source is hdf5 "
         "(make one with temper prepare)", v.where("data.path"));
  if (d.source == "synthetic" && !d.path.empty())
    fail("config key 'data.path' = {}{} is set, but 'data.source' is synthetic{}, which would "
         "train on generated text and ignore it: set data.source=hdf5 (or leave data.source "
         "out: a data.path makes it hdf5), or drop data.path",
         format_value(d.path), v.where("data.path"), v.where("data.source"));
  v.require("data.num_docs", d.num_docs, d.num_docs > 0, "> 0");
  v.require("data.val_fraction", d.val_fraction, d.val_fraction >= 0 && d.val_fraction < 1,
            "in [0, 1)");
  v.require("data.min_doc_tokens", d.min_doc_tokens, d.min_doc_tokens >= 2,
            ">= 2 (a document needs 2 tokens to give one target)");
  v.require("data.max_doc_tokens", d.max_doc_tokens, d.max_doc_tokens >= d.min_doc_tokens,
            fmt::format(">= data.min_doc_tokens ({})", d.min_doc_tokens));

  const TrainSection& t = c.train;
  v.require("train.steps", t.steps, t.steps >= 0, ">= 0 (0 = from train.epochs)");
  v.require("train.epochs", t.epochs, t.epochs >= 0, ">= 0 (0 = from train.steps)");
  if (t.steps > 0 && t.epochs > 0)
    fail("config keys 'train.steps' = {}{} and 'train.epochs' = {}{} are both set: give one "
         "(the other 0)", t.steps, v.where("train.steps"), format_value(t.epochs),
         v.where("train.epochs"));
  v.require("train.micro_batch_size", t.micro_batch_size, t.micro_batch_size > 0, "> 0");
  v.require("train.grad_accum", t.grad_accum, t.grad_accum > 0 || t.global_batch_size > 0,
            "> 0 (0 only with train.global_batch_size, which then decides it)");
  v.require("train.global_batch_size", t.global_batch_size, t.global_batch_size >= 0,
            ">= 0 (0: train.grad_accum says the batch)");
  v.require("train.seq_len", t.seq_len, t.seq_len > 1, "> 1");
  v.require("train.eval_every", t.eval_every, t.eval_every >= -1,
            ">= -1 (0 = never, -1 = every 10% of the run)");
  v.require("train.eval_batches", t.eval_batches, t.eval_batches > 0, "> 0");
  v.require("train.log_every", t.log_every, t.log_every > 0, "> 0");
  v.require("train.loss_chunk", t.loss_chunk, t.loss_chunk > 0, "> 0");
  v.one_of("train.progress", t.progress, {"auto", "bar", "plain"});
  v.require("train.max_nonfinite_steps", t.max_nonfinite_steps, t.max_nonfinite_steps >= 0,
            ">= 0 (0 = never stop)");

  const OptimSection& p = c.optim;
  v.require("optim.lr", p.lr, p.lr >= 0, ">= 0");
  v.require("optim.min_lr_ratio", p.min_lr_ratio, p.min_lr_ratio >= 0 && p.min_lr_ratio <= 1,
            "in [0, 1]");
  v.require("optim.warmup_steps", p.warmup_steps, p.warmup_steps >= 0, ">= 0");
  v.one_of("optim.schedule", p.schedule, {"cosine", "linear", "constant"});
  v.require("optim.weight_decay", p.weight_decay, p.weight_decay >= 0, ">= 0");
  v.require("optim.beta1", p.beta1, p.beta1 >= 0 && p.beta1 < 1, "in [0, 1)");
  v.require("optim.beta2", p.beta2, p.beta2 >= 0 && p.beta2 < 1, "in [0, 1)");
  v.require("optim.eps", p.eps, p.eps > 0, "> 0");
  v.require("optim.grad_clip", p.grad_clip, p.grad_clip >= 0, ">= 0 (0 = no clipping)");
  v.require("optim.loss_scale_init", p.loss_scale_init, p.loss_scale_init >= 1, ">= 1");
  v.require("optim.loss_scale_window", p.loss_scale_window, p.loss_scale_window > 0, "> 0");

  const ParallelSection& q = c.parallel;
  v.require("parallel.tp", q.tp, q.tp >= 1, ">= 1");
  v.require("parallel.zero", q.zero, q.zero >= 0 && q.zero <= 2, "0, 1 or 2");
  v.require("parallel.bucket_mb", q.bucket_mb, q.bucket_mb > 0, "> 0");
  v.require("parallel.timeout_s", q.timeout_s, q.timeout_s > 0, "> 0");

  v.one_of("model.quantize", m.quantize, {"", "nf4"});
  const PeftSection& e = c.peft;
  v.one_of("peft.method", e.method,
           {"full", "partial", "lora", "ia3", "prompt_tuning", "p_tuning", "prefix_tuning", "adapter"});
  v.require("peft.num_virtual_tokens", e.num_virtual_tokens, e.num_virtual_tokens > 0, "> 0");
  v.require("peft.encoder_hidden_size", e.encoder_hidden_size, e.encoder_hidden_size >= 0, ">= 0 (0 = hidden size)");
  v.require("peft.reduction_factor", e.reduction_factor, e.reduction_factor > 0, "> 0");
  v.one_of("peft.adapter_placement", e.adapter_placement, {"houlsby", "pfeiffer"});
  if (!e.init_text.empty() && e.method != "prompt_tuning")
    fail("config key 'peft.init_text'{} applies to peft.method prompt_tuning, not {}",
         v.where("peft.init_text"), e.method);
  v.require("peft.r", e.r, e.r > 0, "> 0");
  v.require("peft.alpha", e.alpha, e.alpha > 0, "> 0");
  v.require("peft.dropout", e.dropout, e.dropout >= 0 && e.dropout < 1, "in [0, 1)");
  v.one_of("peft.init", e.init, {"default", "gaussian"});
  if (e.method == "partial" && e.trainable.empty())
    fail("config key 'peft.trainable'{} must list what trains when peft.method is partial "
         "(e.g. [head, \"last:2\", norm])", v.where("peft.trainable"));
  if (e.method != "partial" && !e.trainable.empty())
    fail("config key 'peft.trainable'{} applies to peft.method partial, not {}",
         v.where("peft.trainable"), e.method);
  if (e.method != "lora" && e.use_dora)
    fail("config key 'peft.use_dora'{} needs peft.method lora (it is {})", v.where("peft.use_dora"),
         e.method);
  if ((e.method == "full" || e.method == "partial") && !c.model.adapter.empty())
    fail("config key 'model.adapter'{} needs an adapter method (lora, ia3, ...), not {}",
         v.where("model.adapter"), e.method);
  if (e.method != "ia3" && !e.feedforward_modules.empty())
    fail("config key 'peft.feedforward_modules'{} applies to peft.method ia3, not {}",
         v.where("peft.feedforward_modules"), e.method);

  const CheckpointSection& k = c.checkpoint;
  v.require("checkpoint.every", k.every, k.every >= 0, ">= 0 (0 = only when stopped)");
  v.require("checkpoint.keep", k.keep, k.keep >= 1, ">= 1");
  v.one_of("checkpoint.resume", k.resume, {"true", "false", "force"});
}

// What a config leaves to be decided from other keys: data.source from data.path, and
// bool spellings of checkpoint.resume.
void resolve(RunConfig& c, const Origins& origins) {
  if (!origins.count("data.source") && !c.data.path.empty()) c.data.source = "hdf5";
  if (std::optional<bool> b = parse_bool(c.checkpoint.resume)) c.checkpoint.resume = *b ? "true" : "false";
  // A global batch size decides the accumulation once the data-parallel size is known
  // (resolve_global_batch), unless train.grad_accum is given too (then they must agree).
  if (c.train.global_batch_size > 0 && !origins.count("train.grad_accum")) c.train.grad_accum = 0;
}

}  // namespace

void validate_run_config(const RunConfig& config) { validate(config, nullptr); }

void resolve_global_batch(RunConfig& c, int dp) {
  TrainSection& t = c.train;
  if (t.global_batch_size <= 0) return;
  const int64_t per_accum = t.micro_batch_size * dp;
  if (t.global_batch_size % per_accum)
    fail("config key 'train.global_batch_size' = {} is not a multiple of train.micro_batch_size "
         "({}) x data-parallel ranks ({}) = {}: choose a global batch that divides, or another "
         "micro-batch size", t.global_batch_size, t.micro_batch_size, dp, per_accum);
  const int64_t accum = t.global_batch_size / per_accum;
  if (t.grad_accum > 0 && t.grad_accum != accum)
    fail("config keys 'train.global_batch_size' = {} and 'train.grad_accum' = {} disagree: with "
         "train.micro_batch_size {} and {} data-parallel rank{} the global batch takes "
         "grad_accum {}; give one of them", t.global_batch_size, t.grad_accum, t.micro_batch_size,
         dp, dp == 1 ? "" : "s", accum);
  t.grad_accum = accum;
}

RunConfig run_config_from_yaml_text(const std::string& text, const std::string& source_name,
                                    const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("malformed YAML in {} line {}, column {}: {}", source_name, e.mark.line + 1,
         e.mark.column + 1, e.msg);
  }
  RunConfig config;
  Origins origins;
  if (root.IsMap()) {
    read_map(root, "", source_name, config, origins);
  } else if (!root.IsNull()) {  // an empty file (or only comments) keeps the defaults
    fail("{}: the top level of a run config must be a map of keys, got {}", source_name,
         node_kind(root));
  }
  for (const std::string& o : overrides) apply_override(config, origins, o);
  resolve(config, origins);
  validate(config, &origins);
  return config;
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("config file '{}' not found", path);
  if (std::filesystem::is_directory(path, ec))
    fail("config file '{}' is a directory, not a YAML file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open config file '{}'", path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("cannot read config file '{}'", path);
  return run_config_from_yaml_text(text.str(), path, overrides);
}

RunConfig with_absolute_paths(const RunConfig& config) {
  RunConfig c = config;
  auto absolute = [](std::string& path) {
    if (!path.empty()) path = std::filesystem::absolute(path).lexically_normal().string();
  };
  absolute(c.model.path);
  absolute(c.model.config);
  absolute(c.model.adapter);
  if (c.model.preset.find('/') != std::string::npos || c.model.preset.ends_with(".json"))
    absolute(c.model.preset);
  absolute(c.data.path);
  absolute(c.checkpoint.load);
  return c;
}

std::string to_yaml(const RunConfig& config) {
  std::string out =
      "# Temper run configuration: the full effective config, every key. Load it with\n"
      "# `temper train <this file>`; `~` leaves a model field as the preset / config.json "
      "has it.\n";
  std::vector<std::string> open;  // the sections of the previous key
  std::set<std::string> closed;   // sections already written (must stay contiguous)
  for_each_config_field(config, [&](const char* name, const auto& field, const char* help) {
    std::vector<std::string> parts;
    std::string_view rest = name;
    for (size_t dot; (dot = rest.find('.')) != std::string_view::npos; rest.remove_prefix(dot + 1))
      parts.emplace_back(rest.substr(0, dot));
    size_t common = 0;
    while (common < open.size() && common < parts.size() && open[common] == parts[common])
      ++common;
    std::string path;
    for (size_t i = 0; i < open.size(); ++i) {
      path += (i ? "." : "") + open[i];
      if (i >= common) closed.insert(path);
    }
    path.clear();
    for (size_t i = 0; i < parts.size(); ++i) {
      path += (i ? "." : "") + parts[i];
      if (i < common) continue;
      TEMPER_CHECK(!closed.count(path), "config section '{}' is not contiguous", path);
      out += fmt::format("{:{}}{}:\n", "", 2 * i, parts[i]);
    }
    open = parts;
    std::string line = fmt::format("{:{}}{}: {}", "", 2 * parts.size(), rest, format_value(field));
    out += fmt::format("{:<40}  # {}\n", line, help);
  });
  return out;
}

void apply_model_overrides(const RunConfig& config, ModelConfig& model) {
  const ModelOverrides& o = config.model.overrides;
  auto set = [](auto& dst, const auto& src) {
    if (src) dst = *src;
  };
  set(model.model_type, o.model_type);
  set(model.vocab_size, o.vocab_size);
  set(model.hidden_size, o.hidden_size);
  set(model.intermediate_size, o.intermediate_size);
  set(model.num_hidden_layers, o.num_hidden_layers);
  set(model.num_attention_heads, o.num_attention_heads);
  set(model.num_key_value_heads, o.num_key_value_heads);
  set(model.head_dim, o.head_dim);
  set(model.max_position_embeddings, o.max_position_embeddings);
  set(model.rms_norm_eps, o.rms_norm_eps);
  set(model.rope_theta, o.rope_theta);
  set(model.tie_word_embeddings, o.tie_word_embeddings);
  set(model.attention_bias, o.attention_bias);
  set(model.sliding_window, o.sliding_window);
  set(model.initializer_range, o.initializer_range);
  set(model.rope_scaling.rope_type, o.rope_scaling.rope_type);
  set(model.rope_scaling.factor, o.rope_scaling.factor);
  set(model.rope_scaling.low_freq_factor, o.rope_scaling.low_freq_factor);
  set(model.rope_scaling.high_freq_factor, o.rope_scaling.high_freq_factor);
  set(model.rope_scaling.original_max_position_embeddings,
      o.rope_scaling.original_max_position_embeddings);
}

}  // namespace temper
