// `temper prepare`: JSONL -> HDF5 token dataset (data/prepare.h), or the generated corpus
// with --synthetic. main.cpp registers it with one call and runs it when chosen.
#pragma once
#include <functional>

namespace CLI {
class App;
}

namespace temper {

struct Subcommand {
  CLI::App* app = nullptr;    // parsed() says whether it was chosen
  std::function<void()> run;  // throws temper::Error on bad input
};

Subcommand add_prepare_command(CLI::App& app);

}  // namespace temper
