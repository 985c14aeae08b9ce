// What a run trains (docs/peft.md): a PeftSpec says which method; these functions turn it
// into parameters. The model calls them while it declares its parameters:
//   - declare_lora adds a projection's adapter (PEFT's names: <module>.lora_A.weight,
//     <module>.lora_B.weight, <module>.lora_magnitude_vector) right after its block's
//     base parameters, so the block's gradients stay one group;
//   - mark_trainable sets every parameter's `trainable` flag before the ParameterSet is
//     allocated: frozen parameters get no gradient and no optimizer state.
// Errors name the config key and the rule, target or module that is wrong.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/parameters.h"
#include "peft/projection.h"

namespace temper {

enum class PeftMethod { Full, Partial, Lora, Ia3, PromptTuning, PTuning, PrefixTuning, Adapter };

struct LoraSpec {
  int64_t r = 8;
  double alpha = 8.0;
  double dropout = 0.0;
  bool rslora = false;         // scale alpha / sqrt(r) instead of alpha / r
  bool dora = false;           // + magnitude vector
  bool gaussian_init = false;  // A ~ N(0, 1/r) instead of Kaiming-uniform (a = sqrt(5))
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};  // or {"all-linear"}
  std::vector<int64_t> layers;  // blocks to adapt (empty: all)
  float scale() const;
};

// IA3 (Liu et al. 2022): a learned vector scales each targeted projection's output, or for
// a feed-forward module its input (PEFT's IA3Config). Empty targets: PEFT's Llama default,
// k_proj, v_proj and down_proj, with down_proj feed-forward.
struct Ia3Spec {
  std::vector<std::string> target_modules;
  std::vector<std::string> feedforward_modules;
};

// Soft prompts (peft/prompts.h): prompt tuning, P-tuning, prefix tuning / P-tuning v2.
struct PromptSpec {
  int64_t num_virtual_tokens = 20;
  std::string init_text;             // prompt tuning: PEFT's TEXT init (else random)
  bool prefix_projection = false;    // prefix tuning: PEFT's reparameterisation MLP
  int64_t encoder_hidden_size = 0;   // p_tuning, prefix projection: MLP width (0: hidden)
};

// Bottleneck adapters (Houlsby): after attention and after the MLP, or (Pfeiffer) after
// the MLP only; width hidden / reduction_factor.
struct BottleneckSpec {
  int64_t reduction_factor = 16;
  bool mlp_only = false;  // Pfeiffer's placement
};

struct PeftSpec {
  PeftMethod method = PeftMethod::Full;
  PromptSpec prompt;
  BottleneckSpec bottleneck;
  // QLoRA: the seven projections of every block stored as NF4 (frozen), dequantized where
  // they are used (model.quantize: nf4, model.double_quant).
  bool nf4 = false;
  bool double_quant = true;
  std::vector<std::string> trainable;        // partial: name rules
  LoraSpec lora;
  Ia3Spec ia3;
  std::vector<std::string> modules_to_save;  // lora, ia3: trained in full (lm_head, embed_tokens)
  // Methods whose result is an adapter beside the frozen base (a PEFT adapter directory).
  bool adapters() const { return method != PeftMethod::Full && method != PeftMethod::Partial; }
  bool virtual_tokens() const { return method == PeftMethod::PromptTuning || method == PeftMethod::PTuning; }
};

const char* peft_method_name(PeftMethod m);
PeftMethod peft_method_of(const std::string& name);  // throws for an unknown name
// The spec as JSON (checkpoints keep it in /meta/extra "peft"), and back.
nlohmann::json peft_spec_to_json(const PeftSpec& spec);
PeftSpec peft_spec_from_json(const nlohmann::json& j);

// A block's projections in order, with PEFT's module names and where they sit.
struct ProjectionSite {
  const char* module;  // "q_proj"
  const char* parent;  // "self_attn" | "mlp"
  bool column_parallel;
};
constexpr ProjectionSite kProjectionSites[7] = {
    {"q_proj", "self_attn", true},  {"k_proj", "self_attn", true},  {"v_proj", "self_attn", true},
    {"o_proj", "self_attn", false}, {"gate_proj", "mlp", true},     {"up_proj", "mlp", true},
    {"down_proj", "mlp", false}};
// "model.layers.3.self_attn.q_proj"
std::string projection_path(int64_t layer, const ProjectionSite& site);

// Which projections of which blocks a method adapts: `targets` (module names, dotted
// suffixes, regexes, or all-linear) over blocks `layers` (empty: all). Throws when a target
// or a layer index matches nothing, naming `key` (the config key) and the target.
class ProjectionTargets {
 public:
  ProjectionTargets() = default;  // nothing selected
  ProjectionTargets(const std::vector<std::string>& targets, const std::vector<int64_t>& layers,
                    int64_t num_layers, const char* key, const char* method);
  bool selected(int64_t layer, int site) const {
    return size_t(layer * 7 + site) < chosen_.size() && chosen_[size_t(layer * 7 + site)];
  }

 private:
  std::vector<bool> chosen_;  // [layer × 7]
};

// The LoRA / DoRA targets of a spec.
ProjectionTargets lora_targets(const LoraSpec& spec, int64_t num_layers);
// IA3's targets and, among them, its feed-forward ones (defaults filled in).
ProjectionTargets ia3_targets(const Ia3Spec& spec, int64_t num_layers);
ProjectionTargets ia3_feedforward(const Ia3Spec& spec, int64_t num_layers);

// Declares IA3's vector of projection `path` ([out], or for a feed-forward module [in]),
// ones at init, split as the output rows or input columns are; PEFT's name <path>.ia3_l.
Ia3Attachment declare_ia3(ParameterSet& params, const std::string& path, int64_t out, int64_t in,
                          bool column_parallel, bool feedforward, int tp_size, int tp_rank);

// Declares the adapter of projection `path` whose base is [out, in] (full shapes), split
// as its site says over tp (docs/peft.md, "Layouts tested"). ParamInit::Adapter: init_lora draws them.
LoraAttachment declare_lora(ParameterSet& params, const LoraSpec& spec, const std::string& path,
                            int64_t out, int64_t in, bool column_parallel, int tp_size,
                            int tp_rank);

// Sets every parameter's `trainable` flag (before ParameterSet::allocate).
void mark_trainable(ParameterSet& params, const PeftSpec& spec, const ModelConfig& config);
// With spec.nf4: marks the projection weights `weights` quantized; a trained one (or one
// whose input width is not a multiple of 64 on this rank) is an error naming it.
void mark_quantized(ParameterSet& params, const PeftSpec& spec, const std::vector<size_t>& weights);

// Draws A (Kaiming-uniform or gaussian, from its own Philox stream by name, so any tp
// shard holds its part of the one full tensor) and zeroes B. DoRA's magnitude is set by
// the model from the base weights (Transformer::init_adapters).
void init_lora(ParameterSet& params, const LoraAttachment& lora, const LoraSpec& spec,
               uint64_t seed);

}  // namespace temper
