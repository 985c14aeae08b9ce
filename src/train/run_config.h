// The run configuration of `temper train CONFIG.yaml [key.sub=value ...]`.
//
// A config file is a YAML map whose nested maps name dotted keys ("train: {steps: 5}"
// is the key "train.steps"); every valid key, its type, default and help is listed by
// run_config_schema(). Loading reads the file, then applies the command-line overrides
// in order (later ones win), then checks every value's range. Unknown keys, values of
// the wrong type and out-of-range values are temper::Errors that name the key and where
// it was set (file:line or "command line"); an unknown key also suggests the closest
// valid one.
//
// A null value (`key: ~`, `key:` or `key=` on the command line) means: for a model
// override, "not set" (take the value from the preset / config.json); for a string key,
// the empty string; for any other key, an error.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace temper {

struct ModelConfig;

// Explicitly given model fields (model.<name> keys, named as in Hugging Face
// config.json); each one that is set replaces the value from the preset / config.json.
struct ModelOverrides {
  struct RopeScaling {  // model.rope_scaling.*
    std::optional<std::string> rope_type;
    std::optional<double> factor;
    std::optional<double> low_freq_factor;
    std::optional<double> high_freq_factor;
    std::optional<int64_t> original_max_position_embeddings;
    bool operator==(const RopeScaling&) const = default;
  };
  std::optional<std::string> model_type;
  std::optional<int64_t> vocab_size;
  std::optional<int64_t> hidden_size;
  std::optional<int64_t> intermediate_size;
  std::optional<int64_t> num_hidden_layers;
  std::optional<int64_t> num_attention_heads;
  std::optional<int64_t> num_key_value_heads;
  std::optional<int64_t> head_dim;
  std::optional<int64_t> max_position_embeddings;
  std::optional<double> rms_norm_eps;
  std::optional<double> rope_theta;
  std::optional<bool> tie_word_embeddings;
  std::optional<bool> attention_bias;
  std::optional<int64_t> sliding_window;
  std::optional<double> initializer_range;
  RopeScaling rope_scaling;
  bool operator==(const ModelOverrides&) const = default;
};

struct ModelSection {
  std::string preset;         // name of configs/models/<preset>.json (resolved by the caller)
  std::string config;         // path to a Hugging Face config.json (at most one of the three)
  std::string path;           // Hugging Face model directory: config.json + safetensors weights
  std::string dtype = "f32";  // parameter / activation dtype: f32 | bf16 | f16
  std::string adapter;        // a PEFT adapter directory to continue from
  std::string quantize;       // "" | nf4: the frozen projections stored as NF4 (QLoRA)
  bool double_quant = true;   // nf4: the block absmaxes quantized to 8 bits too
  ModelOverrides overrides;   // keys model.model_type, model.vocab_size, ...
  bool operator==(const ModelSection&) const = default;
};

struct DataSection {
  // synthetic | hdf5. Not given in the file or on the command line: hdf5 when data.path
  // is set, else synthetic (resolved when the config is loaded).
  std::string source = "synthetic";
  std::string path;                  // the HDF5 token dataset (data.source=hdf5)
  int64_t num_docs = 2000;           // synthetic: number of documents
  double val_fraction = 0.05;        // share of documents held out for validation
  int64_t min_doc_tokens = 8;        // synthetic: document length range (tokens)
  int64_t max_doc_tokens = 200;
  bool packing = true;  // pack documents into rows (attention stays within a document)
  bool operator==(const DataSection&) const = default;
};

struct TrainSection {
  int64_t steps = 0;              // optimizer steps; 0: from `epochs`
  double epochs = 0.0;            // passes over the training split (fractional); 0: from
                                  // `steps`; both 0: one epoch (train/run_length.h)
  int64_t micro_batch_size = 4;   // rows per micro-batch
  int64_t grad_accum = 1;         // micro-batches per optimizer step (0: from global_batch_size)
  int64_t global_batch_size = 0;  // sequences per optimizer step over all dp ranks (0: unset);
                                  // grad_accum = global / (micro_batch_size × dp)
  int64_t seq_len = 128;          // tokens per row
  int64_t eval_every = -1;        // validate every N steps (0 = never, -1 = every 10% of
                                  // the run when there is a validation split)
  int64_t eval_batches = 4;       // micro-batches per validation
  bool recompute = false;         // recompute activations in backward (saves memory)
  int64_t log_every = 1;          // log every N steps
  int64_t loss_chunk = 256;       // tokens per LM-head + cross-entropy chunk
  std::string progress = "auto";  // auto | bar | plain
  bool deterministic = false;     // ordered reductions, no atomics: identical bits per run
  int64_t max_nonfinite_steps = 20;  // stop (saving the last good state) after N skipped in a row
  bool operator==(const TrainSection&) const = default;
};

struct OptimSection {  // AdamW with a warmup + decay learning-rate schedule
  double lr = 3e-4;                     // peak learning rate
  double min_lr_ratio = 0.1;            // final lr = lr * min_lr_ratio (cosine, linear)
  int64_t warmup_steps = 0;             // linear warmup from 0 to lr
  std::string schedule = "cosine";      // cosine | linear | constant
  double weight_decay = 0.0;            // decoupled (AdamW)
  double beta1 = 0.9;
  double beta2 = 0.999;  // Hugging Face / torch default (docs/user-guide.md, "Defaults")
  double eps = 1e-8;
  double grad_clip = 1.0;               // clip the global gradient L2 norm (0 disables)
  double loss_scale_init = 65536.0;     // f16: initial dynamic loss scale
  int64_t loss_scale_window = 2000;     // f16: good steps before the scale doubles
  bool decay_norms_and_biases = false;  // apply weight decay to norm weights and biases too
  bool operator==(const OptimSection&) const = default;
};

struct ParallelSection {  // layout over the ranks mpirun / srun started
  int64_t tp = 1;            // tensor-parallel group size (innermost)
  int64_t zero = 0;          // ZeRO stage for the AdamW state: 0, 1, 2
  double bucket_mb = 25.0;   // data-parallel gradient bucket size
  double timeout_s = 300.0;  // collective timeout before the job aborts
  bool operator==(const ParallelSection&) const = default;
};

// Parameter-efficient fine-tuning (src/peft, docs/peft.md). Keys mirror PEFT's LoraConfig.
struct PeftSection {
  std::string method = "full";  // full | partial | lora | ia3 | prompt_tuning | p_tuning | prefix_tuning | adapter
  std::vector<std::string> trainable;      // partial: name rules (regex or shortcut)
  int64_t r = 8;                           // lora rank
  double alpha = 8.0;                      // lora_alpha
  double dropout = 0.0;                    // lora_dropout
  std::vector<std::string> target_modules;  // empty: the method's PEFT default for Llama
  std::vector<std::string> feedforward_modules;  // ia3: targets scaled at their input
  std::vector<std::string> layers;         // layers_to_transform (empty: all)
  std::vector<std::string> modules_to_save;
  bool use_rslora = false;
  bool use_dora = false;
  std::string init = "default";            // default | gaussian
  int64_t num_virtual_tokens = 20;         // prompt_tuning, p_tuning, prefix_tuning
  std::string init_text;                   // prompt_tuning: init from this text's embeddings
  bool prefix_projection = false;          // prefix_tuning: reparameterisation MLP
  int64_t encoder_hidden_size = 0;         // p_tuning, prefix MLP width (0: hidden size)
  int64_t reduction_factor = 16;           // adapter: bottleneck = hidden / this
  std::string adapter_placement = "houlsby";  // adapter: houlsby | pfeiffer
  bool operator==(const PeftSection&) const = default;
};

struct CheckpointSection {  // OUT_DIR/checkpoints/step-N.h5 and its `latest` pointer
  int64_t every = 0;     // save every N steps and at the end (0 = only when stopped early)
  int64_t keep = 3;      // complete checkpoints kept (the oldest are deleted)
  // true: continue from OUT_DIR/checkpoints/latest when there is one, refusing a config
  // that breaks exactness (train/resume_check.h); force: continue anyway; false: refuse to
  // start where checkpoints exist. Bool spellings (yes, off, ...) are read as true / false.
  std::string resume = "true";
  std::string load;      // start from this checkpoint when OUT_DIR has none of its own
  bool operator==(const CheckpointSection&) const = default;
};

struct RunConfig {
  int64_t seed = 1234;
  std::string out_dir = "runs/default";
  std::string backend = "cpu";  // cpu | cuda | cuda:N
  ModelSection model;
  DataSection data;
  TrainSection train;
  OptimSection optim;
  ParallelSection parallel;
  PeftSection peft;
  CheckpointSection checkpoint;
  bool operator==(const RunConfig&) const = default;
};

// Reads the YAML file at `path`, then applies `overrides` ("key.sub=value", the value
// parsed as a YAML scalar) and validates. Throws temper::Error (see the top).
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from YAML text; `source_name` stands for the file in messages.
RunConfig run_config_from_yaml_text(const std::string& text, const std::string& source_name,
                                    const std::vector<std::string>& overrides = {});
// Checks every value's range (loading already does); throws temper::Error naming the key.
void validate_run_config(const RunConfig& config);
// train.global_batch_size (when set) into train.grad_accum for `dp` data-parallel ranks;
// a global batch that does not divide, or a grad_accum that disagrees, is an error.
void resolve_global_batch(RunConfig& config, int dp);

// `config` with its file paths absolute (model.path, model.config, model.adapter, a
// model.preset given as a path, data.path, checkpoint.load), against the working directory;
// out_dir stays as given.
RunConfig with_absolute_paths(const RunConfig& config);

// The full effective config as YAML, every key (unset model overrides as `~`) with its
// help as a comment; loading it gives back an equal RunConfig.
std::string to_yaml(const RunConfig& config);

// Writes the model overrides that are set into `model` (does not call finalize()).
void apply_model_overrides(const RunConfig& config, ModelConfig& model);

// ---- the schema ---------------------------------------------------------------------
enum class ConfigValueType { Int, Float, Bool, String, List };
const char* config_value_type_name(ConfigValueType type);  // "int", "float", ...

struct ConfigKeyInfo {
  std::string key;            // dotted, e.g. "train.steps"
  ConfigValueType type;
  bool optional;              // a model override: unset unless given
  std::string default_value;  // as YAML text ("~" for an unset optional)
  std::string help;
};
// Every valid key, in file order (sections contiguous).
const std::vector<ConfigKeyInfo>& run_config_schema();
// The valid key closest to `key` (edit distance over the dotted key or over its last
// component), or nullopt when none is close.
std::optional<std::string> closest_config_key(const std::string& key);

}  // namespace temper
