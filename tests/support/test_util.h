// Shared test helpers: host copies of tensors, error measures, temp dirs, Python runner.
#pragma once
#include <functional>
#include <filesystem>
#include <string>
#include <vector>

#include "data/batch.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/parameters.h"

namespace temper::test {

// A two-block model whose projections NF4 can store (input widths multiples of 64):
// vocab 40, hidden 64, FFN 128, 4 heads over 2 kv heads, 32 positions.
ModelConfig nf4_model_config();

// The message of the temper::Error that fn throws ("" when it throws none).
std::string error_of(const std::function<void()>& fn);

std::vector<float> to_host(Backend& backend, Tensor t);  // any float dtype -> f32
// ||a - b||_2 / max(||b||_2, 1e-30): the norm-wise relative error used for fp32 bounds.
double rel_error(const std::vector<float>& a, const std::vector<float>& b);
// A fresh empty directory under the build tree for this test and this process.
std::filesystem::path temp_dir(const std::string& name);
// Runs a shell command; status is its exit code (128 when it did not exit normally) and
// output the command line followed by its stdout and stderr.
struct CommandResult {
  int status;
  std::string output;
};
CommandResult run_command(const std::string& command);
// Runs TEMPER_PYTHON on tests/<script> with args; returns exit code, fills `output`
// with stdout+stderr.
int run_python(const std::string& script, const std::vector<std::string>& args,
               std::string* output);

// Random parameter values with enough spread that every path of the model matters:
// norm weights 1 + N(0, norm_std), biases N(0, bias_std), the rest N(0, matrix_std),
// each tensor from its own Philox stream keyed by (seed, name).
void randomize_parameters(ParameterSet& params, Backend& backend, uint64_t seed,
                          float matrix_std, float norm_std, float bias_std);

// Two rows of 12 tokens with five documents of uneven length (5, 9, 3, 4, 3), one split
// across rows, random tokens below `vocab`, and the 9-token document's first two targets
// masked (as an instruction prompt would be).
MicroBatch packed_batch(int64_t vocab, uint64_t seed);

// A directional finite difference for one parameter: u is a random ±1 direction over its
// elements (from a Philox stream keyed by `seed` and the name); returns (<grad, u>,
// (loss(θ + h·u) − loss(θ − h·u)) / 2h), the parameter restored. `grad` is its gradient.
std::pair<double, double> directional_derivative(Backend& backend, Parameter& p,
                                                 const std::vector<float>& grad, float h,
                                                 uint64_t seed, const std::function<double()>& loss);

}  // namespace temper::test
