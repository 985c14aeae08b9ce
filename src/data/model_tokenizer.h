// The tokenizer of a model, wherever it comes from: a Hugging Face model directory
// (tokenizer.json, else a SentencePiece tokenizer.model; tokenizer_config.json for the chat
// template and add_bos_token) or a .gguf file (tokenizer.ggml.* metadata and
// tokenizer.chat_template).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "data/tokenizer.h"

namespace temper {

struct GgufFile;

struct ModelTokenizer {
  Tokenizer tokenizer;
  std::string chat_template = {};  // Jinja text from tokenizer_config.json or GGUF; empty if none
  std::optional<int32_t> bos_id = {}, eos_id = {};
  bool add_bos = false;  // whether HF adds BOS when encoding with add_special_tokens=True
};

// A Hugging Face model directory or a .gguf file. Errors name the file and the key.
ModelTokenizer load_model_tokenizer(const std::filesystem::path& model);
// A .gguf file: by extension, else by its "GGUF" magic.
bool is_gguf_file(const std::filesystem::path& path);
// The tokenizer of a GGUF file already read (read_gguf without tensor data will do).
ModelTokenizer load_model_tokenizer(const GgufFile& file);

}  // namespace temper
