#include "data/dataset.h"

#include <hdf5.h>

#include <cctype>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/dataset_writer.h"
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

DatasetInfo TokenDataset::info() const {
  return {vocab_size, eos_id, tokenizer_fingerprint, source_format, chat_template, creator_version};
}

std::vector<std::string> write_token_dataset(const std::string& path, const TokenDataset& d, int64_t shard_tokens) {
  TokenDatasetWriter writer(path, shard_tokens);
  const std::span<const uint32_t> tokens = d.tokens;
  const std::span<const uint8_t> mask = d.loss_mask;
  for (size_t i = 0; i < d.documents(); ++i) {
    const size_t a = d.doc_offsets[i], n = d.doc_offsets[i + 1] - a;
    writer.add(tokens.subspan(a, n), mask.subspan(a, n));
  }
  return writer.finish(d.split, d.info());
}

bool is_conversation_format(const std::string& f) {
  return f == "chat" || f == "alpaca" || f == "sharegpt";
}

namespace {

// One dataset file (a whole dataset or one shard), validated.
TokenDataset read_dataset_file(hid_t file, const std::string& path) {
  TokenDataset d;
  d.tokens = read_1d<uint32_t>(file, "tokens", H5T_NATIVE_UINT32, path);
  d.loss_mask = read_1d<uint8_t>(file, "loss_mask", H5T_NATIVE_UINT8, path);
  d.doc_offsets = read_1d<uint64_t>(file, "doc_offsets", H5T_NATIVE_UINT64, path);
  d.split = read_1d<uint8_t>(file, "split", H5T_NATIVE_UINT8, path);
  d.vocab_size = read_int_attr(file, "vocab_size", path);
  d.eos_id = read_int_attr(file, "eos_id", path);
  d.tokenizer_fingerprint = read_string_attr(file, "tokenizer_fingerprint", path);
  d.source_format = read_string_attr(file, "source_format", path);
  d.chat_template = read_string_attr(file, "chat_template", path);
  d.creator_version = read_string_attr(file, "creator_version", path);
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

// Each shard against the index: there, the size and counts the index recorded, and the
// same tokenizer and format; then all of them as one dataset, in index order.
TokenDataset read_shards(hid_t index, const std::string& path) {
  const std::string names = read_string_attr(index, "shard_files", path);
  std::vector<std::string> files;
  for (size_t a = 0; a <= names.size();) {
    const size_t b = std::min(names.find('\n', a), names.size());
    files.push_back(names.substr(a, b - a));
    a = b + 1;
  }
  const auto documents = read_1d<uint64_t>(index, "shard_documents", H5T_NATIVE_UINT64, path);
  const auto tokens = read_1d<uint64_t>(index, "shard_tokens", H5T_NATIVE_UINT64, path);
  const auto bytes = read_1d<uint64_t>(index, "shard_bytes", H5T_NATIVE_UINT64, path);
  const size_t n = files.size();
  if (documents.size() != n || tokens.size() != n || bytes.size() != n)
    fail("{}: the index names {} shards but records {} / {} / {} document / token / byte counts",
         path, n, documents.size(), tokens.size(), bytes.size());
  TokenDataset all;
  all.vocab_size = read_int_attr(index, "vocab_size", path);
  all.eos_id = read_int_attr(index, "eos_id", path);
  all.tokenizer_fingerprint = read_string_attr(index, "tokenizer_fingerprint", path);
  all.source_format = read_string_attr(index, "source_format", path);
  all.chat_template = read_string_attr(index, "chat_template", path);
  all.creator_version = read_string_attr(index, "creator_version", path);
  namespace fs = std::filesystem;
  for (size_t i = 0; i < n; ++i) {
    const std::string shard = (fs::path(path).parent_path() / files[i]).string();
    const std::string which = fmt::format("{}: shard {} of {}, {}", path, i + 1, n, shard);
    std::error_code ec;
    if (!fs::is_regular_file(shard, ec)) fail("{}, is missing", which);
    if (fs::file_size(shard, ec) != bytes[i])
      fail("{}, is {} bytes where the index says {}: damaged, or written by another `temper "
           "prepare`", which, fs::file_size(shard, ec), bytes[i]);
    Handle file{H5Fopen(shard.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
    if (file.id < 0) fail("{}, is not a readable HDF5 file (damaged?)", which);
    haddr_t end = 0;
    if (H5Fget_eoa(file.id, &end) >= 0 && bytes[i] < end)
      fail("{}, is truncated: {} bytes where the file needs {}", which, bytes[i], end);
    TokenDataset d = read_dataset_file(file.id, shard);
    if (d.documents() != documents[i] || d.tokens.size() != tokens[i])
      fail("{}, holds {} documents and {} tokens where the index says {} and {}", which,
           d.documents(), d.tokens.size(), documents[i], tokens[i]);
    if (d.tokenizer_fingerprint != all.tokenizer_fingerprint || d.vocab_size != all.vocab_size ||
        d.source_format != all.source_format)
      fail("{}, was made with another tokenizer or format than the index says", which);
    const uint64_t base = all.tokens.size();
    all.tokens.insert(all.tokens.end(), d.tokens.begin(), d.tokens.end());
    all.loss_mask.insert(all.loss_mask.end(), d.loss_mask.begin(), d.loss_mask.end());
    for (size_t k = 1; k < d.doc_offsets.size(); ++k) all.doc_offsets.push_back(base + d.doc_offsets[k]);
    all.split.insert(all.split.end(), d.split.begin(), d.split.end());
  }
  return all;
}

}  // namespace

TokenDataset read_token_dataset(const std::string& path) {
  quiet_hdf5();
  if (!std::filesystem::exists(path)) fail("dataset '{}' does not exist", path);
  if (H5Fis_hdf5(path.c_str()) <= 0 && looks_like_jsonl(path))
    fail("{}: a JSON Lines file, not a token dataset: tokenize it first with `temper prepare {} "
         "--model MODEL --out DATA.h5` (MODEL: the model directory or .gguf you fine-tune) and "
         "set data.path to DATA.h5", path, path);
  Handle file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) fail("{}: not a readable HDF5 file (truncated or corrupt?)", path);
  // HDF5 reads what lies past the end of a cut file as zeros: compare the size first.
  haddr_t end = 0;
  if (H5Fget_eoa(file.id, &end) >= 0 && std::filesystem::file_size(path) < end)
    fail("{}: truncated: {} bytes where the file needs {}", path, std::filesystem::file_size(path), end);
  if (H5Aexists(file.id, "shard_files") > 0) return read_shards(file.id, path);
  return read_dataset_file(file.id, path);
}

}  // namespace temper
