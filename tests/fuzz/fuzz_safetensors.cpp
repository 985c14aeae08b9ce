// safetensors: the 8-byte header length, the JSON header and the data (io/safetensors.h),
// then every tensor converted to f32 as the model loaders do.
#include "fuzz_input.h"
#include "io/safetensors.h"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::MemoryFile file(data, size);
  fuzz::parses(file.path(), [&] { read_safetensors(file.path(), /*with_data=*/false); });
  SafetensorsFile read;
  if (!fuzz::parses(file.path(), [&] { read = read_safetensors(file.path()); })) return 0;
  for (const auto& named : read.tensors) {
    const SafetensorsEntry& entry = named.second;
    fuzz::parses(entry.dtype, [&] { entry.to_f32(); });  // an unconvertible dtype names itself
  }
  return 0;
}
