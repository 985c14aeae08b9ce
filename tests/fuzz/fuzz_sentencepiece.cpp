// SentencePiece tokenizer.model (a protobuf ModelProto): pieces, trainer and normalizer
// specs; a model that loads then encodes and decodes a fixed text.
#include "data/tokenizer.h"
#include "fuzz_input.h"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view proto(reinterpret_cast<const char*>(data), size);
  fuzz::parses("fuzz/tokenizer.model", [&] {
    const Tokenizer t = Tokenizer::from_sentencepiece_string(proto, "fuzz/tokenizer.model");
    const auto ids = t.encode("Hello, world! It's 2024 — naïve café\n\n  [INST] hi");
    t.decode(ids);
  });
  return 0;
}
