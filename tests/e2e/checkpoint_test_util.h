// Helpers of the checkpoint / resume tests (tests/e2e/test_checkpoint_train*.cpp and
// tests/parallel/test_resume*.cpp, test_preempt.cpp): `temper train` command lines on the
// tiny recipe, and what a run left behind (metrics, files, checkpoints).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
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

// step -> value of `key` in OUT_DIR/metrics.jsonl's step lines ("grad_norm", "loss", ...).
inline std::map<int64_t, double> step_values(const std::filesystem::path& dir, const std::string& key) {
  std::map<int64_t, double> m;
  for (const auto& j : metric_lines(dir))
    if (j.contains(key) && j.contains("step"))
      m[j["step"].get<int64_t>()] = j[key].is_null()      ? std::nan("")
                                    : j[key].is_boolean() ? double(j[key].get<bool>())
                                                          : j[key].get<double>();
  return m;
}

// Gradient norms of the same steps under two parallel layouts (tp/dp/ZeRO/accumulation,
// resharded resumes, two nodes): fp32 reduction order alone changes them, by at most 6.9e-8
// relative over the 17 layouts × 5 steps of test_data_parallel_invariance.cpp (each layout
// prints its largest difference; the runs are deterministic, one thread per rank). The
// bound is 3× that noise; a wrong gradient scale moves the norm by a factor (0.5 for a
// missing 1/dp at dp = 2). Losses and parameters cannot show a wrong uniform scale: clipping
// and AdamW are scale-invariant.
constexpr double kLayoutGradNormBound = 2e-7;

// The gradient norms of steps [first, last] in `a` and `b` agree within `bound` relative, at
// every step (a NaN or a missing step fails). Returns the largest relative difference.
inline double expect_grad_norms_close(const std::filesystem::path& a, const std::filesystem::path& b,
                                      int64_t first, int64_t last, double bound,
                                      const std::string& what) {
  const auto ga = step_values(a, "grad_norm"), gb = step_values(b, "grad_norm");
  double worst = 0;
  for (int64_t s = first; s <= last; ++s) {
    if (!ga.count(s) || !gb.count(s)) {
      ADD_FAILURE() << what << ": grad_norm of step " << s << " missing";
      return INFINITY;
    }
    if (std::isnan(ga.at(s)) && std::isnan(gb.at(s))) continue;  // both skipped (non-finite)
    const double rel = std::fabs(ga.at(s) - gb.at(s)) / std::max(std::fabs(gb.at(s)), 1e-30);
    EXPECT_LE(rel, bound) << what << ": grad_norm at step " << s << ": " << ga.at(s) << " vs "
                          << gb.at(s);
    worst = std::max(worst, std::isnan(rel) ? INFINITY : rel);
  }
  return worst;
}

// The training losses of OUT_DIR/metrics.jsonl in step order.
inline std::vector<float> loss_list(const std::filesystem::path& dir) {
  std::vector<float> v;
  for (const auto& [step, loss] : step_losses(dir)) v.push_back(float(loss));
  return v;
}

// A run in another parallel layout against the one-process reference `ref`: its losses and
// final parameters within `bound` relative, its gradient norms at each of steps 1..steps
// within `grad_norm_bound` (the largest difference is printed).
inline void expect_same_training(const std::filesystem::path& dir, const std::filesystem::path& ref,
                                 int64_t steps, double bound, double grad_norm_bound,
                                 const std::string& tag) {
  ASSERT_EQ(loss_list(ref).size(), size_t(steps)) << tag << ": the reference run";
  EXPECT_LE(rel_error(loss_list(dir), loss_list(ref)), bound) << tag << " losses";
  const double worst = expect_grad_norms_close(dir, ref, 1, steps, grad_norm_bound, tag);
  std::printf("[ %s ] grad_norm: largest relative difference over %lld steps %.2e (bound %.0e)\n",
              tag.c_str(), (long long)steps, worst, grad_norm_bound);
  SafetensorsFile ref_model = read_safetensors((ref / "final" / "model.safetensors").string());
  SafetensorsFile model = read_safetensors((dir / "final" / "model.safetensors").string());
  ASSERT_EQ(model.tensors.size(), ref_model.tensors.size()) << tag;
  for (const auto& [name, t] : ref_model.tensors)
    EXPECT_LE(rel_error(model.at(name).to_f32(), t.to_f32()), bound) << tag << " " << name;
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
    if (!(std::isnan(a.at(s)) && std::isnan(b.at(s))))  // a skipped step's loss is NaN in both
      EXPECT_EQ(a.at(s), b.at(s)) << what << ": step " << s;
  }
}

}  // namespace temper::test
