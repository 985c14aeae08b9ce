// `temper eval` (loss and perplexity of a model on a token dataset's split) and `temper
// report` (a run directory's HTML report). main.cpp registers each with one call.
#pragma once
#include "cli/prepare_command.h"  // temper::Subcommand

namespace temper {

Subcommand add_eval_command(CLI::App& app);
Subcommand add_report_command(CLI::App& app);

}  // namespace temper
