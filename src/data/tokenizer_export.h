// The tokenizer files of a Hugging Face model directory, written beside config.json and
// model.safetensors so that transformers' AutoTokenizer.from_pretrained (and `tokenizers`)
// can use a model fine-tuned from a directory or from a GGUF file.
#pragma once
#include <filesystem>
#include <vector>

namespace temper {

// `model` is what the run started from:
//   - a Hugging Face model directory: its tokenizer.json, tokenizer.model,
//     tokenizer_config.json, special_tokens_map.json, generation_config.json,
//     chat_template.jinja, added_tokens.json, vocab.json and merges.txt are copied, those
//     present (none present is no error);
//   - a .gguf file: its tokenizer.ggml.* metadata is written as tokenizer.json (the form
//     transformers' converters give: byte-level BPE with the pre-tokenizer of
//     tokenizer.ggml.pre for "gpt2"; for "llama" SentencePiece BPE with byte fallback, merges
//     derived from the scores and the legacy Prepend/Replace normalizer), tokenizer_config.json
//     (bos / eos / unk / pad tokens, add_bos_token, add_eos_token, the chat template,
//     tokenizer_class) and special_tokens_map.json.
// Creates out_dir if needed; returns the files written. Errors name the file or directory
// (and the GGUF key); nothing is written for a GGUF whose tokenizer cannot be loaded.
// load_model_tokenizer(out_dir) then gives the same ids as load_model_tokenizer(model), except
// that for a "llama" GGUF text after a user-defined piece gets its own dummy-prefix "▁", as
// transformers' converted tokenizers do.
std::vector<std::filesystem::path> save_hf_tokenizer_files(const std::filesystem::path& model,
                                                           const std::filesystem::path& out_dir);

}  // namespace temper
