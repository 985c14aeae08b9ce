// A token dataset's HDF5 files (data/dataset.h): read whole, and opened for training with
// every document then read. Two input modes (h5_edits.h): an HDF5 file itself (its bytes
// seen by HDF5 through a memory file), or edits of a valid dataset, the first input byte
// picking which: one file of text, one of conversations, or a shard index or one of its
// shards (then the index is what is read).
#include <filesystem>

#include "data/dataset.h"
#include "data/loader.h"
#include "fuzz_input.h"
#include "h5_edits.h"
#include "seed_files.h"

using namespace temper;
namespace fs = std::filesystem;

namespace {

void read_everything(const std::string& path) {
  fuzz::parses(path, [&] { read_token_dataset(path); });
  fuzz::parses(path, [&] {
    const DatasetDocuments docs = open_token_dataset(path);
    Document scratch;
    for (const auto* split : {docs.train.get(), docs.val.get()})
      if (split)
        for (size_t i = 0; i < split->size(); ++i) split->get(i, scratch);
  });
}

// The seed files, written once: seeds/{text,chat}.h5 and seeds/sharded/ (index + shards).
const fs::path& seeds() {
  static const fs::path dir = [] {
    const fs::path d = fuzz::scratch_dir() + "/seeds";
    fs::create_directories(d / "sharded");
    write_token_dataset((d / "text.h5").string(), fuzz::seed_dataset(false));
    write_token_dataset((d / "chat.h5").string(), fuzz::seed_dataset(true));
    write_token_dataset((d / "sharded" / "data.h5").string(), fuzz::seed_dataset(false), /*shard_tokens=*/4);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (fuzz::read_as_hdf5_file(data, size, read_everything)) return 0;
  FuzzedDataProvider in(data, size);
  const fs::path work = fuzz::scratch_dir() + "/work";
  fs::remove_all(work);
  fs::create_directories(work);
  const int which = in.ConsumeIntegralInRange(0, 2);
  if (which < 2) {
    const fs::path path = work / "data.h5";
    fuzz::copy_file(seeds() / (which == 0 ? "text.h5" : "chat.h5"), path);
    fuzz::apply_h5_edits(path.string(), in);
    read_everything(path.string());
  } else {
    for (const auto& e : fs::directory_iterator(seeds() / "sharded"))
      fuzz::copy_file(e.path(), work / e.path().filename());
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(work)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    fuzz::apply_h5_edits(files[in.ConsumeIntegralInRange<size_t>(0, files.size() - 1)].string(), in);
    // Errors name the index or the shard.
    fuzz::parses(work.string(), [&] { read_token_dataset((work / "data.h5").string()); });
    fuzz::parses(work.string(), [&] {
      const DatasetDocuments docs = open_token_dataset((work / "data.h5").string());
      Document scratch;
      for (const auto* split : {docs.train.get(), docs.val.get()})
        if (split)
          for (size_t i = 0; i < split->size(); ++i) split->get(i, scratch);
    });
  }
  return 0;
}
