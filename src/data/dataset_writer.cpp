#include "data/dataset_writer.h"

#include <filesystem>
#include <fmt/format.h>

#include "core/error.h"

namespace temper {
namespace fs = std::filesystem;
namespace {

constexpr size_t kFlushTokens = size_t(1) << 20;  // buffered tokens before an append
constexpr hsize_t kChunk = hsize_t(1) << 18;      // elements per HDF5 chunk

// An empty 1-D dataset that grows by append().
h5::Id create_growing(hid_t file, const char* name, hid_t type, const std::string& path) {
  hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = kChunk;
  h5::Id space(H5Screate_simple(1, &zero, &unlimited));
  h5::Id props(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_chunk(props.get(), 1, &chunk);
  h5::Id set(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, props.get(), H5P_DEFAULT));
  if (!set.valid()) fail("{}: cannot create dataset '{}'", path, name);
  return set;
}

void append(hid_t set, hid_t type, const void* data, size_t n, const char* name,
            const std::string& path) {
  if (n == 0) return;
  h5::Id space(H5Dget_space(set));
  hsize_t size = 0;
  H5Sget_simple_extent_dims(space.get(), &size, nullptr);
  hsize_t grown = size + n, count = n;
  if (H5Dset_extent(set, &grown) < 0) fail("{}: cannot extend dataset '{}' (disk full?)", path, name);
  h5::Id file_space(H5Dget_space(set));
  H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &size, nullptr, &count, nullptr);
  h5::Id mem_space(H5Screate_simple(1, &count, nullptr));
  if (H5Dwrite(set, type, mem_space.get(), file_space.get(), H5P_DEFAULT, data) < 0)
    fail("{}: cannot write dataset '{}' (disk full?)", path, name);
}

void write_whole(hid_t file, const char* name, hid_t type, const void* data, size_t n,
                 const std::string& path) {
  hsize_t count = n;
  h5::Id space(H5Screate_simple(1, &count, nullptr));
  h5::Id set(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!set.valid() || (n && H5Dwrite(set.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
    fail("{}: cannot write dataset '{}' (disk full?)", path, name);
}

void write_info(hid_t file, const DatasetInfo& info) {
  h5::write_attr(file, "vocab_size", info.vocab_size);
  h5::write_attr(file, "eos_id", info.eos_id);
  h5::write_attr(file, "tokenizer_fingerprint", info.tokenizer_fingerprint);
  h5::write_attr(file, "source_format", info.source_format);
  h5::write_attr(file, "chat_template", info.chat_template);
  h5::write_attr(file, "creator_version", info.creator_version);
}

void close_or_fail(h5::Id& id, const std::string& path) {
  if (!id.close()) fail("{}: cannot finish writing (disk full?)", path);
}

}  // namespace

TokenDatasetWriter::TokenDatasetWriter(std::string out, int64_t shard_tokens)
    : out_(std::move(out)), shard_tokens_(shard_tokens) {
  if (shard_tokens < 0) fail("--shard-size must be positive, got {}", shard_tokens);
  h5::quiet();
}

TokenDatasetWriter::~TokenDatasetWriter() {
  if (finished_) return;
  tokens_set_ = {}, mask_set_ = {}, offsets_set_ = {}, file_ = {};
  std::error_code ec;
  for (const Shard& s : shards_) fs::remove(tmp(s), ec);
  fs::remove(out_ + ".tmp", ec);
}

void TokenDatasetWriter::open_shard() {
  Shard s;
  if (shard_tokens_ == 0) {
    s.path = out_;
  } else {
    fs::path stem = fs::path(out_).replace_extension("");
    s.path = fmt::format("{}-{:05d}.h5", stem.string(), shards_.size());
  }
  const std::string path = tmp(s);
  file_ = h5::Id(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  if (!file_.valid()) fail("{}: cannot create", path);
  offsets_.assign(1, 0);
  shards_.push_back(std::move(s));
}

void TokenDatasetWriter::flush(bool last) {
  const std::string path = tmp(shards_.back());
  const hid_t file = file_.get();
  if (!tokens_set_.valid() && last) {
    // The whole shard is in the buffers: plain datasets of the exact size.
    write_whole(file, "tokens", H5T_NATIVE_UINT32, tokens_.data(), tokens_.size(), path);
    write_whole(file, "loss_mask", H5T_NATIVE_UINT8, mask_.data(), mask_.size(), path);
    write_whole(file, "doc_offsets", H5T_NATIVE_UINT64, offsets_.data(), offsets_.size(), path);
  } else {
    if (!tokens_set_.valid()) {
      tokens_set_ = create_growing(file, "tokens", H5T_NATIVE_UINT32, path);
      mask_set_ = create_growing(file, "loss_mask", H5T_NATIVE_UINT8, path);
      offsets_set_ = create_growing(file, "doc_offsets", H5T_NATIVE_UINT64, path);
    }
    append(tokens_set_.get(), H5T_NATIVE_UINT32, tokens_.data(), tokens_.size(), "tokens", path);
    append(mask_set_.get(), H5T_NATIVE_UINT8, mask_.data(), mask_.size(), "loss_mask", path);
    append(offsets_set_.get(), H5T_NATIVE_UINT64, offsets_.data(), offsets_.size(), "doc_offsets", path);
  }
  tokens_.clear(), mask_.clear(), offsets_.clear();
}

void TokenDatasetWriter::close_shard() {
  flush(true);
  const std::string path = tmp(shards_.back());
  if (tokens_set_.valid()) {
    close_or_fail(tokens_set_, path);
    close_or_fail(mask_set_, path);
    close_or_fail(offsets_set_, path);
  }
  close_or_fail(file_, path);
}

void TokenDatasetWriter::add(std::span<const uint32_t> tokens, std::span<const uint8_t> mask) {
  TEMPER_CHECK(tokens.size() == mask.size(), "tokens {} vs mask {}", tokens.size(), mask.size());
  TEMPER_CHECK(!finished_, "add after finish");
  if (!file_.valid()) {
    open_shard();
  } else if (shard_tokens_ > 0 && shards_.back().tokens > 0 &&
             shards_.back().tokens + tokens.size() > uint64_t(shard_tokens_)) {
    close_shard();
    open_shard();
  }
  Shard& s = shards_.back();
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  mask_.insert(mask_.end(), mask.begin(), mask.end());
  s.tokens += tokens.size();
  ++s.documents;
  offsets_.push_back(s.tokens);
  ++documents_;
  if (tokens_.size() >= kFlushTokens) flush(false);
}

std::vector<std::string> TokenDatasetWriter::finish(std::span<const uint8_t> split,
                                                    const DatasetInfo& info) {
  TEMPER_CHECK(split.size() == documents_, "split has {} entries for {} documents", split.size(),
               documents_);
  if (!file_.valid() && shards_.empty()) open_shard();  // an empty dataset is still a file
  if (file_.valid()) close_shard();
  std::vector<std::string> written;
  uint64_t first = 0;
  for (Shard& s : shards_) {
    const std::string path = tmp(s);
    {
      h5::Id file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
      if (!file.valid()) fail("{}: cannot reopen", path);
      write_whole(file.get(), "split", H5T_NATIVE_UINT8, split.data() + first, s.documents, path);
      write_info(file.get(), info);
      if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0) fail("{}: flush failed (disk full?)", path);
      close_or_fail(file, path);
    }
    first += s.documents;
    s.bytes = fs::file_size(path);
    fs::rename(path, s.path);
    written.push_back(s.path);
  }
  if (shard_tokens_ > 0) {
    const std::string path = out_ + ".tmp";
    h5::Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    if (!file.valid()) fail("{}: cannot create", path);
    std::string names;
    std::vector<uint64_t> documents, tokens, bytes;
    for (const Shard& s : shards_) {
      if (!names.empty()) names += '\n';
      names += fs::path(s.path).filename().string();
      documents.push_back(s.documents), tokens.push_back(s.tokens), bytes.push_back(s.bytes);
    }
    h5::write_attr(file.get(), "shard_files", names);
    write_whole(file.get(), "shard_documents", H5T_NATIVE_UINT64, documents.data(), documents.size(), path);
    write_whole(file.get(), "shard_tokens", H5T_NATIVE_UINT64, tokens.data(), tokens.size(), path);
    write_whole(file.get(), "shard_bytes", H5T_NATIVE_UINT64, bytes.data(), bytes.size(), path);
    write_info(file.get(), info);
    if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0) fail("{}: flush failed (disk full?)", path);
    close_or_fail(file, path);
    fs::rename(path, out_);
    written.push_back(out_);
  }
  finished_ = true;
  return written;
}

}  // namespace temper
