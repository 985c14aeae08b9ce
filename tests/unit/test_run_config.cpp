// The run configuration: YAML + command-line overrides -> RunConfig, its errors, and
// the to_yaml round trip.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <regex>
#include <set>

#include "core/error.h"
#include "model/config.h"
#include "support/test_util.h"
#include "train/run_config.h"

namespace temper {
namespace {

using test::error_of;

RunConfig from_text(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return run_config_from_yaml_text(text, "test.yaml", overrides);
}

std::string write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
  return path.string();
}

// Found by tests/fuzz/fuzz_run_config.cpp (regression input regression-nul-in-override-key):
// an override whose key held a NUL byte gave a message cut short at it (what() is a C
// string), losing where the error came from; temper::Error writes NUL as \0.
TEST(RunConfig, AnOverrideKeyWithANulByteIsNamedWhole) {
  const std::string message = error_of([] { from_text("", {std::string("train.s\0teps=3", 14)}); });
  EXPECT_NE(message.find("train.s\\0teps"), std::string::npos) << message;
  EXPECT_NE(message.find("on the command line"), std::string::npos) << message;
}

// Found by tests/fuzz/fuzz_run_config.cpp's long run (slow inputs): suggestions for an
// unknown key took time growing with its length (edit distances to every schema key) and
// with the square of its dots (sections stripped one by one). A 1 MB key of dots now gets
// its error at once (quadratic before: hours for this key; the test timeout would stop it).
TEST(RunConfig, AHugeUnknownKeyIsRefusedWithoutSearchingForSuggestions) {
  const std::string dots(1 << 20, '.'), key = "train" + dots + "x";
  const std::string from_override = error_of([&] { from_text("", {key + "=1"}); });
  EXPECT_NE(from_override.find("unknown config key"), std::string::npos) << from_override.substr(0, 200);
  EXPECT_NE(from_override.find("valid keys under 'train'"), std::string::npos) << from_override.substr(0, 200);
  const std::string from_file = error_of([&] { from_text("train:\n  ? s" + std::string(1 << 20, 'x') + "\n  : 1\n"); });
  EXPECT_NE(from_file.find("unknown config key"), std::string::npos) << from_file.substr(0, 200);
}

TEST(RunConfig, DefaultsLoadFromEmptyFile) {
  const auto dir = test::temp_dir("run_config_defaults");
  const RunConfig c = load_run_config(write_file(dir / "empty.yaml", ""));
  EXPECT_EQ(c, RunConfig{});
  EXPECT_EQ(c.seed, 1234);
  EXPECT_EQ(c.out_dir, "runs/default");
  EXPECT_EQ(c.backend, "cpu");
  EXPECT_EQ(c.model.dtype, "f32");
  EXPECT_EQ(c.model.overrides, ModelOverrides{});
  EXPECT_EQ(c.data.source, "synthetic");
  EXPECT_EQ(c.train.steps, 0);     // neither steps nor epochs: one epoch (run_length.h)
  EXPECT_EQ(c.train.epochs, 0.0);
  EXPECT_EQ(c.train.eval_every, -1);  // every 10% of the run when there is a val split
  EXPECT_EQ(c.optim.beta2, 0.999);
  EXPECT_EQ(c.train.micro_batch_size, 4);
  EXPECT_EQ(c.optim.lr, 3e-4);
  EXPECT_EQ(c.optim.schedule, "cosine");
  EXPECT_EQ(c.optim.grad_clip, 1.0);
  // Comments only, and empty sections, also keep the defaults.
  EXPECT_EQ(from_text("# nothing here\n"), RunConfig{});
  EXPECT_EQ(from_text("train:\noptim:\n"), RunConfig{});
  // The defaults themselves pass validation.
  EXPECT_NO_THROW(validate_run_config(RunConfig{}));
}

TEST(RunConfig, NestedMapsAreRead) {
  const RunConfig c = from_text(
      "seed: 7\n"
      "backend: cuda:1\n"
      "model:\n"
      "  preset: smollm2-tiny\n"
      "  num_hidden_layers: 3\n"
      "  rope_scaling:\n"
      "    rope_type: llama3\n"
      "    factor: 8\n"
      "data:\n"
      "  packing: false\n"
      "train:\n"
      "  steps: 12\n"
      "  seq_len: 64\n"
      "optim:\n"
      "  lr: 1.5e-3\n"
      "  schedule: linear\n");
  RunConfig want;
  want.seed = 7;
  want.backend = "cuda:1";
  want.model.preset = "smollm2-tiny";
  want.model.overrides.num_hidden_layers = 3;
  want.model.overrides.rope_scaling.rope_type = "llama3";
  want.model.overrides.rope_scaling.factor = 8.0;
  want.data.packing = false;
  want.train.steps = 12;
  want.train.seq_len = 64;
  want.optim.lr = 1.5e-3;
  want.optim.schedule = "linear";
  EXPECT_EQ(c, want);
  // A dotted key written flat at the top level means the same as the nested form.
  EXPECT_EQ(from_text("train.steps: 12\n").train.steps, 12);
}

TEST(RunConfig, OverridesWinOverTheFile) {
  const auto dir = test::temp_dir("run_config_overrides");
  const std::string path =
      write_file(dir / "run.yaml", "train:\n  steps: 12\n  seq_len: 64\noptim:\n  lr: 0.01\n");
  const RunConfig c = load_run_config(
      path, {"train.steps=30", "optim.schedule=constant", "model.vocab_size=500",
             "optim.lr=0.02", "optim.lr=0.03", "out_dir=runs/x y"});
  EXPECT_EQ(c.train.steps, 30);
  EXPECT_EQ(c.train.seq_len, 64);  // from the file, not overridden
  EXPECT_EQ(c.optim.schedule, "constant");
  EXPECT_EQ(c.model.overrides.vocab_size, std::optional<int64_t>(500));
  EXPECT_EQ(c.optim.lr, 0.03);  // the later override wins
  EXPECT_EQ(c.out_dir, "runs/x y");
}

TEST(RunConfig, NullValues) {
  // A null override unsets a model override from the file; a null string is "".
  const RunConfig c = from_text("model:\n  vocab_size: 500\n  preset: tiny\n",
                                {"model.vocab_size=", "model.preset="});
  EXPECT_FALSE(c.model.overrides.vocab_size.has_value());
  EXPECT_EQ(c.model.preset, "");
  // For an int key, no value is an error naming the key.
  const std::string msg = error_of([] { from_text("train:\n  steps:\n"); });
  EXPECT_NE(msg.find("train.steps"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no value"), std::string::npos) << msg;
}

TEST(RunConfig, OverrideWithoutEqualsIsAnError) {
  const std::string msg = error_of([] { from_text("", {"train.steps"}); });
  EXPECT_NE(msg.find("'train.steps'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("key=value"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { from_text("", {"=5"}); }), "");
  EXPECT_NE(error_of([] { from_text("", {"train.steps=[1, 2]"}); }), "");
}

TEST(RunConfig, UnknownKeyInFileSuggestsTheClosest) {
  const std::string msg =
      error_of([] { run_config_from_yaml_text("train:\n  stpes: 5\n", "configs/tiny.yaml", {}); });
  EXPECT_NE(msg.find("unknown config key 'train.stpes' in configs/tiny.yaml"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("(did you mean 'train.steps'?)"), std::string::npos) << msg;
  // The line of the key is named too.
  EXPECT_NE(msg.find("configs/tiny.yaml:2"), std::string::npos) << msg;
}

TEST(RunConfig, UnknownKeyOnCommandLineSuggestsTheClosest) {
  struct Case {
    std::string override_text, key, suggestion;
  };
  // Typo in the full key; right name in the wrong section; no section at all.
  for (const Case& k : {Case{"optim.wieght_decay=0.1", "optim.wieght_decay", "optim.weight_decay"},
                        Case{"train.lr=0.1", "train.lr", "optim.lr"},
                        Case{"grad_accum=2", "grad_accum", "train.grad_accum"}}) {
    const std::string msg = error_of([&] { from_text("", {k.override_text}); });
    EXPECT_NE(msg.find("unknown config key '" + k.key + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("command line"), std::string::npos) << msg;
    EXPECT_NE(msg.find("did you mean '" + k.suggestion + "'"), std::string::npos) << msg;
  }
  // Nothing close: no suggestion, but the valid keys of the section are listed.
  const std::string msg = error_of([] { from_text("", {"train.zzzzzzzzzz=1"}); });
  EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;
  EXPECT_NE(msg.find("micro_batch_size"), std::string::npos) << msg;
}

TEST(RunConfig, ClosestKey) {
  EXPECT_EQ(closest_config_key("train.stpes"), std::optional<std::string>("train.steps"));
  EXPECT_EQ(closest_config_key("model.rope_scaling.factr"),
            std::optional<std::string>("model.rope_scaling.factor"));
  EXPECT_EQ(closest_config_key("beta2"), std::optional<std::string>("optim.beta2"));
  EXPECT_EQ(closest_config_key("completely.unrelated"), std::nullopt);
}

TEST(RunConfig, WrongTypeIsAnError) {
  struct Case {
    std::string yaml, key, value, type;
  };
  for (const Case& k : {Case{"train:\n  steps: many\n", "train.steps", "many", "int"},
                        Case{"train:\n  steps: 2.5\n", "train.steps", "2.5", "int"},
                        Case{"optim:\n  lr: fast\n", "optim.lr", "fast", "float"},
                        Case{"data:\n  packing: maybe\n", "data.packing", "maybe", "bool"},
                        Case{"model:\n  vocab_size: big\n", "model.vocab_size", "big", "int"}}) {
    const std::string msg = error_of([&] { from_text(k.yaml); });
    EXPECT_NE(msg.find("'" + k.key + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'" + k.value + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected " + k.type), std::string::npos) << msg;
  }
  // Same on the command line; and a map or a sequence where a value belongs.
  EXPECT_NE(error_of([] { from_text("", {"train.recompute=2"}); }).find("expected bool"),
            std::string::npos);
  EXPECT_NE(error_of([] { from_text("train:\n  steps: [1, 2]\n"); }).find("sequence"),
            std::string::npos);
  EXPECT_NE(error_of([] { from_text("seed:\n  a: 1\n"); }).find("'seed'"), std::string::npos);
  EXPECT_NE(error_of([] { from_text("train: 5\n"); }).find("section"), std::string::npos);
}

TEST(RunConfig, OutOfRangeValuesAreErrors) {
  for (const std::string bad :
       {"train.steps=-1", "train.micro_batch_size=0", "train.grad_accum=-1", "train.seq_len=1",
        "train.eval_every=-2", "train.epochs=-0.5", "train.eval_batches=0", "train.log_every=0", "train.loss_chunk=0",
        "train.progress=fancy", "optim.lr=-0.001", "optim.warmup_steps=-1",
        "optim.schedule=step", "optim.beta1=1", "optim.beta2=-0.5", "optim.grad_clip=-1",
        "optim.eps=0", "optim.weight_decay=-0.1", "optim.min_lr_ratio=1.5", "seed=-1",
        "backend=gpu", "backend=cuda:", "model.dtype=fp8", "model.vocab_size=0",
        "model.num_key_value_heads=-1", "model.model_type=gpt2", "data.num_docs=0",
        "data.val_fraction=1", "data.min_doc_tokens=1", "data.max_doc_tokens=4",
        "data.source=parquet", "out_dir="}) {
    const std::string key = bad.substr(0, bad.find('='));
    const std::string msg = error_of([&] { from_text("", {bad}); });
    EXPECT_NE(msg.find("'" + key + "'"), std::string::npos) << bad << " -> " << msg;
    EXPECT_NE(msg.find("command line"), std::string::npos) << bad << " -> " << msg;
  }
  // The boundaries themselves are valid.
  EXPECT_NO_THROW(from_text("", {"train.seq_len=2", "optim.beta1=0", "optim.grad_clip=0",
                                 "optim.lr=0", "optim.min_lr_ratio=1", "train.eval_every=0",
                                 "backend=cuda:3", "model.dtype=bf16", "data.val_fraction=0"}));
  // Two keys that disagree.
  EXPECT_NE(error_of([] { from_text("", {"model.preset=a", "model.config=b.json"}); })
                .find("model.config"),
            std::string::npos);
  // An error from the file names the file and line.
  const std::string msg = error_of([] { from_text("\ntrain:\n  seq_len: 1\n"); });
  EXPECT_NE(msg.find("test.yaml:3"), std::string::npos) << msg;
}

TEST(RunConfig, CheckpointKeys) {
  const RunConfig d = from_text("");
  EXPECT_EQ(d.checkpoint.every, 0);
  EXPECT_EQ(d.checkpoint.keep, 3);
  EXPECT_EQ(d.checkpoint.resume, "true");
  EXPECT_EQ(d.checkpoint.load, "");
  EXPECT_EQ(d.train.max_nonfinite_steps, 20);
  const RunConfig c = from_text("checkpoint:\n  every: 50\n  keep: 1\n  resume: false\n",
                                {"checkpoint.load=runs/a/checkpoints/step-00000050.h5",
                                 "train.max_nonfinite_steps=0"});
  EXPECT_EQ(c.checkpoint.every, 50);
  EXPECT_EQ(c.checkpoint.keep, 1);
  EXPECT_EQ(c.checkpoint.resume, "false");  // a bool spelling, read as one
  EXPECT_EQ(c.checkpoint.load, "runs/a/checkpoints/step-00000050.h5");
  EXPECT_EQ(c.train.max_nonfinite_steps, 0);
  for (const std::string bad : {"checkpoint.every=-1", "checkpoint.keep=0",
                                "train.max_nonfinite_steps=-2"}) {
    const std::string key = bad.substr(0, bad.find('='));
    const std::string msg = error_of([&] { from_text("", {bad}); });
    EXPECT_NE(msg.find("'" + key + "'"), std::string::npos) << bad << " -> " << msg;
  }
  EXPECT_EQ(from_text("", {"checkpoint.resume=force"}).checkpoint.resume, "force");
  EXPECT_EQ(from_text("", {"checkpoint.resume=on"}).checkpoint.resume, "true");
  EXPECT_NE(error_of([] { from_text("", {"checkpoint.resume=maybe"}); })
                .find("must be one of \"true\", \"false\", \"force\""),
            std::string::npos);
  EXPECT_NE(error_of([] { from_text("", {"checkpoint.evry=5"}); }).find("checkpoint.every"),
            std::string::npos);
}

TEST(RunConfig, Hdf5SourceNeedsAPath) {
  const std::string msg = error_of([] { from_text("data:\n  source: hdf5\n"); });
  EXPECT_NE(msg.find("data.path"), std::string::npos) << msg;
  EXPECT_NE(msg.find("temper prepare"), std::string::npos) << msg;
  EXPECT_NO_THROW(from_text("data:\n  source: hdf5\n  path: d.h5\n"));
}

// A data.path is never ignored: it makes the source hdf5 when data.source is not given,
// and is an error beside an explicit data.source=synthetic (the generated corpus would be
// trained on without a word).
TEST(RunConfig, DataPathMakesTheSourceHdf5AndIsNeverIgnored) {
  EXPECT_EQ(from_text("data:\n  path: d.h5\n").data.source, "hdf5");
  EXPECT_EQ(from_text("", {"data.path=d.h5"}).data.source, "hdf5");
  EXPECT_EQ(from_text("").data.source, "synthetic");
  const std::string msg = error_of([] { from_text("data:\n  source: synthetic\n", {"data.path=d.h5"}); });
  EXPECT_NE(msg.find("'data.path' = \"d.h5\" on the command line is set, but 'data.source' is "
                     "synthetic in test.yaml:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("set data.source=hdf5"), std::string::npos) << msg;
  // The written config reads back as the same run.
  const RunConfig c = from_text("", {"data.path=d.h5"});
  EXPECT_EQ(from_text(to_yaml(c)), c);
}

TEST(RunConfig, StepsOrEpochsNotBoth) {
  EXPECT_EQ(from_text("", {"train.epochs=1.5"}).train.epochs, 1.5);
  const std::string both = error_of([] { from_text("train:\n  steps: 10\n", {"train.epochs=2"}); });
  EXPECT_NE(both.find("'train.steps' = 10 in test.yaml:2 and 'train.epochs' = 2.0 on the command "
                      "line are both set"), std::string::npos) << both;
  EXPECT_NE(error_of([] { from_text("", {"train.epochs=-1"}); }).find("'train.epochs'"),
            std::string::npos);
  EXPECT_NE(error_of([] { from_text("", {"train.eval_every=-2"}); }).find("'train.eval_every'"),
            std::string::npos);
}

// train.global_batch_size decides grad_accum for the data-parallel size (global / (micro ×
// dp)); one that does not divide, or a grad_accum that disagrees, is an error naming both.
TEST(RunConfig, GlobalBatchSizeSetsTheAccumulation) {
  RunConfig c = from_text("train:\n  micro_batch_size: 2\n  global_batch_size: 16\n", {});
  EXPECT_EQ(c.train.grad_accum, 0);  // not given: follows from the global batch
  RunConfig dp1 = c, dp2 = c, dp4 = c;
  resolve_global_batch(dp1, 1);
  resolve_global_batch(dp2, 2);
  resolve_global_batch(dp4, 4);
  EXPECT_EQ(dp1.train.grad_accum, 8);
  EXPECT_EQ(dp2.train.grad_accum, 4);
  EXPECT_EQ(dp4.train.grad_accum, 2);
  const std::string uneven = error_of([&] {
    RunConfig x = c;
    resolve_global_batch(x, 3);
  });
  EXPECT_NE(uneven.find("'train.global_batch_size' = 16 is not a multiple of train.micro_batch_size (2) x "
                        "data-parallel ranks (3) = 6"), std::string::npos) << uneven;
  RunConfig agree = from_text("train:\n  micro_batch_size: 2\n  global_batch_size: 16\n", {"train.grad_accum=4"});
  resolve_global_batch(agree, 2);
  EXPECT_EQ(agree.train.grad_accum, 4);
  const std::string disagree = error_of([] {
    RunConfig x = from_text("train:\n  micro_batch_size: 2\n  global_batch_size: 16\n", {"train.grad_accum=3"});
    resolve_global_batch(x, 2);
  });
  EXPECT_NE(disagree.find("'train.global_batch_size' = 16 and 'train.grad_accum' = 3 disagree"), std::string::npos)
      << disagree;
  RunConfig none = from_text("", {});  // no global batch: grad_accum as given
  resolve_global_batch(none, 4);
  EXPECT_EQ(none.train.grad_accum, 1);
  EXPECT_NE(error_of([] { from_text("", {"train.global_batch_size=-1"}); }).find("'train.global_batch_size'"),
            std::string::npos);
}

TEST(RunConfig, MalformedYamlNamesFileAndLine) {
  const std::string msg = error_of(
      [] { run_config_from_yaml_text("seed: 1\ntrain:\n  steps: [1, 2\n", "configs/bad.yaml", {}); });
  EXPECT_NE(msg.find("configs/bad.yaml"), std::string::npos) << msg;
  EXPECT_TRUE(std::regex_search(msg, std::regex("line [0-9]+"))) << msg;
  // The line number is the right one.
  const std::string msg2 =
      error_of([] { run_config_from_yaml_text("seed: 1\nout_dir: a\nbackend: b: c\n", "f.yaml", {}); });
  EXPECT_NE(msg2.find("f.yaml line 3"), std::string::npos) << msg2;
  // Not a map at the top.
  EXPECT_NE(error_of([] { from_text("- 1\n- 2\n"); }).find("test.yaml"), std::string::npos);
  // Duplicate keys.
  EXPECT_NE(error_of([] { from_text("train:\n  steps: 1\n  steps: 2\n"); }).find("twice"),
            std::string::npos);
}

TEST(RunConfig, MissingFileIsAnError) {
  const auto dir = test::temp_dir("run_config_missing");
  const std::string path = (dir / "nope.yaml").string();
  const std::string msg = error_of([&] { load_run_config(path, {}); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
}

TEST(RunConfig, ToYamlRoundTrip) {
  const auto dir = test::temp_dir("run_config_round_trip");
  // Defaults, and a config that differs from them in every section, with awkward
  // values: floats that need all their digits, a quoted string, overrides set to 0/false.
  RunConfig c = from_text("", {"seed=99", "out_dir='runs/a: \"b\" #1'", "backend=cuda:0",
                               "model.preset=smollm2", "model.dtype=bf16",
                               "model.model_type=qwen2", "model.vocab_size=1000",
                               "model.sliding_window=0", "model.tie_word_embeddings=false",
                               "model.rope_theta=500000.0", "model.rms_norm_eps=1e-6",
                               "model.rope_scaling.rope_type=\"\"", "data.packing=false",
                               "data.val_fraction=0.1", "train.steps=7", "train.recompute=true",
                               "train.progress=plain", "optim.lr=0.00030000000000000003",
                               "optim.eps=1e-12", "optim.schedule=linear"});
  c.optim.beta2 = 1.0 / 3.0;
  for (const RunConfig& original : {RunConfig{}, c}) {
    const std::string yaml = to_yaml(original);
    const RunConfig back = load_run_config(write_file(dir / "config.yaml", yaml), {});
    EXPECT_EQ(back, original) << yaml;
    EXPECT_EQ(to_yaml(back), yaml);
  }
  EXPECT_EQ(c.model.overrides.rope_scaling.rope_type, std::optional<std::string>(""));
  // Every schema key is written.
  const std::string yaml = to_yaml(c);
  for (const ConfigKeyInfo& info : run_config_schema()) {
    const std::string last = info.key.substr(info.key.rfind('.') + 1);
    EXPECT_NE(yaml.find(last + ":"), std::string::npos) << info.key;
  }
}

TEST(RunConfig, SchemaListsEveryKeyOnce) {
  std::set<std::string> keys;
  for (const ConfigKeyInfo& info : run_config_schema()) {
    EXPECT_TRUE(keys.insert(info.key).second) << info.key;
    EXPECT_FALSE(info.help.empty()) << info.key;
    EXPECT_EQ(info.optional, info.default_value == "~") << info.key;
  }
  for (const char* key : {"seed", "out_dir", "backend", "model.preset", "model.config",
                          "data.path", "train.loss_chunk", "optim.decay_norms_and_biases",
                          "model.rope_scaling.original_max_position_embeddings"})
    EXPECT_TRUE(keys.count(key)) << key;
}

// Each model override key: the override text and the ModelConfig change it must make.
struct ModelOverrideCase {
  std::string override_text;
  std::function<void(ModelConfig&)> expected_change;
};

std::vector<ModelOverrideCase> model_override_cases() {
  return {
      {"model.model_type=mistral", [](ModelConfig& m) { m.model_type = "mistral"; }},
      {"model.vocab_size=321", [](ModelConfig& m) { m.vocab_size = 321; }},
      {"model.hidden_size=96", [](ModelConfig& m) { m.hidden_size = 96; }},
      {"model.intermediate_size=250", [](ModelConfig& m) { m.intermediate_size = 250; }},
      {"model.num_hidden_layers=5", [](ModelConfig& m) { m.num_hidden_layers = 5; }},
      {"model.num_attention_heads=6", [](ModelConfig& m) { m.num_attention_heads = 6; }},
      {"model.num_key_value_heads=3", [](ModelConfig& m) { m.num_key_value_heads = 3; }},
      {"model.head_dim=16", [](ModelConfig& m) { m.head_dim = 16; }},
      {"model.max_position_embeddings=777",
       [](ModelConfig& m) { m.max_position_embeddings = 777; }},
      {"model.rms_norm_eps=1e-6", [](ModelConfig& m) { m.rms_norm_eps = 1e-6; }},
      {"model.rope_theta=12345.5", [](ModelConfig& m) { m.rope_theta = 12345.5; }},
      {"model.tie_word_embeddings=true", [](ModelConfig& m) { m.tie_word_embeddings = true; }},
      {"model.attention_bias=true", [](ModelConfig& m) { m.attention_bias = true; }},
      {"model.sliding_window=64", [](ModelConfig& m) { m.sliding_window = 64; }},
      {"model.initializer_range=0.5", [](ModelConfig& m) { m.initializer_range = 0.5; }},
      {"model.rope_scaling.rope_type=llama3",
       [](ModelConfig& m) { m.rope_scaling.rope_type = "llama3"; }},
      {"model.rope_scaling.factor=32", [](ModelConfig& m) { m.rope_scaling.factor = 32; }},
      {"model.rope_scaling.low_freq_factor=0.5",
       [](ModelConfig& m) { m.rope_scaling.low_freq_factor = 0.5; }},
      {"model.rope_scaling.high_freq_factor=9",
       [](ModelConfig& m) { m.rope_scaling.high_freq_factor = 9; }},
      {"model.rope_scaling.original_max_position_embeddings=1024",
       [](ModelConfig& m) { m.rope_scaling.original_max_position_embeddings = 1024; }},
  };
}

void expect_same_model(const ModelConfig& a, const ModelConfig& b, const std::string& what) {
  EXPECT_EQ(a.model_type, b.model_type) << what;
  EXPECT_EQ(a.vocab_size, b.vocab_size) << what;
  EXPECT_EQ(a.hidden_size, b.hidden_size) << what;
  EXPECT_EQ(a.intermediate_size, b.intermediate_size) << what;
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers) << what;
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads) << what;
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads) << what;
  EXPECT_EQ(a.head_dim, b.head_dim) << what;
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings) << what;
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps) << what;
  EXPECT_EQ(a.rope_theta, b.rope_theta) << what;
  EXPECT_EQ(a.rope_scaling.rope_type, b.rope_scaling.rope_type) << what;
  EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor) << what;
  EXPECT_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor) << what;
  EXPECT_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor) << what;
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings,
            b.rope_scaling.original_max_position_embeddings)
      << what;
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings) << what;
  EXPECT_EQ(a.attention_bias, b.attention_bias) << what;
  EXPECT_EQ(a.sliding_window, b.sliding_window) << what;
  EXPECT_EQ(a.initializer_range, b.initializer_range) << what;
  EXPECT_EQ(a.bos_token_id, b.bos_token_id) << what;
  EXPECT_EQ(a.eos_token_id, b.eos_token_id) << what;
}

TEST(RunConfig, ApplyModelOverridesSetsExactlyTheGivenFields) {
  const std::vector<ModelOverrideCase> cases = model_override_cases();
  // Every model override key of the schema has a case here.
  size_t optional_keys = 0;
  for (const ConfigKeyInfo& info : run_config_schema()) optional_keys += info.optional;
  EXPECT_EQ(cases.size(), optional_keys);

  ModelConfig base;  // a shape as a preset would give
  base.vocab_size = 1000;
  base.hidden_size = 64;
  base.intermediate_size = 128;
  base.num_hidden_layers = 2;
  base.num_attention_heads = 4;
  base.num_key_value_heads = 2;

  // No overrides: nothing changes.
  ModelConfig untouched = base;
  apply_model_overrides(RunConfig{}, untouched);
  expect_same_model(untouched, base, "no overrides");

  // One at a time: exactly that field changes.
  for (const ModelOverrideCase& k : cases) {
    ModelConfig got = base, want = base;
    apply_model_overrides(from_text("", {k.override_text}), got);
    k.expected_change(want);
    expect_same_model(got, want, k.override_text);
  }

  // All together (from a YAML file's nested form too).
  std::vector<std::string> all;
  ModelConfig want = base;
  for (const ModelOverrideCase& k : cases) {
    all.push_back(k.override_text);
    k.expected_change(want);
  }
  ModelConfig got = base;
  const RunConfig c = from_text("", all);
  apply_model_overrides(c, got);
  expect_same_model(got, want, "all overrides");
  ModelConfig got_from_yaml = base;
  apply_model_overrides(from_text(to_yaml(c)), got_from_yaml);
  expect_same_model(got_from_yaml, want, "all overrides via to_yaml");
}

}  // namespace
}  // namespace temper
