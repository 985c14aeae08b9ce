#include "cli/checkpoint_commands.h"

#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "checkpoint/checkpoint.h"
#include "checkpoint/convert.h"
#include "core/error.h"
#include "core/log.h"
#include "data/dataset.h"

namespace temper {
namespace {

// Runs a command body; errors become one log line and the exit status.
void run(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    log::error("{}", e.what());
    throw CLI::RuntimeError(1);
  } catch (const std::exception& e) {
    log::error("internal error: {}", e.what());
    throw CLI::RuntimeError(2);
  }
}

std::string describe_dataset(const std::string& path) {
  const TokenDataset d = read_token_dataset(path);  // validates everything
  uint64_t val_docs = 0, val_tokens = 0, masked = 0;
  for (size_t i = 0; i < d.documents(); ++i)
    if (d.split[i]) ++val_docs, val_tokens += d.doc_offsets[i + 1] - d.doc_offsets[i];
  for (uint8_t m : d.loss_mask) masked += m;
  std::string out = fmt::format("token dataset {} (HDF5, made by temper {})\n", path, d.creator_version);
  out += fmt::format("documents {} (train {}, validation {})\n", d.documents(), d.documents() - val_docs, val_docs);
  out += fmt::format("tokens {} (train {}, validation {}), {} trained on (loss_mask)\n", d.tokens.size(),
                     d.tokens.size() - val_tokens, val_tokens, masked);
  out += fmt::format("vocab_size {}, eos_id {}\n", d.vocab_size, d.eos_id);
  out += fmt::format("tokenizer fingerprint {}\n", d.tokenizer_fingerprint);
  out += fmt::format("source format {}\n", d.source_format);
  if (!d.chat_template.empty()) out += fmt::format("chat template {}\n", d.chat_template);
  return out;
}

bool is_token_dataset(const std::string& path) {
  if (H5Fis_hdf5(path.c_str()) <= 0) return false;
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return false;
  const bool yes = H5Lexists(f, "tokens", H5P_DEFAULT) > 0;
  H5Fclose(f);
  return yes;
}

}  // namespace

void add_checkpoint_commands(CLI::App& app) {
  struct Options {
    std::string path, out, to = "hf", dtype;
    bool verify = false;
  };
  auto o = std::make_shared<Options>();

  auto* inspect = app.add_subcommand("inspect", "Summarise a checkpoint or a token dataset (HDF5)");
  inspect->add_option("file", o->path, "checkpoint .h5 or token dataset .h5")->required();
  inspect->add_flag("--verify", o->verify, "checkpoint: read every tensor and check its checksum");
  inspect->callback([o] {
    run([&] {
      H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
      if (!std::filesystem::exists(o->path)) fail("'{}' does not exist", o->path);
      if (is_checkpoint_file(o->path)) fmt::print("{}", describe_checkpoint(o->path, o->verify));
      else if (is_token_dataset(o->path)) fmt::print("{}", describe_dataset(o->path));
      else if (H5Fis_hdf5(o->path.c_str()) > 0)
        fail("{}: an HDF5 file but neither a temper checkpoint (/meta) nor a token dataset (tokens)", o->path);
      else fail("{}: not an HDF5 file (truncated or corrupt?)", o->path);
    });
  });

  auto* convert = app.add_subcommand("convert", "Make a model-only checkpoint from a Hugging Face directory or a GGUF file");
  convert->add_option("input", o->path, "Hugging Face model directory or .gguf file")->required();
  convert->add_option("--out", o->out, "output checkpoint (.h5)")->required();
  convert->add_option("--dtype", o->dtype, "f32 | bf16 | f16 (default: as stored; GGUF: f32)");
  convert->callback([o] { run([&] { fmt::print("{}\n", convert_to_checkpoint(o->path, o->out, o->dtype)); }); });

  auto* exp = app.add_subcommand(
      "export", "Write a checkpoint as a Hugging Face model directory, or its LoRA adapter as a PEFT adapter");
  exp->add_option("checkpoint", o->path, "checkpoint (.h5), written under any layout")->required();
  exp->add_option("--to", o->to, "hf (a model directory) | peft (adapter_config.json + adapter_model.safetensors)")
      ->capture_default_str();
  exp->add_option("--out", o->out, "output directory")->required();
  exp->callback([o] {
    run([&] {
      if (o->to == "hf") fmt::print("{}\n", export_hf(o->path, o->out));
      else if (o->to == "peft") fmt::print("{}\n", export_peft(o->path, o->out));
      else fail("export --to {}: choose hf or peft", o->to);
    });
  });

  auto* merge = app.add_subcommand(
      "merge", "Fold a LoRA / DoRA checkpoint's adapter into its base and write a Hugging Face model directory");
  merge->add_option("checkpoint", o->path, "checkpoint (.h5) of a peft.method=lora run")->required();
  merge->add_option("--out", o->out, "output directory")->required();
  merge->callback([o] { run([&] { fmt::print("{}\n", merge_checkpoint(o->path, o->out)); }); });
}

}  // namespace temper
