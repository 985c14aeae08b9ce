// `temper generate`: text from a model (Hugging Face directory or .gguf file) with a KV
// cache, streamed to stdout. main.cpp registers it with one call and runs it when chosen.
#pragma once
#include "cli/prepare_command.h"  // temper::Subcommand

namespace temper {

Subcommand add_generate_command(CLI::App& app);

}  // namespace temper
