// A checkpoint's HDF5 file (checkpoint/checkpoint.h): its metadata, what `temper checkpoint
// describe --verify` does (every tensor read and checked against its checksum), a load
// into the model it was written for (with AdamW state) and the rank state. Two input modes
// (h5_edits.h): an HDF5 file itself, seen by HDF5 through a memory file, or edits of a
// valid checkpoint of a very small model, with or without optimizer state.
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "fuzz_input.h"
#include "h5_edits.h"
#include "kernels/backend.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "seed_files.h"

using namespace temper;
namespace fs = std::filesystem;

namespace {

Backend& cpu() {
  static const std::unique_ptr<Backend> backend = make_backend("cpu");
  return *backend;
}

// seeds/model.h5 and seeds/adamw.h5, written once.
const fs::path& seeds() {
  static const fs::path dir = [] {
    const fs::path d = fuzz::scratch_dir() + "/seeds";
    fs::create_directories(d);
    fuzz::write_seed_checkpoint((d / "model.h5").string(), false);
    fuzz::write_seed_checkpoint((d / "adamw.h5").string(), true);
    return d;
  }();
  return dir;
}

void read_everything(const std::string& path) {
  fuzz::parses(path, [&] { read_checkpoint_meta(path); });
  fuzz::parses(path, [&] { describe_checkpoint(path, /*verify=*/true); });
  fuzz::parses(path, [&] { read_rank_state(path, 0, 0); });
  // One model and optimizer for every input (a load overwrites what it sets).
  static Transformer model(fuzz::seed_model_config(), cpu(), DType::F32);
  static AdamW optimizer(model.params(), cpu(), AdamWConfig{});
  fuzz::parses(path, [&] { load_checkpoint(path, model, &optimizer); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (fuzz::read_as_hdf5_file(data, size, read_everything)) return 0;
  FuzzedDataProvider in(data, size);
  const fs::path path = fuzz::scratch_dir() + "/checkpoint.h5";
  fuzz::copy_file(seeds() / (in.ConsumeBool() ? "adamw.h5" : "model.h5"), path);
  fuzz::apply_h5_edits(path.string(), in);
  read_everything(path.string());
  return 0;
}
