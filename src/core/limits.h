// Bounds on what a file we read may declare, checked before anything is allocated for it
// (docs/reliability.md, "Resource bounds"). Each is far above every real model and file;
// a file beyond one is refused with an error naming the file, the key and the limit.
// Sizes a real file reaches only by being large (tensor bytes, array lengths, strings) are
// bounded by the file's own size instead; only the JSON Lines line limit is a setting
// (prepare --max-line-bytes), since a real corpus may hold longer lines.
#pragma once
#include <cstdint>

namespace temper::limits {

// Token ids and vocabulary sizes (tokenizer.json, tokenizer.model, GGUF, config.json,
// datasets): 2^24 = 16,777,216; the largest real vocabularies hold about 256K tokens.
constexpr int64_t kMaxVocabSize = int64_t(1) << 24;
// Entries of one GGUF metadata array (each costs a value object in memory, far more than
// its bytes in the file): 2^24; a tokenizer's tokens and merges are the largest real ones.
constexpr uint64_t kMaxGgufArrayLength = uint64_t(1) << 24;
// A safetensors JSON header: 100,000,000 bytes, the reference reader's own limit.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;
// Model dimensions (hidden, intermediate and head sizes, heads, layers, positions) and the
// parameter count of a model config: 2^24 per dimension, 2^42 parameters.
constexpr int64_t kMaxModelDim = int64_t(1) << 24;
constexpr int64_t kMaxModelParameters = int64_t(1) << 42;
// prepare's default for --max-line-bytes: 256 MiB.
constexpr int64_t kDefaultMaxJsonlLineBytes = int64_t(256) << 20;

}  // namespace temper::limits
