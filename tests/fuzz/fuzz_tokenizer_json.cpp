// tokenizer.json (Tokenizer::from_json_string): model, normalizer, pre-tokenizer, added
// tokens, decoder; a tokenizer that loads then encodes and decodes a fixed text.
#include "data/tokenizer.h"
#include "fuzz_input.h"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz::parses("fuzz/tokenizer.json", [&] {
    const Tokenizer t = Tokenizer::from_json_string(text, "fuzz/tokenizer.json");
    const auto ids = t.encode("Hello, world! It's 2024 — naïve café\n\n  <|im_start|>user");
    t.decode(ids);
    t.decode(ids, /*skip_special=*/true);
  });
  return 0;
}
