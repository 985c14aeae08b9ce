// The tokenizer that goes with a checkpoint's weights.
//
// `temper convert` stores its model's tokenizer in the checkpoint it writes, as Hugging
// Face files: /tokenizer/<file name> (uint8 datasets holding the files' bytes: a model
// directory's tokenizer.json, tokenizer_config.json, tokenizer.model, ..., or a GGUF's
// tokenizer written as such files). A run that starts from that checkpoint, and anything
// exported from that run's checkpoints, then finds it without the original model.
//
// copy_model_tokenizer looks, in order: `source` itself when it is a model directory or a
// GGUF file; a checkpoint's stored files; the model a checkpoint came from (/meta source,
// or its run config's model.path / checkpoint.load), following checkpoints back a few
// levels.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace temper {

// Adds `files` (regular files; their names become the dataset names) under /tokenizer of
// the closed checkpoint file `checkpoint`. Errors name the checkpoint and the file.
void store_tokenizer_files(const std::string& checkpoint,
                           const std::vector<std::filesystem::path>& files);

// The file names stored under /tokenizer (empty when there is none).
std::vector<std::string> stored_tokenizer_files(const std::string& checkpoint);

// The model directory or GGUF file a checkpoint's weights came from, followed back as above
// (stored tokenizers aside); "" when none is found.
std::string source_model_of(const std::string& checkpoint);

struct TokenizerCopy {
  std::vector<std::filesystem::path> files;  // written into the directory
  std::string from;                          // the model directory, GGUF or checkpoint
  std::string why_not;                       // when files is empty: what was looked at
};

// The tokenizer of the model `source` (a model directory, GGUF or checkpoint; see above)
// written into `dir` as Hugging Face files. Never throws for a missing tokenizer: files
// empty and why_not say so (callers warn).
TokenizerCopy copy_model_tokenizer(const std::string& source, const std::filesystem::path& dir);

}  // namespace temper
