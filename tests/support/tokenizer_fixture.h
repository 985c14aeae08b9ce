// A tiny Hugging Face tokenizer for model directories made in tests: byte-level BPE with
// no merges (ids 0-2 are <|im_end|>, <|im_start|>, <|endoftext|>; ids 3-258 the 256
// bytes), a ChatML chat template and <|endoftext|> as EOS in tokenizer_config.json.
#pragma once
#include <cstdint>
#include <filesystem>

namespace temper::test {

constexpr int64_t kByteTokenizerVocab = 259;

// Writes tokenizer.json and tokenizer_config.json into `dir`.
void write_byte_tokenizer(const std::filesystem::path& dir);

// A tiny Llama model directory with that tokenizer (vocab kByteTokenizerVocab, 2 blocks of
// width 32, 512 positions, weights drawn from `seed`): dir/model, returned.
std::filesystem::path write_byte_tokenizer_model(const std::filesystem::path& dir, uint64_t seed = 5);

}  // namespace temper::test
