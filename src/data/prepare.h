// `temper prepare`: JSON Lines -> HDF5 token dataset (data/dataset.h).
//
// text examples: [BOS when the tokenizer adds one] + tokens + EOS, every token trained.
// alpaca / chat / sharegpt examples: the conversation rendered through the chat template
// (render_chat, no generation prompt) and encoded as one string, so the ids equal the
// tokenizer's encoding of the rendered text; only the assistant turns' tokens and their
// end-of-turn markers are trained (a token is trained when any of its bytes lies in an
// assistant span). Documents are assigned to train/validation by a seeded shuffle.
#pragma once
#include <cstdint>
#include <fstream>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/limits.h"
#include "data/chat_template.h"
#include "data/model_tokenizer.h"

namespace temper {

struct PrepareOptions {
  std::vector<std::string> inputs;  // .jsonl files or glob patterns, read in this order
  std::string model;            // Hugging Face model directory or .gguf: tokenizer + template
  std::string format = "auto";  // text | alpaca | chat | sharegpt | auto (from the first line)
  std::string out;              // .h5 file (with shard_tokens: the index of the shards)
  int64_t shard_tokens = 0;     // > 0: shards of about this many tokens (data/dataset_writer.h)
  std::string chat_template;    // a template name; empty = detect from the model's template
  double val_fraction = 0.05;   // share of documents held out for validation
  uint64_t seed = 0;            // of the train/validation split
  bool skip_bad = false;        // skip and count bad lines instead of stopping at the first
  int64_t max_line_bytes = limits::kDefaultMaxJsonlLineBytes;  // longer lines are bad lines, never read whole
  int64_t max_tokens = 0;       // > 0: longer text documents are cut to this many tokens;
                                // longer conversations are left out (never cut mid-turn)
};

struct PrepareStats {
  std::string format, chat_template;
  int64_t lines = 0, documents = 0, validation_documents = 0;
  int64_t tokens = 0, trained_tokens = 0, bad_lines = 0, truncated = 0;
  int64_t dropped_long = 0;  // conversations longer than max_tokens, left out
  int64_t longest = 0;       // tokens of the longest document kept
  // Documents kept that are longer than 256, 512, ... tokens (kLengthMarks).
  static constexpr int64_t kLengthMarks[] = {256, 512, 1024, 2048, 4096};
  int64_t longer_than[5] = {0, 0, 0, 0, 0};
  uint64_t bytes_read = 0, bytes_total = 0;
  double seconds = 0;
  std::string first_bad;  // file:line: reason of the first skipped line
  std::vector<std::string> inputs;  // the files read (patterns expanded)
  std::vector<std::string> files;   // the files written: the shards, then the index
};

// Reads options.inputs, writes options.out, streaming: memory holds the tokenizer, one
// block of lines and, at the end, five bytes per document (the validation split and the
// shuffle that picks it), whatever the input's size. Errors name
// file:line and the reason. `progress` (optional) is called from the calling thread after
// each block of lines.
PrepareStats prepare_jsonl(const PrepareOptions& options,
                           const std::function<void(const PrepareStats&)>& progress = {});

// The lines of several files in order, each with the file and line number it came from
// (a UTF-8 byte-order mark opening a file is dropped).
class InputLines {
 public:
  // A line longer than max_line_bytes is not kept: it comes back with too_long set.
  InputLines(std::vector<std::string> files, uint64_t max_line_bytes);
  struct Line {
    std::string text;
    size_t file = 0;      // index into files()
    int64_t number = 0;   // 1-based, within its file
    bool too_long = false;  // longer than max_line_bytes: text is empty
  };
  bool next(Line& line);  // false after the last line of the last file
  std::string where(const Line& line) const;  // "file:line"
  std::string names() const;                  // the files, comma-separated
  const std::vector<std::string>& files() const { return files_; }
  uint64_t bytes_total() const { return bytes_total_; }
  uint64_t bytes_read() const { return bytes_read_; }
  int64_t lines() const { return lines_; }

 private:
  bool read_line(Line& line);
  std::vector<std::string> files_;
  uint64_t max_line_bytes_;
  bool skipping_ = false;  // inside a too-long line
  std::ifstream in_;
  size_t file_ = 0;
  int64_t line_no_ = 0, lines_ = 0;
  uint64_t bytes_total_ = 0, bytes_read_ = 0;
};

// Turns examples into (tokens, loss mask) documents for one tokenizer.
class DocumentTokenizer {
 public:
  // `chat` is needed for conversations only.
  DocumentTokenizer(ModelTokenizer tokenizer, std::optional<ChatTemplate> chat);
  struct Doc {
    std::vector<uint32_t> tokens;
    std::vector<uint8_t> mask;  // 1 = trained (a target of the previous position)
  };
  Doc text(std::string_view text) const;
  Doc conversation(std::span<const ChatMessage> messages) const;
  const ModelTokenizer& model_tokenizer() const { return mt_; }

 private:
  ModelTokenizer mt_;
  std::optional<ChatTemplate> chat_;
};

// Byte offset in `text` where each token of `ids` (the encoding of `text`) ends. Tolerates
// whitespace that the tokens and the text disagree on (SentencePiece's dummy prefix, added
// tokens that strip spaces); otherwise a mismatch is a temper::Error.
std::vector<size_t> token_end_offsets(const Tokenizer& tokenizer, std::span<const int32_t> ids,
                                      std::string_view text);

}  // namespace temper
