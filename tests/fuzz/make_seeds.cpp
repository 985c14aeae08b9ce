// Writes the binary seed files that our own writers make (tests/fuzz/make-seeds.sh calls
// it; the output is committed under tests/fuzz/corpus/): token datasets, f32 checkpoints of a
// very small model (with and without optimizer state) and safetensors.
//   temper_fuzz_make_seeds CORPUS_DIR
#include <cstdio>
#include <filesystem>

#include "data/dataset.h"
#include "io/safetensors.h"
#include "seed_files.h"

using namespace temper;
namespace fs = std::filesystem;

namespace {

void write_datasets(const fs::path& dir) {
  fs::create_directories(dir);
  write_token_dataset((dir / "text.h5").string(), fuzz::seed_dataset(false));
  write_token_dataset((dir / "chat.h5").string(), fuzz::seed_dataset(true));
}

void write_checkpoints(const fs::path& dir) {
  fs::create_directories(dir);
  fuzz::write_seed_checkpoint((dir / "f32.h5").string(), false);
  fuzz::write_seed_checkpoint((dir / "f32-adamw.h5").string(), true);
}

void write_safetensors_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  SafetensorsFile file;
  file.metadata["format"] = "pt";
  file.tensors["model.embed_tokens.weight"] = safetensors_f32({0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -0.5f}, {3, 2});
  file.tensors["model.norm.weight"] = safetensors_f32({1.0f, 1.0f}, {2});
  file.tensors["step"] = safetensors_i32({7}, {});
  SafetensorsEntry bf16;
  bf16.dtype = "BF16";
  bf16.shape = {2, 2};
  bf16.data = {0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0xbf};
  file.tensors["lm_head.weight"] = bf16;
  SafetensorsEntry empty;
  empty.dtype = "F16";
  empty.shape = {0, 4};
  file.tensors["empty"] = empty;
  write_safetensors((dir / "mixed.safetensors").string(), file);
  SafetensorsFile none;
  write_safetensors((dir / "empty.safetensors").string(), none);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const fs::path corpus = argv[1];
  write_datasets(corpus / "hdf5_dataset");
  write_checkpoints(corpus / "hdf5_checkpoint");
  write_safetensors_seeds(corpus / "safetensors");
  return 0;
}
