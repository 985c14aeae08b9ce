// `temper convert` and `temper export`: between checkpoints and Hugging Face / GGUF models.
#pragma once
#include <string>

namespace temper {

// A model-only checkpoint (usable as checkpoint.load or model.path) from a Hugging Face
// directory (config.json + safetensors) or a .gguf file. dtype "" keeps the stored dtype
// (a directory whose tensors are all bf16 stays bf16, GGUF becomes f32); else f32 | bf16
// | f16. Writes `out` through `out.tmp` and a rename. Returns a one-line summary.
std::string convert_to_checkpoint(const std::string& input, const std::string& out,
                                  const std::string& dtype = "");

// A Hugging Face directory from a checkpoint written under any layout: config.json and
// model.safetensors (HF names, full shapes, the checkpoint's dtype, {"format": "pt"}),
// plus the tokenizer of the model the checkpoint came from (convert's source, or the run's
// model.path / checkpoint.load): a directory's tokenizer files copied, a GGUF's tokenizer
// written as tokenizer.json + tokenizer_config.json (save_hf_tokenizer_files). Returns a
// one-line summary.
// A PEFT checkpoint's base is loaded from where the checkpoint says (checkpoint/base.h);
// a LoRA checkpoint is refused (export_peft or merge_checkpoint).
std::string export_hf(const std::string& checkpoint, const std::string& dir);

// A LoRA / DoRA checkpoint's adapter as a Hugging Face PEFT adapter directory
// (peft/adapter_files.h), with the tokenizer as export_hf adds it.
std::string export_peft(const std::string& checkpoint, const std::string& dir);

// `temper merge`: a LoRA / DoRA checkpoint's adapter folded into its base (peft/merge.h),
// written as export_hf writes a model, tokenizer included.
std::string merge_checkpoint(const std::string& checkpoint, const std::string& dir);

}  // namespace temper
