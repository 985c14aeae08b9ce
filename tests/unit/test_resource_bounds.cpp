// Resource bounds (docs/reliability.md): a file that declares a huge size is refused with
// an error naming the file and what is too large, before anything is allocated for it.
// One test per bound: a 2^60-byte tensor (safetensors, GGUF, a checkpoint, a token
// dataset), a 2^40-entry GGUF metadata array and one just over the array limit that the
// file really holds, a vocabulary of 10^12 tokens (tokenizer.json, config.json, GGUF), a
// safetensors header over its limit. The 10 GB JSON Lines line is Prepare's test
// (tests/unit/test_prepare.cpp, ALineLongerThanTheLimitIsRefusedBeforeItIsReadWhole).
// Then the fuzzers' findings in HDF5 files (the others are beside their parsers' tests).
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstring>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/limits.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/transformer.h"
#include "support/allocation_probe.h"
#include "support/test_util.h"

namespace temper {
namespace {

namespace fs = std::filesystem;
constexpr size_t kSmall = size_t(64) << 20;  // no allocation for a refused file reaches this

// Runs fn, which must throw a temper::Error containing every fragment, with no single
// allocation of kSmall bytes or more on the way (where the probe is available).
void expect_refused(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  test::reset_largest_allocation();
  const std::string message = test::error_of(fn);
  ASSERT_NE(message, "") << "no error";
  for (const std::string& f : fragments) EXPECT_NE(message.find(f), std::string::npos) << message;
  if (test::allocation_probe_available())
    EXPECT_LT(test::largest_allocation(), kSmall) << "allocated before refusing: " << message;
}

std::string write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  return path.string();
}

template <typename T>
void put(std::string& b, T v) {
  b.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

std::string safetensors_with_header(const std::string& header, uint64_t declared_length, size_t data_bytes) {
  std::string b;
  put<uint64_t>(b, declared_length);
  return b + header + std::string(data_bytes, '\0');
}

TEST(ResourceBounds, ASafetensorsTensorOf2To60BytesIsRefused) {
  const auto dir = test::temp_dir("bounds_safetensors");
  const std::string header =
      R"({"huge":{"dtype":"U8","shape":[1152921504606846976],"data_offsets":[0,1152921504606846976]}})";
  const std::string path = write_bytes(dir / "huge.safetensors", safetensors_with_header(header, header.size(), 64));
  for (const bool with_data : {false, true})
    expect_refused([&] { read_safetensors(path, with_data); }, {path, "huge"});
}

TEST(ResourceBounds, ASafetensorsHeaderOverItsLimitIsRefused) {
  const auto dir = test::temp_dir("bounds_safetensors_header");
  // The file is only 16 bytes; a header length of 2^60 or just over the limit is refused.
  for (const uint64_t length : {uint64_t(1) << 60, limits::kMaxSafetensorsHeaderBytes + 1}) {
    const std::string path = write_bytes(dir / "h.safetensors", safetensors_with_header("{}", length, 6));
    expect_refused([&] { read_safetensors(path); }, {path, "header length", "exceeds the limit"});
  }
}

// GGUF v3: magic, version, tensor count, then metadata key-value pairs (`kv`, `n_kv` of them).
std::string gguf_file(uint64_t n_tensors, uint64_t n_kv, const std::string& kv) {
  std::string b = "GGUF";
  put<uint32_t>(b, 3);
  put<uint64_t>(b, n_tensors);
  put<uint64_t>(b, n_kv);
  return b + kv;
}
std::string gguf_key(const std::string& key) {
  std::string b;
  put<uint64_t>(b, key.size());
  return b + key;
}
// key = ARRAY of `n` UINT8 (type 0), with `held` bytes of the array present.
std::string gguf_u8_array(const std::string& key, uint64_t n, size_t held) {
  std::string b = gguf_key(key);
  put<uint32_t>(b, 9);  // ARRAY
  put<uint32_t>(b, 0);  // of UINT8
  put<uint64_t>(b, n);
  return b + std::string(held, '\1');
}

TEST(ResourceBounds, AGgufMetadataArrayOf2To40EntriesIsRefused) {
  const auto dir = test::temp_dir("bounds_gguf_array");
  const std::string path = write_bytes(dir / "a.gguf", gguf_file(0, 1, gguf_u8_array("my.array", uint64_t(1) << 40, 64)));
  expect_refused([&] { read_gguf(path); }, {path, "'my.array'", "array length 1099511627776"});
}

TEST(ResourceBounds, AGgufArrayOverTheLimitIsRefusedEvenWhenTheFileHoldsIt) {
  const auto dir = test::temp_dir("bounds_gguf_array_held");
  const uint64_t n = limits::kMaxGgufArrayLength + 1;  // 16 MiB + 1 bytes, all present
  const std::string path = write_bytes(dir / "a.gguf", gguf_file(0, 1, gguf_u8_array("tokenizer.ggml.scores", n, n)));
  expect_refused([&] { read_gguf(path); }, {path, "'tokenizer.ggml.scores'", "exceeds the limit of 16777216 entries"});
}

TEST(ResourceBounds, AGgufTensorOf2To60BytesIsRefused) {
  const auto dir = test::temp_dir("bounds_gguf_tensor");
  std::string b = gguf_file(1, 0, "");
  b += gguf_key("huge.weight");
  put<uint32_t>(b, 2);               // n_dims
  put<uint64_t>(b, uint64_t(1) << 30);  // ne[0]
  put<uint64_t>(b, uint64_t(1) << 28);  // ne[1]: 2^58 F32 elements = 2^60 bytes
  put<uint32_t>(b, 0);               // F32
  put<uint64_t>(b, 0);               // offset
  b.resize(b.size() + 64, '\0');
  const std::string path = write_bytes(dir / "t.gguf", b);
  expect_refused([&] { read_gguf(path); }, {path, "huge.weight"});
}

TEST(ResourceBounds, AVocabularyOf10To12TokensIsRefused) {
  // tokenizer.json: a token id of 10^12.
  expect_refused([] {
    Tokenizer::from_json_string(
        R"({"normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "unk_token": "a", "vocab": {"a": 1000000000000}, "merges": []}})", "big/tokenizer.json");
  }, {"big/tokenizer.json", "id 1000000000000 exceeds the vocabulary size limit of 16777216"});
  expect_refused([] {
    Tokenizer::from_json_string(
        R"({"normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "unk_token": "a", "vocab": {"a": 0}, "merges": []},
            "added_tokens": [{"id": 1000000000000, "content": "<x>", "special": true}]})",
        "big/tokenizer.json");
  }, {"big/tokenizer.json", "added_tokens[0].id", "exceeds the vocabulary size limit"});
  // config.json: vocab_size 10^12 (the model would be sized from it).
  nlohmann::json config = {{"model_type", "llama"}, {"vocab_size", 1000000000000}, {"hidden_size", 64},
                           {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 4}};
  expect_refused([&] { model_config_from_hf_json(config, "big/config.json"); },
                 {"big/config.json", "vocab_size 1000000000000 exceeds the limit 16777216"});
  // GGUF: a token list of 10^12 strings.
  const auto dir = test::temp_dir("bounds_vocab_gguf");
  std::string kv = gguf_key("tokenizer.ggml.tokens");
  put<uint32_t>(kv, 9);   // ARRAY
  put<uint32_t>(kv, 8);   // of STRING
  put<uint64_t>(kv, 1000000000000);
  const std::string path = write_bytes(dir / "v.gguf", gguf_file(0, 1, kv + std::string(256, '\0')));
  expect_refused([&] { read_gguf(path); }, {path, "'tokenizer.ggml.tokens'", "array length 1000000000000"});
}

TEST(ResourceBounds, AModelConfigOverTheParameterLimitIsRefused) {
  nlohmann::json config = {{"model_type", "llama"}, {"vocab_size", 32000}, {"hidden_size", 1 << 22},
                           {"intermediate_size", 1 << 23}, {"num_hidden_layers", 1 << 12},
                           {"num_attention_heads", 1 << 10}};
  expect_refused([&] { model_config_from_hf_json(config, "big/config.json"); },
                 {"big/config.json", "parameters exceed the limit 4398046511104"});
}

ModelConfig small_model_config() {
  ModelConfig c;
  c.vocab_size = 16, c.hidden_size = 8, c.intermediate_size = 12, c.num_hidden_layers = 1;
  c.num_attention_heads = 2, c.num_key_value_heads = 1, c.max_position_embeddings = 16;
  return c;
}

// dir/ckpt.h5: a model-only checkpoint of small_model_config().
std::string write_small_checkpoint(const fs::path& dir) {
  auto cpu = make_backend("cpu");
  Transformer model(small_model_config(), *cpu, DType::F32);
  model.init_weights(1);
  const std::string path = (dir / "ckpt.h5").string();
  write_checkpoint(path, CheckpointMeta{}, model, nullptr, RankState{});
  return path;
}

// Replaces dataset `name` of an HDF5 file by a chunked one of `dims` elements that declares
// its size but stores nothing (HDF5 allocates chunks only when written).
void replace_with_unwritten_dataset(const std::string& path, const std::string& name, hid_t type,
                                    const std::vector<hsize_t>& dims) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  ASSERT_GE(H5Ldelete(file, name.c_str(), H5P_DEFAULT), 0);
  const hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  const hid_t props = H5Pcreate(H5P_DATASET_CREATE);
  const std::vector<hsize_t> chunk(dims.size(), 1024);
  H5Pset_chunk(props, int(chunk.size()), chunk.data());
  const hid_t set = H5Dcreate2(file, name.c_str(), type, space, H5P_DEFAULT, props, H5P_DEFAULT);
  ASSERT_GE(set, 0);
  H5Dclose(set), H5Pclose(props), H5Sclose(space), H5Fclose(file);
}

TEST(ResourceBounds, ATokenDatasetDeclaring2To60BytesIsRefused) {
  const auto dir = test::temp_dir("bounds_dataset");
  TokenDataset d;
  d.vocab_size = 16;
  d.add({1, 2, 3}, {1, 1, 1}, false);
  const std::string path = (dir / "data.h5").string();
  write_token_dataset(path, d);
  replace_with_unwritten_dataset(path, "tokens", H5T_NATIVE_UINT32, {hsize_t(1) << 58});  // 2^60 bytes
  expect_refused([&] { read_token_dataset(path); }, {path, "'tokens'", "more than the whole file"});
  expect_refused([&] { open_token_dataset(path); }, {path, "'tokens'", "more than the whole file"});
}

TEST(ResourceBounds, ACheckpointTensorDeclaring2To60BytesIsRefused) {
  const std::string path = write_small_checkpoint(test::temp_dir("bounds_checkpoint"));
  const std::string name = "model/model.norm.weight";
  replace_with_unwritten_dataset(path, name, H5T_NATIVE_FLOAT, {hsize_t(1) << 29, hsize_t(1) << 29});
  expect_refused([&] { describe_checkpoint(path, /*verify=*/true); }, {path, "model.norm.weight", "more than the whole file"});
  auto cpu = make_backend("cpu");
  Transformer other(small_model_config(), *cpu, DType::F32);
  expect_refused([&] { load_checkpoint(path, other, nullptr); }, {path, "model.norm.weight", "more than the whole file"});
}

// Found by tests/fuzz/fuzz_hdf5_dataset.cpp (regression input
// regression-attribute-of-four-values): an integer attribute holding an array was read
// into one int64, writing past it (ASan: stack-buffer-overflow).
TEST(Dataset, AnAttributeOfFourValuesIsAnErrorNotAnOverflow) {
  const auto dir = test::temp_dir("fuzz_regression_attribute");
  TokenDataset d;
  d.vocab_size = 16;
  d.add({1, 2, 3}, {1, 1, 1}, false);
  const std::string path = (dir / "data.h5").string();
  write_token_dataset(path, d);
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  H5Adelete(file, "vocab_size");
  const hsize_t four = 4;
  const int64_t values[4] = {16, 17, 18, 19};
  const hid_t space = H5Screate_simple(1, &four, nullptr);
  const hid_t attr = H5Acreate2(file, "vocab_size", H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(attr, H5T_NATIVE_INT64, values);
  H5Aclose(attr), H5Sclose(space), H5Fclose(file);
  expect_refused([&] { read_token_dataset(path); }, {path, "attribute 'vocab_size' holds 4 values, expected one"});
}

// Found by tests/fuzz/fuzz_hdf5_checkpoint.cpp (regression input regression-scalar-tensor):
// `describe --verify` took the last dimension of a scalar dataset (UBSan: back() of an
// empty vector).
TEST(Checkpoint, DescribeRefusesATensorWithNoDimensions) {
  const std::string path = write_small_checkpoint(test::temp_dir("fuzz_regression_scalar"));
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  H5Ldelete(file, "model/model.norm.weight", H5P_DEFAULT);
  const hid_t space = H5Screate(H5S_SCALAR);
  const float one = 1.0f;
  const hid_t set = H5Dcreate2(file, "model/model.norm.weight", H5T_NATIVE_FLOAT, space, H5P_DEFAULT,
                               H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(set, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, &one);
  H5Dclose(set), H5Sclose(space), H5Fclose(file);
  expect_refused([&] { describe_checkpoint(path, /*verify=*/true); },
                 {path, "tensor 'model/model.norm.weight' has 0 dimensions"});
}

}  // namespace
}  // namespace temper
