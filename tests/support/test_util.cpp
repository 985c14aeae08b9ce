#include "support/test_util.h"

#include <array>
#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "data/loader.h"

namespace temper::test {

ModelConfig nf4_model_config() {
  ModelConfig c;
  c.vocab_size = 40;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  return c;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<float> to_host(Backend& backend, Tensor t) {
  std::vector<float> out(t.numel());
  if (t.dtype() == DType::F32) {
    backend.copy_to_host(out.data(), t);
  } else if (t.dtype() == DType::BF16) {
    std::vector<uint16_t> raw(t.numel());
    backend.copy_to_host(raw.data(), t);
    for (size_t i = 0; i < raw.size(); ++i) out[i] = bf16_to_f32(raw[i]);
  } else {
    fail("to_host: unsupported dtype {}", dtype_name(t.dtype()));
  }
  return out;
}

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  TEMPER_CHECK(a.size() == b.size(), "sizes {} vs {}", a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double d = double(a[i]) - double(b[i]);
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

std::filesystem::path temp_dir(const std::string& name) {
  // Per process: ctest runs each case of a binary as its own process, in parallel, and
  // cases of one suite share names.
  auto dir = std::filesystem::path(TEMPER_BINARY_DIR) / "test-tmp" / fmt::format("{}-{}", name, getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

CommandResult run_command(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) fail("cannot start: {}", cmd);
  std::array<char, 4096> buf;
  std::string out;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, cmd + "\n" + out};
}

int run_python(const std::string& script, const std::vector<std::string>& args,
               std::string* output) {
  std::string cmd = fmt::format("'{}' '{}/tests/{}'", TEMPER_PYTHON, TEMPER_SOURCE_DIR, script);
  for (auto& a : args) cmd += fmt::format(" '{}'", a);
  CommandResult r = run_command(cmd);
  if (output) *output = std::move(r.output);
  return r.status;
}

void randomize_parameters(ParameterSet& params, Backend& backend, uint64_t seed,
                          float matrix_std, float norm_std, float bias_std) {
  for (auto& p : params.all()) {
    RngStream s = rng_stream(seed, RngPurpose::Test, name_hash(p.name));
    std::vector<float> v(p.shape.numel());
    const bool norm = p.name.ends_with("norm.weight");
    for (size_t i = 0; i < v.size(); ++i) {
      const float n = s.normal(i);
      v[i] = norm ? 1.0f + norm_std * n : (p.is_norm_or_bias ? bias_std : matrix_std) * n;
    }
    backend.copy_from_host(p.value, v.data());
  }
}

MicroBatch packed_batch(int64_t vocab, uint64_t seed) {
  Rng rng(rng_stream(seed, RngPurpose::Test, 7));
  BatchBuilder b(2, 12, 0);
  for (int len : {5, 9, 3, 4, 3}) {
    std::vector<int32_t> tokens(len);
    for (auto& t : tokens) t = int32_t(rng.below(uint64_t(vocab)));
    Document d = causal_document(tokens);
    if (len == 9) d.targets[0] = d.targets[1] = kIgnoreIndex;
    b.add_document(d.tokens, d.targets);
  }
  return b.finish();
}

std::pair<double, double> directional_derivative(Backend& backend, Parameter& p,
                                                 const std::vector<float>& grad, float h,
                                                 uint64_t seed, const std::function<double()>& loss) {
  const std::vector<float> w = to_host(backend, p.value);
  Rng rng(rng_stream(seed, RngPurpose::Test, name_hash(p.name)));
  std::vector<float> u(w.size());
  double analytic = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    u[i] = rng.uniform() < 0.5f ? -1.0f : 1.0f;
    analytic += double(grad[i]) * u[i];
  }
  auto loss_at = [&](float sign) {
    std::vector<float> x(w);
    for (size_t i = 0; i < x.size(); ++i) x[i] += sign * h * u[i];
    backend.copy_from_host(p.value, x.data());
    return loss();
  };
  const double numeric = (loss_at(1) - loss_at(-1)) / (2.0 * h);
  backend.copy_from_host(p.value, w.data());
  return {analytic, numeric};
}

}  // namespace temper::test
