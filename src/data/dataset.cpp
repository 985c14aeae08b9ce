#include "data/dataset.h"

#include <hdf5.h>

#include <cctype>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "kernels/backend.h"

namespace temper {
namespace {

// HDF5 prints its own error stack by default; we report errors ourselves.
void quiet_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// Closes an HDF5 handle on scope exit.
struct Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

template <typename T>
void write_1d(hid_t file, const char* name, hid_t type, const std::vector<T>& v,
              const std::string& path) {
  hsize_t n = v.size();
  Handle space{H5Screate_simple(1, &n, nullptr), H5Sclose};
  Handle set{H5Dcreate2(file, name, type, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  if (set.id < 0 || (n && H5Dwrite(set.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0))
    fail("{}: cannot write dataset '{}' (disk full?)", path, name);
}

template <typename T>
std::vector<T> read_1d(hid_t file, const char* name, hid_t type, const std::string& path) {
  Handle set{H5Dopen2(file, name, H5P_DEFAULT), H5Dclose};
  if (set.id < 0) fail("{}: dataset '{}' is missing", path, name);
  Handle space{H5Dget_space(set.id), H5Sclose};
  if (H5Sget_simple_extent_ndims(space.id) != 1) fail("{}: dataset '{}' must be 1-D", path, name);
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.id, &n, nullptr);
  std::vector<T> v(n);
  if (n && H5Dread(set.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    fail("{}: cannot read dataset '{}' (truncated or corrupt file?)", path, name);
  return v;
}

void write_attr(hid_t file, const char* name, int64_t value) {
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  Handle a{H5Acreate2(file, name, H5T_NATIVE_INT64, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  H5Awrite(a.id, H5T_NATIVE_INT64, &value);
}

void write_attr(hid_t file, const char* name, const std::string& value) {
  Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, std::max<size_t>(value.size(), 1));
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  Handle a{H5Acreate2(file, name, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  H5Awrite(a.id, type.id, padded.data());
}

int64_t read_int_attr(hid_t file, const char* name, const std::string& path) {
  Handle a{H5Aopen(file, name, H5P_DEFAULT), H5Aclose};
  int64_t v = 0;
  if (a.id < 0 || H5Aread(a.id, H5T_NATIVE_INT64, &v) < 0)
    fail("{}: attribute '{}' is missing or not an integer", path, name);
  return v;
}

std::string read_string_attr(hid_t file, const char* name, const std::string& path) {
  Handle a{H5Aopen(file, name, H5P_DEFAULT), H5Aclose};
  if (a.id < 0) fail("{}: attribute '{}' is missing", path, name);
  Handle type{H5Aget_type(a.id), H5Tclose};
  if (H5Tget_class(type.id) != H5T_STRING) fail("{}: attribute '{}' is not a string", path, name);
  std::string s(H5Tget_size(type.id), '\0');
  if (H5Aread(a.id, type.id, s.data()) < 0) fail("{}: cannot read attribute '{}'", path, name);
  s.resize(strnlen(s.data(), s.size()));
  return s;
}

// A .jsonl / .json name, or a first non-blank character that opens a JSON object.
bool looks_like_jsonl(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".jsonl" || ext == ".json") return true;
  std::ifstream in(path, std::ios::binary);
  char c = 0;
  while (in.get(c)) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isspace(u) || u == 0xEF || u == 0xBB || u == 0xBF) continue;  // and a UTF-8 BOM
    return c == '{';
  }
  return false;
}

}  // namespace

void TokenDataset::add(const std::vector<uint32_t>& doc, const std::vector<uint8_t>& mask,
                       bool validation) {
  TEMPER_CHECK(doc.size() == mask.size(), "tokens {} vs mask {}", doc.size(), mask.size());
  tokens.insert(tokens.end(), doc.begin(), doc.end());
  loss_mask.insert(loss_mask.end(), mask.begin(), mask.end());
  doc_offsets.push_back(tokens.size());
  split.push_back(validation ? 1 : 0);
}

std::vector<Document> TokenDataset::documents_of(bool validation) const {
  std::vector<Document> out;
  for (size_t d = 0; d < split.size(); ++d) {
    if (bool(split[d]) != validation) continue;
    Document doc;
    for (uint64_t i = doc_offsets[d]; i < doc_offsets[d + 1]; ++i) {
      doc.tokens.push_back(int32_t(tokens[i]));
      const bool has_next = i + 1 < doc_offsets[d + 1];
      doc.targets.push_back(has_next && loss_mask[i + 1] ? int32_t(tokens[i + 1]) : kIgnoreIndex);
    }
    out.push_back(std::move(doc));
  }
  return out;
}

void write_token_dataset(const std::string& path, const TokenDataset& d) {
  quiet_hdf5();
  const std::string tmp = path + ".tmp";
  {
    Handle file{H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
    if (file.id < 0) fail("{}: cannot create", tmp);
    write_1d(file.id, "tokens", H5T_NATIVE_UINT32, d.tokens, path);
    write_1d(file.id, "loss_mask", H5T_NATIVE_UINT8, d.loss_mask, path);
    write_1d(file.id, "doc_offsets", H5T_NATIVE_UINT64, d.doc_offsets, path);
    write_1d(file.id, "split", H5T_NATIVE_UINT8, d.split, path);
    write_attr(file.id, "vocab_size", d.vocab_size);
    write_attr(file.id, "eos_id", d.eos_id);
    write_attr(file.id, "tokenizer_fingerprint", d.tokenizer_fingerprint);
    write_attr(file.id, "source_format", d.source_format);
    write_attr(file.id, "chat_template", d.chat_template);
    write_attr(file.id, "creator_version", d.creator_version);
    if (H5Fflush(file.id, H5F_SCOPE_GLOBAL) < 0) fail("{}: flush failed (disk full?)", tmp);
  }
  std::filesystem::rename(tmp, path);
}

bool is_conversation_format(const std::string& f) {
  return f == "chat" || f == "alpaca" || f == "sharegpt";
}

TokenDataset read_token_dataset(const std::string& path) {
  quiet_hdf5();
  if (!std::filesystem::exists(path)) fail("dataset '{}' does not exist", path);
  if (H5Fis_hdf5(path.c_str()) <= 0 && looks_like_jsonl(path))
    fail("{}: a JSON Lines file, not a token dataset: tokenize it first with `temper prepare {} "
         "--model MODEL --out DATA.h5` (MODEL: the model directory or .gguf you fine-tune) and "
         "set data.path to DATA.h5", path, path);
  Handle file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) fail("{}: not a readable HDF5 file (truncated or corrupt?)", path);
  TokenDataset d;
  d.tokens = read_1d<uint32_t>(file.id, "tokens", H5T_NATIVE_UINT32, path);
  d.loss_mask = read_1d<uint8_t>(file.id, "loss_mask", H5T_NATIVE_UINT8, path);
  d.doc_offsets = read_1d<uint64_t>(file.id, "doc_offsets", H5T_NATIVE_UINT64, path);
  d.split = read_1d<uint8_t>(file.id, "split", H5T_NATIVE_UINT8, path);
  d.vocab_size = read_int_attr(file.id, "vocab_size", path);
  d.eos_id = read_int_attr(file.id, "eos_id", path);
  d.tokenizer_fingerprint = read_string_attr(file.id, "tokenizer_fingerprint", path);
  d.source_format = read_string_attr(file.id, "source_format", path);
  d.chat_template = read_string_attr(file.id, "chat_template", path);
  d.creator_version = read_string_attr(file.id, "creator_version", path);
  // Consistency.
  if (d.loss_mask.size() != d.tokens.size())
    fail("{}: loss_mask has {} entries, tokens {}", path, d.loss_mask.size(), d.tokens.size());
  if (d.doc_offsets.size() != d.split.size() + 1)
    fail("{}: doc_offsets has {} entries, expected split size + 1 = {}", path, d.doc_offsets.size(),
         d.split.size() + 1);
  if (d.doc_offsets.front() != 0 || d.doc_offsets.back() != d.tokens.size())
    fail("{}: doc_offsets must run from 0 to the token count {}", path, d.tokens.size());
  for (size_t i = 0; i + 1 < d.doc_offsets.size(); ++i)
    if (d.doc_offsets[i + 1] <= d.doc_offsets[i]) fail("{}: document {} is empty or out of order", path, i);
  for (size_t i = 0; i < d.split.size(); ++i)
    if (d.split[i] > 1) fail("{}: split[{}] = {} (expected 0 train or 1 validation)", path, i, d.split[i]);
  for (size_t i = 0; i < d.tokens.size(); ++i)
    if (int64_t(d.tokens[i]) >= d.vocab_size)
      fail("{}: token {} has id {}, outside the dataset's vocab_size {}", path, i, d.tokens[i], d.vocab_size);
  return d;
}

}  // namespace temper
