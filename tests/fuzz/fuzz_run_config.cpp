// The YAML run config with command-line overrides (train/run_config.h). Input: the YAML
// text, then '\0' and overrides ("key.sub=value") one per line. A config that loads must
// survive its own round trip: to_yaml() loads again to the same YAML.
#include <cstdio>
#include <cstdlib>

#include "fuzz_input.h"
#include "train/run_config.h"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto parts = fuzz::split_once(in, '\0');
  const std::string yaml(parts.first);
  std::vector<std::string> overrides;
  if (!parts.second.empty()) overrides = fuzz::split_all(parts.second, '\n');
  RunConfig config;
  // Errors name the file, or the override they are about.
  if (!fuzz::parses(std::vector<std::string>{"fuzz.yaml", "command-line override", "on the command line"},
                    [&] { config = run_config_from_yaml_text(yaml, "fuzz.yaml", overrides); }))
    return 0;
  const std::string once = to_yaml(config);
  std::string twice;
  if (!fuzz::parses("round-trip.yaml",
                    [&] { twice = to_yaml(run_config_from_yaml_text(once, "round-trip.yaml")); }) ||
      once != twice) {
    std::fprintf(stderr, "FINDING: to_yaml output does not load back the same:\n%s\n---\n%s\n",
                 once.c_str(), twice.c_str());
    std::abort();
  }
  return 0;
}
