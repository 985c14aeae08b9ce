#include "cli/prepare_command.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <memory>

#include "core/error.h"
#include "core/log.h"
#include "data/dataset.h"
#include "data/prepare.h"
#include "data/synthetic.h"

namespace temper {
namespace {

struct PrepareArgs {
  PrepareOptions jsonl;
  bool synthetic = false;
  SyntheticTextOptions synthetic_options;
  int64_t min_tokens = -1, docs = -1;
  std::string shard_size;
};

// One line redrawn in place while reading (terminals only).
void draw_progress(const PrepareStats& s) {
  const double mb = 1.0 / (1 << 20);
  const double share = s.bytes_total ? double(s.bytes_read) / double(s.bytes_total) : 1.0;
  fmt::print("\rprepare: {:3.0f}% {:.1f}/{:.1f} MB | {} documents | {} tokens | {:.0f} tokens/s   ",
             100 * std::min(share, 1.0), double(s.bytes_read) * mb, double(s.bytes_total) * mb,
             s.documents, s.tokens, s.seconds > 0 ? double(s.tokens) / s.seconds : 0.0);
  std::fflush(stdout);
}

// "50M" = 50 000 000: a count with an optional K, M or G (powers of 1000).
int64_t parse_count(const std::string& text, const char* what) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    fail("{} '{}': expected a number such as 50000000 or 50M", what, text);
  }
  const std::string suffix = text.substr(used);
  const double scale = suffix.empty() ? 1 : suffix == "K" || suffix == "k" ? 1e3
                       : suffix == "M" ? 1e6 : suffix == "G" ? 1e9 : -1;
  if (scale < 0 || v <= 0) fail("{} '{}': expected a positive number such as 50000000 or 50M", what, text);
  return int64_t(v * scale);
}

void print_shards(const std::vector<std::string>& files, int64_t shard_tokens, const std::string& index) {
  if (shard_tokens <= 0) return;
  fmt::print("  {} shards of up to {} tokens: {} ... {}; {} is their index (give it as data.path)\n",
             files.size() - 1, shard_tokens, files.front(), files[files.size() - 2], index);
}

void run_jsonl(PrepareOptions o, const std::string& shard_size) {
  if (!shard_size.empty()) o.shard_tokens = parse_count(shard_size, "--shard-size");
  const bool bar = isatty(fileno(stdout));
  PrepareStats s = prepare_jsonl(o, bar ? draw_progress : std::function<void(const PrepareStats&)>());
  if (bar) fmt::print("\n");
  const std::string from = s.inputs.size() == 1 ? s.inputs[0] : fmt::format("{} files", s.inputs.size());
  fmt::print("{}: {} documents ({} validation) from {} lines of {} ({} format{}), {} tokens "
             "({} trained)\n",
             o.out, s.documents, s.validation_documents, s.lines, from, s.format,
             s.chat_template.empty() ? "" : ", chat template " + s.chat_template, s.tokens,
             s.trained_tokens);
  print_shards(s.files, o.shard_tokens, o.out);
  if (s.truncated) fmt::print("  {} documents cut to --max-tokens {}\n", s.truncated, o.max_tokens);
  if (s.dropped_long)
    fmt::print("  {} conversations longer than --max-tokens {} left out (a conversation is never "
               "cut mid-turn)\n", s.dropped_long, o.max_tokens);
  std::string marks;
  for (size_t m = 0; m < std::size(PrepareStats::kLengthMarks); ++m)
    marks += fmt::format("{}{} > {}", m ? ", " : "", s.longer_than[m], PrepareStats::kLengthMarks[m]);
  fmt::print("  longest document {} tokens; documents longer than a length: {}{}\n", s.longest,
             marks, s.format == "text" ? "" : " (train leaves conversations longer than "
                                              "train.seq_len out, and says how many)");
  if (s.bad_lines)
    fmt::print("  {} bad lines skipped; the first: {}\n", s.bad_lines, s.first_bad);
  fmt::print("  throughput: {:.0f} tokens/s, {:.1f} MB/s ({:.2f} s)\n",
             s.seconds > 0 ? double(s.tokens) / s.seconds : 0.0,
             s.seconds > 0 ? double(s.bytes_read) / s.seconds / (1 << 20) : 0.0, s.seconds);
}

void run_synthetic(const PrepareArgs& a, bool seed_given) {
  SyntheticTextOptions opt = a.synthetic_options;
  if (seed_given) opt.seed = a.jsonl.seed;
  opt.val_fraction = a.jsonl.val_fraction;
  if (a.docs >= 0) opt.num_docs = a.docs;
  if (a.min_tokens >= 0) opt.min_doc_tokens = a.min_tokens;
  if (a.jsonl.max_tokens > 0) opt.max_doc_tokens = a.jsonl.max_tokens;
  const TokenDataset d = synthetic_token_dataset(opt);
  const int64_t shard_tokens = a.shard_size.empty() ? 0 : parse_count(a.shard_size, "--shard-size");
  const std::vector<std::string> files = write_token_dataset(a.jsonl.out, d, shard_tokens);
  fmt::print("{}: {} documents ({} validation), {} tokens\n", a.jsonl.out, d.documents(),
             std::count(d.split.begin(), d.split.end(), 1), d.tokens.size());
  print_shards(files, shard_tokens, a.jsonl.out);
}

}  // namespace

Subcommand add_prepare_command(CLI::App& app) {
  auto args = std::make_shared<PrepareArgs>();
  PrepareOptions& o = args->jsonl;
  auto* cmd = app.add_subcommand(
      "prepare", "Tokenize a JSONL file (text, alpaca, chat or sharegpt) into an HDF5 dataset");
  cmd->add_option("inputs", o.inputs,
                  "JSON Lines files, one example a line, or glob patterns ('data/*.jsonl'); read in order");
  cmd->add_option("--model,--tokenizer", o.model,
                  "Hugging Face model directory or .gguf whose tokenizer and chat template to use");
  cmd->add_option("--format", o.format, "text | alpaca | chat | sharegpt | auto (from the keys)")
      ->capture_default_str();
  cmd->add_option("--out", o.out, "output .h5 file (with --shard-size: the index of the shards)")
      ->required();
  cmd->add_option("--shard-size", args->shard_size,
                  "write shards of about this many tokens (50M = 50 million; a document is never "
                  "split) beside --out, which becomes their index");
  cmd->add_option("--val-fraction", o.val_fraction, "share of documents held out for validation")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "seed of the train/validation split")->capture_default_str();
  cmd->add_flag("--skip-bad", o.skip_bad, "skip and count bad lines instead of stopping");
  cmd->add_option("--max-line-bytes", o.max_line_bytes,
                  "a longer line is a bad line, refused before it is read whole")
      ->capture_default_str();
  cmd->add_option("--max-tokens", o.max_tokens,
                  "cut longer text documents to this many tokens, leave longer conversations out "
                  "(--synthetic: longest document)");
  cmd->add_option("--chat-template", o.chat_template,
                  "template name instead of detecting it: chatml, smollm2, qwen2, qwen2.5, llama3, "
                  "llama3.1, llama2, mistral, mistral-nemo, mistral-v1, gemma, gemma3");
  cmd->add_flag("--synthetic", args->synthetic,
                "write the generated English corpus data.source=synthetic trains on");
  cmd->add_option("--docs", args->docs, "--synthetic: documents");
  cmd->add_option("--min-tokens", args->min_tokens, "--synthetic: shortest document");

  auto run = [args, cmd] {
    if (args->synthetic) return run_synthetic(*args, cmd->count("--seed") > 0);
    if (args->jsonl.inputs.empty())
      throw Error("prepare: give a JSONL file (or --synthetic)");
    run_jsonl(args->jsonl, args->shard_size);
  };
  return {cmd, run};
}

}  // namespace temper
