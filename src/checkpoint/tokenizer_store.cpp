#include "checkpoint/tokenizer_store.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <iterator>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "core/error.h"
#include "data/tokenizer_export.h"
#include "data/model_tokenizer.h"

namespace fs = std::filesystem;

namespace temper {
namespace {

constexpr const char* kGroup = "tokenizer";

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail("cannot read '{}'", p.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A checkpoint's candidates for where its weights came from: /meta source, then its run
// config's model.path and checkpoint.load.
std::vector<std::string> origins_of(const std::string& checkpoint) {
  const CheckpointMeta m = read_checkpoint_meta(checkpoint);
  std::vector<std::string> out = {m.source};
  if (m.config_yaml.empty()) return out;
  try {
    const YAML::Node c = YAML::Load(m.config_yaml);
    if (c["model"] && c["model"]["path"]) out.push_back(c["model"]["path"].as<std::string>());
    if (c["checkpoint"] && c["checkpoint"]["load"]) out.push_back(c["checkpoint"]["load"].as<std::string>());
  } catch (const YAML::Exception&) {
    // A config we cannot parse names no model.
  }
  return out;
}

bool has_tokenizer_file(const fs::path& dir) {
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"})
    if (fs::exists(dir / name)) return true;
  return false;
}

// Where to take a tokenizer from, starting at `path` (see the header); "" when nowhere.
// `stored` false: only a model directory or GGUF file answers (not a checkpoint's files).
std::string tokenizer_holder(const std::string& path, int depth, bool stored = true) {
  std::error_code ec;
  if (path.empty() || depth > 4) return "";
  if (fs::is_directory(path, ec)) {
    if (has_tokenizer_file(path) || fs::exists(fs::path(path) / "config.json")) return path;
    // A run directory or its checkpoints/ (checkpoint.load may name one): its newest.
    for (const fs::path pointer : {fs::path(path) / "checkpoints" / "latest", fs::path(path) / "latest"}) {
      if (!fs::is_regular_file(pointer, ec)) continue;
      std::string name;
      std::getline(std::ifstream(pointer), name);
      return tokenizer_holder((pointer.parent_path() / name).string(), depth + 1, stored);
    }
    return "";
  }
  if (!fs::is_regular_file(path, ec)) return "";
  if (is_gguf_file(path)) return path;
  if (!is_checkpoint_file(path)) return "";
  if (stored && !stored_tokenizer_files(path).empty()) return path;
  for (const std::string& origin : origins_of(path))
    if (std::string h = tokenizer_holder(origin, depth + 1, stored); !h.empty()) return h;
  return "";
}

}  // namespace

std::string source_model_of(const std::string& checkpoint) {
  return tokenizer_holder(checkpoint, 0, false);
}

void store_tokenizer_files(const std::string& checkpoint, const std::vector<fs::path>& files) {
  h5::quiet();
  h5::Id file(H5Fopen(checkpoint.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  if (!file.valid()) fail("{}: cannot open to add the tokenizer", checkpoint);
  h5::Id group = h5::create_group(file.get(), kGroup, checkpoint);
  for (const fs::path& f : files) {
    const std::string bytes = read_file(f);
    const hsize_t n = bytes.size();
    h5::Id space(H5Screate_simple(1, &n, nullptr));
    const std::string name = f.filename().string();
    h5::Id set(H5Dcreate2(group.get(), name.c_str(), H5T_NATIVE_UINT8, space.get(), H5P_DEFAULT,
                          H5P_DEFAULT, H5P_DEFAULT));
    if (!set.valid() ||
        (n > 0 && H5Dwrite(set.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()) < 0))
      fail("{}: cannot store /{}/{} (disk full?)", checkpoint, kGroup, name);
  }
  if (!file.close()) fail("{}: cannot close after adding the tokenizer (disk full?)", checkpoint);
}

std::vector<std::string> stored_tokenizer_files(const std::string& checkpoint) {
  h5::quiet();
  h5::Id file(H5Fopen(checkpoint.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid() || !h5::exists(file.get(), kGroup)) return {};
  h5::Id group = h5::open_group(file.get(), kGroup, checkpoint);
  return h5::children(group.get(), checkpoint + ": /" + kGroup);
}

TokenizerCopy copy_model_tokenizer(const std::string& source, const fs::path& dir) {
  TokenizerCopy out;
  if (source.empty()) {
    out.why_not = "the model was not loaded from anything that has one (a preset or config: "
                  "random weights)";
    return out;
  }
  out.from = tokenizer_holder(source, 0);
  if (out.from.empty()) {
    out.why_not = fmt::format("none found at {} or the model it came from", source);
    return out;
  }
  try {
    if (fs::is_regular_file(out.from) && is_checkpoint_file(out.from)) {
      h5::Id file(H5Fopen(out.from.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
      h5::Id group = h5::open_group(file.get(), kGroup, out.from);
      fs::create_directories(dir);
      for (const std::string& name : h5::children(group.get(), out.from + ": /" + kGroup)) {
        h5::Id set(H5Dopen2(group.get(), name.c_str(), H5P_DEFAULT));
        const std::vector<int64_t> n = h5::extent(set.get(), out.from + ": /" + kGroup + "/" + name);
        std::string bytes(n.empty() ? 0 : size_t(n[0]), '\0');
        if (!bytes.empty() &&
            H5Dread(set.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()) < 0)
          fail("{}: cannot read /{}/{}", out.from, kGroup, name);
        std::ofstream f(dir / name, std::ios::binary);
        if (!(f << bytes)) fail("{}: cannot write", (dir / name).string());
        out.files.push_back(dir / name);
      }
    } else {
      out.files = save_hf_tokenizer_files(out.from, dir);
    }
  } catch (const Error& e) {
    out.files.clear();
    out.why_not = e.what();
    return out;
  }
  if (out.files.empty()) out.why_not = fmt::format("{} has no tokenizer files", out.from);
  return out;
}

}  // namespace temper
