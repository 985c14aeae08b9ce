#include "peft/peft.h"

#include <fmt/format.h>

#include <cmath>
#include <regex>

#include "core/error.h"
#include "peft/nf4.h"

namespace temper {
namespace {

bool ends_with_component(const std::string& path, const std::string& suffix) {
  return path == suffix ||
         (path.size() > suffix.size() && path.ends_with(suffix) &&
          path[path.size() - suffix.size() - 1] == '.');
}

bool has_regex_syntax(const std::string& s) { return s.find_first_of("\\^$*+?()[]{}|") != std::string::npos; }

std::regex compile(const std::string& pattern, const char* key) {
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("config key '{}': '{}' is not a valid regular expression ({})", key, pattern, e.what());
  }
}

// A module-path rule of target_modules / modules_to_save: the path itself, a suffix of
// whole components ("q_proj", "self_attn.q_proj"), or a regex matching the whole path.
bool module_matches(const std::string& path, const std::string& rule, const char* key) {
  if (ends_with_component(path, rule)) return true;
  return has_regex_syntax(rule) && std::regex_match(path, compile(rule, key));
}

// The module a parameter belongs to: its name without ".weight" / ".bias".
std::string module_of(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

bool is_adapter(const Parameter& p) { return p.init == ParamInit::Adapter; }

// partial: the parameters one rule names (shortcut or regex searched in the name).
std::vector<size_t> rule_matches(const ParameterSet& params, const std::string& rule,
                                 const ModelConfig& config) {
  std::vector<size_t> out;
  auto add_if = [&](auto&& pred) {
    for (size_t i = 0; i < params.size(); ++i)
      if (pred(params[i].name)) out.push_back(i);
  };
  if (rule == "head") {
    const std::string head = config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    add_if([&](const std::string& n) { return n == head; });
  } else if (rule == "embed") {
    add_if([](const std::string& n) { return n == "model.embed_tokens.weight"; });
  } else if (rule == "norm") {
    add_if([](const std::string& n) { return n.ends_with("norm.weight"); });
  } else if (rule == "bias") {
    add_if([](const std::string& n) { return n.ends_with(".bias"); });
  } else if (rule.starts_with("last:")) {
    const std::string count = rule.substr(5);
    char* end = nullptr;
    const long n = std::strtol(count.c_str(), &end, 10);
    if (count.empty() || *end || n <= 0 || n > config.num_hidden_layers)
      fail("config key 'peft.trainable': rule '{}' needs a block count in [1, {}] after 'last:'",
           rule, config.num_hidden_layers);
    for (int64_t l = config.num_hidden_layers - n; l < config.num_hidden_layers; ++l) {
      const std::string prefix = fmt::format("model.layers.{}.", l);
      add_if([&](const std::string& name) { return name.starts_with(prefix); });
    }
  } else {
    const std::regex re = compile(rule, "peft.trainable");
    add_if([&](const std::string& n) { return std::regex_search(n, re); });
  }
  return out;
}

}  // namespace

float LoraSpec::scale() const {
  return float(rslora ? alpha / std::sqrt(double(r)) : alpha / double(r));
}

const char* peft_method_name(PeftMethod m) {
  switch (m) {
    case PeftMethod::Full: return "full";
    case PeftMethod::Partial: return "partial";
    case PeftMethod::Lora: return "lora";
    case PeftMethod::Ia3: return "ia3";
    case PeftMethod::PromptTuning: return "prompt_tuning";
    case PeftMethod::PTuning: return "p_tuning";
    case PeftMethod::PrefixTuning: return "prefix_tuning";
    case PeftMethod::Adapter: return "adapter";
  }
  return "?";
}

PeftMethod peft_method_of(const std::string& name) {
  for (PeftMethod m : {PeftMethod::Full, PeftMethod::Partial, PeftMethod::Lora, PeftMethod::Ia3,
                       PeftMethod::PromptTuning, PeftMethod::PTuning, PeftMethod::PrefixTuning,
                       PeftMethod::Adapter})
    if (name == peft_method_name(m)) return m;
  fail("peft.method '{}': expected full, partial, lora, ia3, prompt_tuning, p_tuning, "
       "prefix_tuning or adapter", name);
}

nlohmann::json peft_spec_to_json(const PeftSpec& s) {
  const LoraSpec& l = s.lora;
  return {{"method", peft_method_name(s.method)}, {"nf4", s.nf4}, {"double_quant", s.double_quant},
          {"trainable", s.trainable},
          {"modules_to_save", s.modules_to_save}, {"r", l.r}, {"alpha", l.alpha},
          {"dropout", l.dropout}, {"use_rslora", l.rslora}, {"use_dora", l.dora},
          {"gaussian_init", l.gaussian_init}, {"target_modules", l.target_modules},
          {"layers", l.layers}, {"ia3_target_modules", s.ia3.target_modules},
          {"ia3_feedforward_modules", s.ia3.feedforward_modules},
          {"num_virtual_tokens", s.prompt.num_virtual_tokens}, {"init_text", s.prompt.init_text},
          {"prefix_projection", s.prompt.prefix_projection},
          {"encoder_hidden_size", s.prompt.encoder_hidden_size},
          {"reduction_factor", s.bottleneck.reduction_factor}, {"mlp_only", s.bottleneck.mlp_only}};
}

PeftSpec peft_spec_from_json(const nlohmann::json& j) {
  PeftSpec s;
  const std::string method = j.at("method").get<std::string>();
  s.method = peft_method_of(method);
  s.nf4 = j.value("nf4", false);
  s.double_quant = j.value("double_quant", true);
  s.trainable = j.at("trainable").get<std::vector<std::string>>();
  s.modules_to_save = j.at("modules_to_save").get<std::vector<std::string>>();
  LoraSpec& l = s.lora;
  l.r = j.at("r").get<int64_t>();
  l.alpha = j.at("alpha").get<double>();
  l.dropout = j.at("dropout").get<double>();
  l.rslora = j.at("use_rslora").get<bool>();
  l.dora = j.at("use_dora").get<bool>();
  l.gaussian_init = j.at("gaussian_init").get<bool>();
  l.target_modules = j.at("target_modules").get<std::vector<std::string>>();
  l.layers = j.at("layers").get<std::vector<int64_t>>();
  s.ia3.target_modules = j.value("ia3_target_modules", std::vector<std::string>{});
  s.ia3.feedforward_modules = j.value("ia3_feedforward_modules", std::vector<std::string>{});
  s.prompt.num_virtual_tokens = j.value("num_virtual_tokens", int64_t(20));
  s.prompt.init_text = j.value("init_text", std::string());
  s.prompt.prefix_projection = j.value("prefix_projection", false);
  s.prompt.encoder_hidden_size = j.value("encoder_hidden_size", int64_t(0));
  s.bottleneck.reduction_factor = j.value("reduction_factor", int64_t(16));
  s.bottleneck.mlp_only = j.value("mlp_only", false);
  return s;
}

std::string projection_path(int64_t layer, const ProjectionSite& site) {
  return fmt::format("model.layers.{}.{}.{}", layer, site.parent, site.module);
}

ProjectionTargets::ProjectionTargets(const std::vector<std::string>& targets,
                                     const std::vector<int64_t>& layers, int64_t num_layers,
                                     const char* key, const char* method)
    : chosen_(size_t(num_layers * 7), false) {
  for (int64_t l : layers)
    if (l < 0 || l >= num_layers)
      fail("config key 'peft.layers': block {} does not exist (the model has blocks 0..{})", l,
           num_layers - 1);
  if (targets.empty())
    fail("config key '{}' is empty: name the projections to adapt (e.g. [q_proj, v_proj]) or "
         "all-linear", key);
  auto layer_on = [&](int64_t l) {
    if (layers.empty()) return true;
    for (int64_t x : layers)
      if (x == l) return true;
    return false;
  };
  for (const std::string& target : targets) {
    const bool all = target == "all-linear";
    if (target == "lm_head" || target.ends_with(".lm_head"))
      fail("config key '{}': {} on lm_head is not supported (the head is fused with the loss); "
           "train it in full with peft.modules_to_save: [lm_head]", key, method);
    bool any = false;
    for (int64_t l = 0; l < num_layers; ++l)
      for (int s = 0; s < 7; ++s) {
        if (!all && !module_matches(projection_path(l, kProjectionSites[s]), target, key)) continue;
        any = true;
        if (layer_on(l)) chosen_[size_t(l * 7 + s)] = true;
      }
    const bool embedding = target == "embed_tokens" || target.ends_with(".embed_tokens");
    const bool norm = target.find("norm") != std::string::npos && !has_regex_syntax(target);
    if (!any && (embedding || norm))
      fail("config key '{}': '{}' is {}, not a linear projection: {} adapts q_proj, k_proj, "
           "v_proj, o_proj, gate_proj, up_proj and down_proj; train it in full with "
           "peft.modules_to_save: [{}]", key, target, embedding ? "an embedding" : "an RMSNorm",
           method, target);
    if (!any)
      fail("config key '{}': '{}' matches no module; the linear modules of each block are "
           "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (or all-linear)", key,
           target);
  }
}

ProjectionTargets lora_targets(const LoraSpec& spec, int64_t num_layers) {
  return ProjectionTargets(spec.target_modules, spec.layers, num_layers, "peft.target_modules",
                           spec.dora ? "DoRA" : "LoRA");
}

namespace {
const std::vector<std::string> kIa3Targets = {"k_proj", "v_proj", "down_proj"};  // PEFT, Llama
const std::vector<std::string> kIa3Feedforward = {"down_proj"};
}  // namespace

ProjectionTargets ia3_targets(const Ia3Spec& spec, int64_t num_layers) {
  return ProjectionTargets(spec.target_modules.empty() ? kIa3Targets : spec.target_modules, {},
                           num_layers, "peft.target_modules", "IA3");
}

ProjectionTargets ia3_feedforward(const Ia3Spec& spec, int64_t num_layers) {
  const auto& ff = spec.target_modules.empty() && spec.feedforward_modules.empty()
                       ? kIa3Feedforward : spec.feedforward_modules;
  if (ff.empty()) return ProjectionTargets();
  const ProjectionTargets targets = ia3_targets(spec, num_layers);
  ProjectionTargets out(ff, {}, num_layers, "peft.feedforward_modules", "IA3");
  for (int64_t l = 0; l < num_layers; ++l)
    for (int s = 0; s < 7; ++s)
      if (out.selected(l, s) && !targets.selected(l, s))
        fail("config key 'peft.feedforward_modules': {} is not among peft.target_modules (PEFT: "
             "feed-forward modules must be targets)", projection_path(l, kProjectionSites[s]));
  return out;
}

Ia3Attachment declare_ia3(ParameterSet& params, const std::string& path, int64_t out, int64_t in,
                          bool column_parallel, bool feedforward, int tp_size, int tp_rank) {
  if (feedforward && column_parallel && tp_size > 1)
    fail("peft: IA3 as a feed-forward module on {} (a column-parallel projection) is not "
         "supported with tensor parallelism; feed-forward modules are o_proj or down_proj", path);
  Ia3Attachment a;
  a.feedforward = feedforward;
  // Output rows split on a column-parallel base; input columns split on a row-parallel one.
  const int split = feedforward ? (column_parallel ? -1 : 0) : (column_parallel ? 0 : -1);
  a.scale = params.declare(path + ".ia3_l", Shape{feedforward ? in : out}, ParamInit::Adapter,
                           false, split, tp_size, tp_rank);
  return a;
}

LoraAttachment declare_lora(ParameterSet& params, const LoraSpec& spec, const std::string& path,
                            int64_t out, int64_t in, bool column_parallel, int tp_size,
                            int tp_rank) {
  if (spec.r <= 0) fail("config key 'peft.r' = {}: the LoRA rank must be > 0", spec.r);
  LoraAttachment a;
  a.r = spec.r;
  a.scale = spec.scale();
  a.dropout = float(spec.dropout);
  // Column-parallel base: B (and m) split by rows, A whole. Row-parallel: A split by columns.
  const int a_split = column_parallel ? -1 : 1, b_split = column_parallel ? 0 : -1;
  a.A = params.declare(path + ".lora_A.weight", Shape{spec.r, in}, ParamInit::Adapter, false,
                       a_split, tp_size, tp_rank);
  a.B = params.declare(path + ".lora_B.weight", Shape{out, spec.r}, ParamInit::Adapter, false,
                       b_split, tp_size, tp_rank);
  if (spec.dora)
    a.magnitude = params.declare(path + ".lora_magnitude_vector", Shape{out}, ParamInit::Adapter,
                                 false, b_split, tp_size, tp_rank);
  return a;
}

void mark_trainable(ParameterSet& params, const PeftSpec& spec, const ModelConfig& config) {
  for (auto& p : params.all()) p.trainable = spec.method == PeftMethod::Full || is_adapter(p);
  if (spec.method == PeftMethod::Partial) {
    for (const std::string& rule : spec.trainable) {
      const std::vector<size_t> hit = rule_matches(params, rule, config);
      if (hit.empty())
        fail("config key 'peft.trainable': rule '{}' matches no parameter (shortcuts: head, "
             "embed, norm, bias, last:N; anything else is a regex searched in names such as "
             "model.layers.0.self_attn.q_proj.weight)", rule);
      for (size_t i : hit) params[i].trainable = true;
    }
  }
  if (spec.adapters()) {
    for (const std::string& module : spec.modules_to_save) {
      bool any = false;
      for (auto& p : params.all())
        if (!is_adapter(p) && module_matches(module_of(p.name), module, "peft.modules_to_save"))
          p.trainable = any = true;
      if (any) continue;
      if (config.tie_word_embeddings && (module == "lm_head" || module.ends_with(".lm_head")))
        fail("config key 'peft.modules_to_save': this model ties lm_head to "
             "model.embed_tokens (tie_word_embeddings); train the shared matrix with "
             "modules_to_save: [embed_tokens]");
      fail("config key 'peft.modules_to_save': '{}' matches no module of the model (e.g. "
           "lm_head, embed_tokens, model.norm)", module);
    }
  } else if (!spec.modules_to_save.empty()) {
    fail("config key 'peft.modules_to_save' applies to peft.method lora or ia3, not {}",
         peft_method_name(spec.method));
  }
}

void mark_quantized(ParameterSet& params, const PeftSpec& spec, const std::vector<size_t>& weights) {
  if (!spec.nf4) return;
  for (size_t i : weights) {
    Parameter& p = params[i];
    if (p.trainable)
      fail("config key 'model.quantize' = nf4: {} would train, but NF4 weights are frozen (QLoRA: "
           "peft.method lora; partial rules and modules_to_save must leave the projections frozen)",
           p.name);
    if (p.shape[1] % kNf4Block)
      fail("config key 'model.quantize' = nf4: {} has input width {}{}, not a multiple of the NF4 "
           "block of {}", p.name, p.shape[1], p.shards > 1 && p.split_dim == 1 ? " on this tensor-parallel rank" : "",
           kNf4Block);
    p.quantized = true;
    p.double_quant = spec.double_quant;
  }
}

void init_lora(ParameterSet& params, const LoraAttachment& lora, const LoraSpec& spec,
               uint64_t seed) {
  if (spec.gaussian_init)  // PEFT's "gaussian": N(0, 1/r)
    params.draw(lora.A, seed, Draw::Normal, 1.0f / float(spec.r));
  else  // kaiming_uniform_(a=sqrt(5)) on [r, in]: U(-1/sqrt(in), 1/sqrt(in))
    params.draw(lora.A, seed, Draw::Uniform, 1.0f / std::sqrt(float(params[lora.A].full_shape[1])));
  params.backend().zero(params[lora.B].value);
}

}  // namespace temper
