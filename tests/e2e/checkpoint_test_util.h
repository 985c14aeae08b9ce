// Helpers of the checkpoint / resume tests (tests/e2e/test_checkpoint_train*.cpp and
// tests/parallel/test_resume*.cpp, test_preempt.cpp): `temper train` command lines on the
// tiny recipe, and what a run left behind (metrics, files, checkpoints).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_util.h"

namespace temper::test {

inline std::string temper_bin() { return std::string(TEMPER_BINARY_DIR) + "/bin/temper"; }
inline std::string tiny_recipe() {
  return std::string(TEMPER_SOURCE_DIR) + "/configs/recipes/tiny.yaml";
}

// The environment mpirun needs here (root in CI), one thread per rank.
inline std::string mpi_env() {
  return "OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1";
}

// The overrides of every run here: `out_dir`, plain progress, no evaluation, then `args`.
inline std::string train_overrides(const std::filesystem::path& out_dir, const std::string& args) {
  return fmt::format("out_dir={} train.eval_every=0 train.progress=plain {}", out_dir.string(), args);
}

// `temper train` arguments: the tiny recipe and train_overrides.
inline std::string train_args(const std::filesystem::path& out_dir, const std::string& args) {
  return fmt::format("train {} {}", tiny_recipe(), train_overrides(out_dir, args));
}

// A shell command running `temper train` (see train_args) after `prefix` (environment
// assignments, or `timeout ...`), with one OpenMP thread: on a loaded machine more
// threads than free cores make OpenMP's barriers crawl.
inline std::string train_cmd(const std::filesystem::path& out_dir, const std::string& args,
                             const std::string& prefix = "") {
  return "export OMP_NUM_THREADS=1; " + prefix + " " + temper_bin() + " " + train_args(out_dir, args);
}

// Every line of OUT_DIR/metrics.jsonl.
inline std::vector<nlohmann::json> metric_lines(const std::filesystem::path& dir) {
  std::vector<nlohmann::json> v;
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line));
  return v;
}

// step -> training loss (a skipped step's NaN loss is written as null: NaN here).
inline std::map<int64_t, double> step_losses(const std::filesystem::path& dir) {
  std::map<int64_t, double> m;
  for (const auto& j : metric_lines(dir)) {
    if (!j.contains("loss")) continue;
    const int64_t step = j["step"].get<int64_t>();
    EXPECT_FALSE(m.count(step)) << dir << ": step " << step << " logged twice";
    m[step] = j["loss"].is_null() ? std::nan("") : j["loss"].get<double>();
  }
  return m;
}

inline std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The losses of `steps` (inclusive range) in `a` and `b` are bit-identical.
inline void expect_same_losses(const std::map<int64_t, double>& a, const std::map<int64_t, double>& b,
                               int64_t first, int64_t last, const std::string& what) {
  for (int64_t s = first; s <= last; ++s) {
    ASSERT_TRUE(a.count(s) && b.count(s)) << what << ": step " << s << " missing";
    EXPECT_EQ(a.at(s), b.at(s)) << what << ": step " << s;
  }
}

}  // namespace temper::test
