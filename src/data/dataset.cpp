#include "data/dataset.h"

#include <hdf5.h>

#include <cctype>
#include <filesystem>
#include <fstream>

#include "checkpoint/h5.h"
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
  // h5::extent refuses a size the file cannot hold before anything is allocated.
  const std::vector<int64_t> dims = h5::extent(set.id, fmt::format("{}: dataset '{}'", path, name));
  if (dims.size() != 1) fail("{}: dataset '{}' must be 1-D", path, name);
  const size_t n = size_t(dims[0]);
  std::vector<T> v(n);
  if (n && H5Dread(set.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    fail("{}: cannot read dataset '{}' (truncated or corrupt file?)", path, name);
  return v;
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

void read_attributes(hid_t file, const std::string& path, TokenDataset& d) {
  d.vocab_size = h5::read_int_attr(file, "vocab_size", path);
  d.eos_id = h5::read_int_attr(file, "eos_id", path);
  d.tokenizer_fingerprint = h5::read_string_attr(file, "tokenizer_fingerprint", path);
  d.source_format = h5::read_string_attr(file, "source_format", path);
  d.chat_template = h5::read_string_attr(file, "chat_template", path);
  d.creator_version = h5::read_string_attr(file, "creator_version", path);
}

// One dataset file (a whole dataset or one shard), validated.
TokenDataset read_dataset_file(hid_t file, const std::string& path) {
  TokenDataset d;
  d.tokens = read_1d<uint32_t>(file, "tokens", H5T_NATIVE_UINT32, path);
  d.loss_mask = read_1d<uint8_t>(file, "loss_mask", H5T_NATIVE_UINT8, path);
  d.doc_offsets = read_1d<uint64_t>(file, "doc_offsets", H5T_NATIVE_UINT64, path);
  d.split = read_1d<uint8_t>(file, "split", H5T_NATIVE_UINT8, path);
  read_attributes(file, path, d);
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

// A shard index: the attributes, and each shard's file, documents, tokens and bytes.
struct ShardIndex {
  std::string path;
  TokenDataset meta;  // attributes only
  std::vector<std::string> files;
  std::vector<uint64_t> documents, tokens, bytes;
  std::string which(size_t i) const {
    return fmt::format("{}: shard {} of {}, {}", path, i + 1, files.size(), files[i]);
  }
};

ShardIndex read_index(hid_t index, const std::string& path) {
  ShardIndex x;
  x.path = path;
  const std::string names = h5::read_string_attr(index, "shard_files", path);
  for (size_t a = 0; a <= names.size();) {
    const size_t b = std::min(names.find('\n', a), names.size());
    x.files.push_back((std::filesystem::path(path).parent_path() / names.substr(a, b - a)).string());
    a = b + 1;
  }
  x.documents = read_1d<uint64_t>(index, "shard_documents", H5T_NATIVE_UINT64, path);
  x.tokens = read_1d<uint64_t>(index, "shard_tokens", H5T_NATIVE_UINT64, path);
  x.bytes = read_1d<uint64_t>(index, "shard_bytes", H5T_NATIVE_UINT64, path);
  const size_t n = x.files.size();
  if (x.documents.size() != n || x.tokens.size() != n || x.bytes.size() != n)
    fail("{}: the index names {} shards but records {} / {} / {} document / token / byte counts",
         path, n, x.documents.size(), x.tokens.size(), x.bytes.size());
  read_attributes(index, path, x.meta);
  return x;
}

// Opens shard i after checking it against the index: there, the size the index recorded,
// not cut short of HDF5's end of allocation.
h5::Id open_shard(const ShardIndex& x, size_t i) {
  namespace fs = std::filesystem;
  const std::string& shard = x.files[i];
  std::error_code ec;
  if (!fs::is_regular_file(shard, ec)) fail("{}, is missing", x.which(i));
  if (fs::file_size(shard, ec) != x.bytes[i])
    fail("{}, is {} bytes where the index says {}: damaged, or written by another `temper "
         "prepare`", x.which(i), fs::file_size(shard, ec), x.bytes[i]);
  h5::Id file(H5Fopen(shard.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) fail("{}, is not a readable HDF5 file (damaged?)", x.which(i));
  haddr_t end = 0;
  if (H5Fget_eoa(file.get(), &end) >= 0 && x.bytes[i] < end)
    fail("{}, is truncated: {} bytes where the file needs {}", x.which(i), x.bytes[i], end);
  return file;
}

// A shard's counts and attributes against the index.
void check_shard(const ShardIndex& x, size_t i, const TokenDataset& d, uint64_t tokens) {
  if (d.documents() != x.documents[i] || tokens != x.tokens[i])
    fail("{}, holds {} documents and {} tokens where the index says {} and {}", x.which(i),
         d.documents(), tokens, x.documents[i], x.tokens[i]);
  if (d.tokenizer_fingerprint != x.meta.tokenizer_fingerprint || d.vocab_size != x.meta.vocab_size ||
      d.source_format != x.meta.source_format)
    fail("{}, was made with another tokenizer or format than the index says", x.which(i));
}

// Every shard, checked, as one dataset in index order.
TokenDataset read_shards(hid_t index, const std::string& path) {
  const ShardIndex x = read_index(index, path);
  TokenDataset all = x.meta;
  for (size_t i = 0; i < x.files.size(); ++i) {
    const h5::Id file = open_shard(x, i);
    TokenDataset d = read_dataset_file(file.get(), x.files[i]);
    check_shard(x, i, d, d.tokens.size());
    const uint64_t base = all.tokens.size();
    all.tokens.insert(all.tokens.end(), d.tokens.begin(), d.tokens.end());
    all.loss_mask.insert(all.loss_mask.end(), d.loss_mask.begin(), d.loss_mask.end());
    for (size_t k = 1; k < d.doc_offsets.size(); ++k) all.doc_offsets.push_back(base + d.doc_offsets[k]);
    all.split.insert(all.split.end(), d.split.begin(), d.split.end());
  }
  return all;
}

// A shard opened for reading documents: the file and its two token datasets.
struct ShardFile {
  h5::Id file, tokens, loss_mask;
};

// The documents of one split of a sharded dataset, read from the shards when asked for:
// memory holds each document's shard, offsets and split, and one open file per shard.
class ShardedDocuments final : public DocumentSource {
 public:
  ShardedDocuments(std::shared_ptr<const ShardIndex> index, std::shared_ptr<std::vector<ShardFile>> files,
                   std::shared_ptr<const std::vector<std::vector<uint64_t>>> offsets,
                   std::vector<std::pair<uint32_t, uint64_t>> docs)
      : index_(std::move(index)), files_(std::move(files)), offsets_(std::move(offsets)),
        docs_(std::move(docs)) {}
  size_t size() const override { return docs_.size(); }
  int64_t length(size_t i) const override {
    const auto [shard, k] = docs_[i];
    return int64_t((*offsets_)[shard][k + 1] - (*offsets_)[shard][k]);
  }
  const Document& get(size_t i, Document& d) const override {
    const auto [shard, k] = docs_[i];
    const uint64_t a = (*offsets_)[shard][k], n = (*offsets_)[shard][k + 1] - a;
    std::vector<uint32_t> tokens(n);
    std::vector<uint8_t> mask(n);
    read_range(shard, "tokens", H5T_NATIVE_UINT32, a, n, tokens.data());
    read_range(shard, "loss_mask", H5T_NATIVE_UINT8, a, n, mask.data());
    d.tokens.resize(n);
    d.targets.resize(n);
    for (uint64_t j = 0; j < n; ++j) {
      if (int64_t(tokens[j]) >= index_->meta.vocab_size)
        fail("{}: token {} has id {}, outside the dataset's vocab_size {}",
             index_->files[shard], a + j, tokens[j], index_->meta.vocab_size);
      d.tokens[j] = int32_t(tokens[j]);
      d.targets[j] = j + 1 < n && mask[j + 1] ? int32_t(tokens[j + 1]) : kIgnoreIndex;
    }
    return d;
  }

 private:
  void read_range(uint32_t shard, const char* name, hid_t type, uint64_t first, uint64_t n,
                  void* out) const {
    const ShardFile& f = (*files_)[shard];
    const hid_t set = name == std::string_view("tokens") ? f.tokens.get() : f.loss_mask.get();
    Handle space{H5Dget_space(set), H5Sclose};
    hsize_t start = first, count = n;
    Handle mem{H5Screate_simple(1, &count, nullptr), H5Sclose};
    if (space.id < 0 ||
        H5Sselect_hyperslab(space.id, H5S_SELECT_SET, &start, nullptr, &count, nullptr) < 0 ||
        H5Dread(set, type, mem.id, space.id, H5P_DEFAULT, out) < 0)
      fail("{}: cannot read {} [{}, {}) (damaged?)", index_->files[shard], name, first, first + n);
  }
  std::shared_ptr<const ShardIndex> index_;
  std::shared_ptr<std::vector<ShardFile>> files_;
  std::shared_ptr<const std::vector<std::vector<uint64_t>>> offsets_;
  std::vector<std::pair<uint32_t, uint64_t>> docs_;  // (shard, document in it)
};

std::vector<uint64_t> read_offsets(hid_t file, const std::string& path, uint64_t tokens) {
  std::vector<uint64_t> offsets = read_1d<uint64_t>(file, "doc_offsets", H5T_NATIVE_UINT64, path);
  if (offsets.empty() || offsets.front() != 0 || offsets.back() != tokens)
    fail("{}: doc_offsets must run from 0 to the token count {}", path, tokens);
  for (size_t i = 0; i + 1 < offsets.size(); ++i)
    if (offsets[i + 1] <= offsets[i]) fail("{}: document {} is empty or out of order", path, i);
  return offsets;
}

uint64_t dataset_length(hid_t file, const char* name, const std::string& path) {
  Handle set{H5Dopen2(file, name, H5P_DEFAULT), H5Dclose};
  if (set.id < 0) fail("{}: dataset '{}' is missing", path, name);
  Handle space{H5Dget_space(set.id), H5Sclose};
  hsize_t n = 0;
  if (H5Sget_simple_extent_ndims(space.id) != 1) fail("{}: dataset '{}' must be 1-D", path, name);
  H5Sget_simple_extent_dims(space.id, &n, nullptr);
  return n;
}

DatasetDocuments open_sharded(hid_t index_file, const std::string& path) {
  auto index = std::make_shared<const ShardIndex>(read_index(index_file, path));
  auto files = std::make_shared<std::vector<ShardFile>>();
  auto offsets = std::make_shared<std::vector<std::vector<uint64_t>>>();
  std::vector<std::pair<uint32_t, uint64_t>> split_docs[2];
  for (size_t i = 0; i < index->files.size(); ++i) {
    ShardFile f;
    f.file = open_shard(*index, i);
    const hid_t file = f.file.get();
    const std::string& shard = index->files[i];
    TokenDataset d;  // attributes and split
    read_attributes(file, shard, d);
    d.split = read_1d<uint8_t>(file, "split", H5T_NATIVE_UINT8, shard);
    const uint64_t tokens = dataset_length(file, "tokens", shard);
    if (dataset_length(file, "loss_mask", shard) != tokens)
      fail("{}: loss_mask and tokens differ in length", shard);
    offsets->push_back(read_offsets(file, shard, tokens));
    if (offsets->back().size() != d.split.size() + 1)
      fail("{}: doc_offsets has {} entries, expected split size + 1 = {}", shard,
           offsets->back().size(), d.split.size() + 1);
    check_shard(*index, i, d, tokens);
    for (uint64_t k = 0; k < d.split.size(); ++k) {
      if (d.split[k] > 1) fail("{}: split[{}] = {} (expected 0 train or 1 validation)", shard, k, d.split[k]);
      split_docs[d.split[k]].push_back({uint32_t(i), k});
    }
    f.tokens = h5::Id(H5Dopen2(file, "tokens", H5P_DEFAULT));
    f.loss_mask = h5::Id(H5Dopen2(file, "loss_mask", H5P_DEFAULT));
    files->push_back(std::move(f));
  }
  DatasetDocuments out;
  out.meta = index->meta;
  out.train = std::make_shared<ShardedDocuments>(index, files, offsets, std::move(split_docs[0]));
  out.val = std::make_shared<ShardedDocuments>(index, files, offsets, std::move(split_docs[1]));
  return out;
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

DatasetDocuments open_token_dataset(const std::string& path) {
  quiet_hdf5();
  if (std::filesystem::exists(path) && H5Fis_hdf5(path.c_str()) > 0) {
    Handle file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
    if (file.id >= 0 && H5Aexists(file.id, "shard_files") > 0) {
      haddr_t end = 0;
      if (H5Fget_eoa(file.id, &end) >= 0 && std::filesystem::file_size(path) < end)
        fail("{}: truncated: {} bytes where the file needs {}", path, std::filesystem::file_size(path), end);
      return open_sharded(file.id, path);
    }
  }
  TokenDataset d = read_token_dataset(path);  // one file, or the errors of a bad one
  DatasetDocuments out;
  out.train = std::make_shared<InMemoryDocuments>(d.documents_of(false));
  out.val = std::make_shared<InMemoryDocuments>(d.documents_of(true));
  d.tokens.clear(), d.loss_mask.clear(), d.doc_offsets.clear(), d.split.clear();
  out.meta = std::move(d);
  return out;
}

}  // namespace temper
