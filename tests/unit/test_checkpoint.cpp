// HDF5 checkpoints in one process: write then load is bit-exact for the model (f32,
// bf16), the optimizer state, the meta and the per-rank state, across dtypes too; a bad
// file (missing, truncated, flipped bytes in data or metadata, another model's shape, a
// missing or extra tensor, another format version, a full disk) is an error naming the
// file and the tensor or attribute; the hyperslab pieces of any split cover a tensor once
// and their checksums add up to the whole tensor's.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "checkpoint/slab.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "support/checkpoint_state.h"
#include "support/test_util.h"

namespace temper {
namespace {

namespace fs = std::filesystem;

ModelConfig small(bool tied = false, int64_t hidden = 32) {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = hidden;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  c.tie_word_embeddings = tied;
  c.attention_bias = true;
  return c;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

CheckpointMeta sample_meta() {
  CheckpointMeta m;
  m.step = 17;
  m.tokens_seen = 123456789012;
  m.config_yaml = "train:\n  steps: 40\n";
  m.grid.zero = 0;
  m.lr = 2.5e-4;
  m.schedule = {3e-4, 0.1, 5, 40, "linear"};
  m.loss_scale = 1024.0;
  m.loss_scale_good_steps = 3;
  m.loss_scale_overflows = 2;
  m.nonfinite_streak = 1;
  m.skipped_steps = 4;
  m.extra["dataset_fingerprint"] = "abc123";
  return m;
}

// A model and optimizer filled with the deterministic test state, written to `path`.
void write_sample(const std::string& path, DType dtype, bool with_optimizer, bool tied = false) {
  auto cpu = make_backend("cpu");
  Transformer model(small(tied), *cpu, dtype);
  AdamW opt(model.params(), *cpu, AdamWConfig{});
  test::fill_training_state(model, with_optimizer ? &opt : nullptr);
  opt.set_steps_taken(17);
  RankState state;
  state.rng = {11, 22, 33};
  state.data = {2, 5};
  write_checkpoint(path, sample_meta(), model, with_optimizer ? &opt : nullptr, state);
}

TEST(Checkpoint, WriteThenLoadIsBitExact) {
  auto cpu = make_backend("cpu");
  const auto dir = test::temp_dir("ckpt_roundtrip");
  for (DType written : {DType::F32, DType::BF16}) {
    const std::string path = (dir / fmt::format("{}.h5", dtype_name(written))).string();
    write_sample(path, written, true);
    for (DType reader : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(fmt::format("written {} read {}", dtype_name(written), dtype_name(reader)));
      Transformer model(small(), *cpu, reader);
      AdamW opt(model.params(), *cpu, AdamWConfig{});
      const CheckpointMeta m = load_checkpoint(path, model, &opt);
      EXPECT_EQ(test::check_training_state(model, &opt, written, true), "");
      EXPECT_EQ(opt.steps_taken(), 17);
      const CheckpointMeta want = sample_meta();
      EXPECT_EQ(m.step, want.step);
      EXPECT_EQ(m.tokens_seen, want.tokens_seen);
      EXPECT_EQ(m.config_yaml, want.config_yaml);
      EXPECT_EQ(m.lr, want.lr);
      EXPECT_EQ(m.schedule.kind, "linear");
      EXPECT_EQ(m.schedule.lr, 3e-4);
      EXPECT_EQ(m.schedule.min_lr_ratio, 0.1);
      EXPECT_EQ(m.schedule.warmup_steps, 5);
      EXPECT_EQ(m.schedule.total_steps, 40);
      EXPECT_EQ(m.loss_scale, 1024.0);
      EXPECT_EQ(m.loss_scale_good_steps, 3);
      EXPECT_EQ(m.loss_scale_overflows, 2);
      EXPECT_EQ(m.nonfinite_streak, 1);
      EXPECT_EQ(m.skipped_steps, 4);
      EXPECT_EQ(m.extra, want.extra);
      EXPECT_EQ(m.model_dtype, dtype_name(written));
      EXPECT_EQ(m.grid.world, 1);
      EXPECT_TRUE(m.has_optimizer);
      EXPECT_EQ(m.optimizer_steps, 17);
      const ModelConfig mc = model_config_from_hf_json(nlohmann::json::parse(m.model_config_json), "meta");
      EXPECT_EQ(mc.hidden_size, 32);
      EXPECT_EQ(mc.intermediate_size, 48);
    }
    // Model only, into a fresh model of each dtype (f32 takes the master weights), and
    // from a model-only checkpoint.
    const std::string model_only = (dir / fmt::format("{}_model.h5", dtype_name(written))).string();
    write_sample(model_only, written, false);
    for (DType reader : {DType::F32, DType::BF16, DType::F16}) {
      Transformer model(small(), *cpu, reader);
      load_checkpoint(path, model, nullptr);
      EXPECT_EQ(test::check_training_state(model, nullptr, written, true), "") << dtype_name(reader);
      Transformer other(small(), *cpu, reader);
      load_checkpoint(model_only, other, nullptr);
      EXPECT_EQ(test::check_training_state(other, nullptr, written, false), "") << dtype_name(reader);
    }
    const RankState s = read_rank_state(path, 0, 0);
    EXPECT_EQ(s.rng, (std::vector<uint64_t>{11, 22, 33}));
    EXPECT_EQ(s.data.epoch, 2u);
    EXPECT_EQ(s.data.index, 5u);
    EXPECT_HAS(error_of([&] { read_rank_state(path, 1, 0); }), "rng/1");
  }
}

TEST(Checkpoint, DescribeListsTensorsAndVerifiesChecksums) {
  const auto dir = test::temp_dir("ckpt_describe");
  const std::string path = (dir / "c.h5").string();
  write_sample(path, DType::BF16, true);
  EXPECT_TRUE(is_checkpoint_file(path));
  const std::string text = describe_checkpoint(path, true);
  EXPECT_HAS(text, "step 17");
  EXPECT_HAS(text, "model/model.layers.1.mlp.down_proj.weight");
  EXPECT_HAS(text, "bf16 [32, 48]");
  EXPECT_HAS(text, "steps: 40");
  // 2 layers × 12 tensors (with q/k/v biases) + embedding, norm, head; ×4 with master/m/v.
  const size_t tensors = (2 * 12 + 3) * 4;
  EXPECT_HAS(text, fmt::format("checksums: {} tensors verified", tensors));
}

TEST(Checkpoint, ModelOnlyCheckpointCannotResume) {
  const auto dir = test::temp_dir("ckpt_model_only");
  const std::string path = (dir / "m.h5").string();
  write_sample(path, DType::F32, false);
  auto cpu = make_backend("cpu");
  Transformer model(small(), *cpu, DType::F32);
  AdamW opt(model.params(), *cpu, AdamWConfig{});
  EXPECT_HAS(error_of([&] { load_checkpoint(path, model, &opt); }), "model-only checkpoint");
  EXPECT_FALSE(read_checkpoint_meta(path).has_optimizer);
}

// Byte offset in the file of a dataset's raw data, and of its object header.
std::pair<haddr_t, haddr_t> addresses(const std::string& path, const std::string& dataset) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
  const haddr_t data = H5Dget_offset(d);
  H5O_info_t info;
  H5Oget_info_by_name2(f, dataset.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT);
  H5Dclose(d);
  H5Fclose(f);
  return {data, info.addr};
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(offset));
  char c = 0;
  f.read(&c, 1);
  c = char(c ^ 0x5a);
  f.seekp(std::streamoff(offset));
  f.write(&c, 1);
}

TEST(Checkpoint, BadFilesAreErrorsNamingFileAndTensor) {
  auto cpu = make_backend("cpu");
  const auto dir = test::temp_dir("ckpt_errors");
  const std::string good = (dir / "good.h5").string();
  write_sample(good, DType::BF16, true);
  auto copy = [&](const std::string& name) {
    const std::string p = (dir / name).string();
    fs::copy_file(good, p, fs::copy_options::overwrite_existing);
    return p;
  };
  auto load = [&](const std::string& path, const ModelConfig& c = small()) {
    return error_of([&] {
      Transformer model(c, *cpu, DType::BF16);
      AdamW opt(model.params(), *cpu, AdamWConfig{});
      load_checkpoint(path, model, &opt);
    });
  };
  const std::string tensor = "model.layers.1.self_attn.o_proj.weight";

  EXPECT_HAS(load((dir / "absent.h5").string()), "absent.h5' does not exist");

  const std::string truncated = copy("truncated.h5");
  fs::resize_file(truncated, fs::file_size(truncated) / 2);
  std::string e = load(truncated);
  EXPECT_HAS(e, "truncated.h5");
  EXPECT_HAS(e, "truncated or corrupt");

  // A flipped byte in a tensor's raw data: HDF5 cannot see it, the checksum does.
  for (const std::string& ds : {"model/" + tensor, "optim/" + tensor + "/v"}) {
    const std::string flipped = copy("flipped_data.h5");
    flip_byte(flipped, addresses(flipped, ds).first + 5);
    e = load(flipped);
    EXPECT_HAS(e, "flipped_data.h5");
    EXPECT_HAS(e, "'" + ds + "' does not match its checksum");
    EXPECT_HAS(error_of([&] { describe_checkpoint(flipped, true); }), ds);
  }
  // A flipped byte in a dataset's object header: HDF5's metadata checksum.
  const std::string header = copy("flipped_header.h5");
  flip_byte(header, addresses(header, "model/" + tensor).second + 6);
  e = load(header);
  EXPECT_HAS(e, "flipped_header.h5");
  EXPECT_HAS(e, tensor);

  // Another model: a different hidden size, a tied head (no lm_head.weight).
  e = load(good, small(false, 48));
  EXPECT_HAS(e, "good.h5: tensor 'model/model.embed_tokens.weight' has shape [64, 32], the model expects [64, 48]");
  e = load(good, small(true));
  EXPECT_HAS(e, "tensor 'model/lm_head.weight' is not a parameter of the model");

  // A missing tensor, another format version.
  const std::string missing = copy("missing.h5");
  {
    hid_t f = H5Fopen(missing.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, ("optim/" + tensor + "/m").c_str(), H5P_DEFAULT);
    H5Fclose(f);
  }
  EXPECT_HAS(load(missing), "missing.h5: tensor 'optim/" + tensor + "/m' is missing");
  const std::string version = copy("version.h5");
  {
    hid_t f = H5Fopen(version.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "meta", H5P_DEFAULT);
    hid_t a = H5Aopen(g, "format_version", H5P_DEFAULT);
    const int64_t v = 99;
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Gclose(g);
    H5Fclose(f);
  }
  EXPECT_HAS(load(version), "version.h5: checkpoint format_version 99, this temper reads version 1");
  EXPECT_HAS(error_of([&] { read_checkpoint_meta(version); }), "format_version 99");

  // Not a checkpoint: a text file, a token dataset.
  const std::string text = (dir / "text.h5").string();
  std::ofstream(text) << "not hdf5\n";
  EXPECT_HAS(load(text), "text.h5: not a readable HDF5 file");
  const std::string dataset = (dir / "data.h5").string();
  TokenDataset d;
  d.vocab_size = 4;
  d.add({1, 2}, {1, 1}, false);
  write_token_dataset(dataset, d);
  EXPECT_HAS(load(dataset), "data.h5: no /meta group: not a temper checkpoint");
  EXPECT_FALSE(is_checkpoint_file(dataset));
}

// The child half of WriteFailureIsAnErrorNamingTheFile, in a fresh process: writes under
// file-size limits that make them fail at different points (the first tensor, a middle
// one, the final flush of the buffered last pieces), then a good write and load in the
// same process, then exits 1 through exit(), so HDF5's exit handler runs over whatever
// the failures left behind.
[[noreturn]] void fail_writes_then_exit(const std::string& dir) {
  auto cpu = make_backend("cpu");
  Transformer model(small(false, 256), *cpu, DType::F32);  // 256x256 tensors: unbuffered writes
  const std::string good = dir + "/good.h5";
  write_checkpoint(good, sample_meta(), model, nullptr, RankState{});
  const rlim_t size = fs::file_size(good);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG, as ENOSPC would
  const rlim_t limits[3] = {4 << 10, size / 2, size - (16 << 10)};
  for (int i = 0; i < 3; ++i) {
    const std::string path = fmt::format("{}/full-{}.h5", dir, i);
    rlimit lim = old;
    lim.rlim_cur = limits[i];
    setrlimit(RLIMIT_FSIZE, &lim);
    const std::string e = error_of([&] { write_checkpoint(path, sample_meta(), model, nullptr, RankState{}); });
    setrlimit(RLIMIT_FSIZE, &old);
    std::fprintf(stderr, "failing write %d: %s\n", i, e.c_str());
  }
  fs::remove(good);
  write_checkpoint(good, sample_meta(), model, nullptr, RankState{});
  Transformer back(small(false, 256), *cpu, DType::F32);
  const CheckpointMeta m = load_checkpoint(good, back, nullptr);
  std::fprintf(stderr, "after the failures: wrote and loaded step %lld\n", (long long)m.step);
  std::exit(1);
}

TEST(Checkpoint, WriteFailureIsAnErrorNamingTheFile) {
  if (const char* dir = std::getenv("TEMPER_TEST_FAILING_WRITES_IN")) fail_writes_then_exit(dir);
  // A failed write must leave HDF5 able to write again and to shut down: HDF5 1.10 leaves
  // a dangling file id after a failed flush that crashes its exit handler (status 139).
  const fs::path dir = test::temp_dir("ckpt_full");
  const test::CommandResult r = test::run_command(fmt::format(
      "TEMPER_TEST_FAILING_WRITES_IN='{}' /proc/{}/exe --gtest_filter=Checkpoint.WriteFailureIsAnErrorNamingTheFile",
      dir.string(), ::getpid()));
  EXPECT_EQ(r.status, 1) << r.output;
  for (int i = 0; i < 3; ++i)
    EXPECT_HAS(r.output, fmt::format("failing write {}: {}/full-{}.h5: ", i, dir.string(), i));
  EXPECT_EQ(r.output.find("(no error)"), std::string::npos) << r.output;
  EXPECT_HAS(r.output, "disk full?");
  EXPECT_HAS(r.output, "failing write 0: " + dir.string() + "/full-0.h5: cannot write 'model/");
  EXPECT_HAS(r.output, "flushing the checkpoint failed");  // the case that crashed at exit
  EXPECT_HAS(r.output, "after the failures: wrote and loaded step 17");
  EXPECT_EQ(r.output.find("could not close"), std::string::npos) << r.output;
}

// Pieces of a [R, C] tensor under every split: the selections cover each element once, in
// increasing order within each, and the checksums of the parts add up to the whole's.
TEST(CheckpointSlab, PiecesCoverOnceAndChecksumsAddUp) {
  const int64_t R = 6, C = 10;
  std::vector<float> full(size_t(R * C));
  Rng rng(rng_stream(5, RngPurpose::Test));
  for (float& x : full) x = rng.normal();
  ckpt::Selection whole;
  Parameter p;
  p.name = "w";
  p.full_shape = Shape{R, C};
  p.shape = p.full_shape;
  whole.add(ckpt::block_of(p), 0, R * C);
  const uint64_t want = ckpt::checksum(whole, full.data(), 4);
  for (int split : {-1, 0, 1}) {
    for (int shards : {1, 2}) {
      for (int64_t pieces : {1, 3, 7}) {
        SCOPED_TRACE(fmt::format("split {} shards {} pieces {}", split, shards, pieces));
        std::vector<int> seen(size_t(R * C), 0);
        uint64_t sum = 0;
        for (int shard = 0; shard < (split < 0 ? 1 : shards); ++shard) {
          Parameter q = p;
          q.split_dim = split;
          q.shards = split < 0 ? 1 : shards;
          q.shard = shard;
          q.shape = p.full_shape;
          if (split >= 0) q.shape.dims[size_t(split)] /= shards;
          const ckpt::Block b = ckpt::block_of(q);
          const int64_t n = b.numel();
          for (int64_t k = 0; k < pieces; ++k) {  // uneven ranges as ZeRO makes them
            ckpt::Selection s;
            s.add(b, n * k / pieces, n * (k + 1) / pieces);
            std::vector<float> data;
            int64_t last = -1;
            for (const ckpt::Rect& r : s.rects)
              for (int64_t i = r.row; i < r.row + r.nrows; ++i)
                for (int64_t j = r.col; j < r.col + r.ncols; ++j) {
                  EXPECT_GT(i * C + j, last);
                  last = i * C + j;
                  ++seen[size_t(i * C + j)];
                  data.push_back(full[size_t(i * C + j)]);
                }
            // The piece's elements, taken independently through the shard's own numbering.
            for (int64_t i = n * k / pieces; i < n * (k + 1) / pieces; ++i)
              EXPECT_EQ(data[size_t(i - n * k / pieces)], full[size_t(test::full_index(q, i))]);
            sum += ckpt::checksum(s, data.data(), 4);
          }
        }
        for (int v : seen) EXPECT_EQ(v, 1);
        EXPECT_EQ(sum, want);
      }
    }
  }
  // A different value or a swap changes the checksum.
  std::vector<float> changed = full;
  changed[7] = std::nextafter(changed[7], 1e9f);
  EXPECT_NE(ckpt::checksum(whole, changed.data(), 4), want);
  changed = full;
  std::swap(changed[3], changed[4]);
  EXPECT_NE(ckpt::checksum(whole, changed.data(), 4), want);
}

}  // namespace
}  // namespace temper
