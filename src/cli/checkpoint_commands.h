// `temper inspect`, `temper convert` and `temper export` (checkpoint_commands.cpp).
#pragma once
#include <CLI/CLI.hpp>

namespace temper {

// Adds the three subcommands to `app`; each runs from its parse callback, prints a temper
// error as one line and ends the parse with exit status 1 (2 for an internal error).
void add_checkpoint_commands(CLI::App& app);

}  // namespace temper
