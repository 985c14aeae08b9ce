// GGUF: header, metadata, tensor infos and data (io/gguf.h); then what a run takes from a
// GGUF file: the model config, the tokenizer (tokenizer.ggml.*) and dequantized tensors.
#include "data/model_tokenizer.h"
#include "data/tokenizer.h"
#include "fuzz_input.h"
#include "io/gguf.h"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::MemoryFile file(data, size);
  GgufFile gguf;
  if (!fuzz::parses(file.path(), [&] { gguf = read_gguf(file.path()); })) return 0;
  fuzz::parses(file.path(), [&] { model_config_from_gguf(gguf); });
  fuzz::parses(file.path(), [&] {
    const ModelTokenizer t = load_model_tokenizer(gguf);
    t.tokenizer.decode(t.tokenizer.encode("Hello, world! 123 héllo\n\t<s>"));
  });
  for (const GgufTensor& t : gguf.tensors)
    fuzz::parses(file.path(), [&] { dequantize(t); });
  return 0;
}
