#include "data/prepare.h"

#include <algorithm>
#include <array>
#include <utility>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <glob.h>
#include <numeric>
#include <variant>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "data/dataset_writer.h"
#include "data/jsonl_examples.h"

namespace temper {
namespace fs = std::filesystem;

namespace {

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return is_ascii_space(c); });
}

// The share of documents held out: round(n × fraction), at least one when the fraction is
// positive and there are two or more documents, never all of them.
std::vector<uint8_t> split_documents(size_t n, double fraction, uint64_t seed) {
  std::vector<uint8_t> split(n, 0);
  if (n < 2 || fraction <= 0) return split;
  size_t k = std::clamp<size_t>(size_t(std::llround(double(n) * fraction)), 1, n - 1);
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  Rng rng(rng_stream(seed, RngPurpose::Data, 0x53504c54u));  // "SPLT": not a loader epoch
  for (size_t i = 0; i < k; ++i) std::swap(order[i], order[i + rng.below(n - i)]);
  for (size_t i = 0; i < k; ++i) split[order[i]] = 1;
  return split;
}

// The input names with every glob pattern (*, ?, [) expanded, in sorted order; a name
// that is not a file, or a pattern that matches none, is an error naming it.
std::vector<std::string> expand_inputs(const std::vector<std::string>& names) {
  if (names.empty()) fail("prepare: give one or more JSONL files (or --synthetic)");
  std::vector<std::string> files;
  for (const std::string& name : names) {
    std::error_code ec;
    if (name.find_first_of("*?[") == std::string::npos || fs::exists(name, ec)) {
      if (!fs::is_regular_file(name, ec)) fail("{}: no such file", name);
      files.push_back(name);
      continue;
    }
    glob_t g{};
    const int rc = glob(name.c_str(), 0, nullptr, &g);
    std::vector<std::string> matched;
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i)
      if (fs::is_regular_file(g.gl_pathv[i], ec)) matched.push_back(g.gl_pathv[i]);
    globfree(&g);
    if (matched.empty()) fail("{}: the pattern matches no file", name);
    files.insert(files.end(), matched.begin(), matched.end());  // glob sorts them
  }
  return files;
}

}  // namespace

InputLines::InputLines(std::vector<std::string> files, uint64_t max_line_bytes)
    : files_(std::move(files)), max_line_bytes_(max_line_bytes) {
  for (const std::string& f : files_) bytes_total_ += fs::file_size(f);
}

bool InputLines::next(Line& line) {
  while (true) {
    if (!in_.is_open()) {
      if (file_ >= files_.size()) return false;
      in_.open(files_[file_], std::ios::binary);
      if (!in_) fail("{}: cannot open the input file", files_[file_]);
      line_no_ = 0;
    }
    if (read_line(line)) {
      line.file = file_;
      line.number = ++line_no_;
      ++lines_;
      bytes_read_ += 1;  // the newline
      if (line.number == 1 && line.text.starts_with("\xEF\xBB\xBF")) line.text.erase(0, 3);  // BOM
      return true;
    }
    if (in_.bad() || !in_.eof()) fail("{}: read error after line {}", files_[file_], line_no_);
    in_.close();
    ++file_;
  }
}

// std::getline that stops at max_line_bytes_: a longer line comes back at once, empty,
// with too_long set; its rest is skipped, unstored, only if reading goes on.
bool InputLines::read_line(Line& line) {
  line.text.clear();
  line.too_long = false;
  std::array<char, 1 << 16> buf;
  bool any = false;
  while (true) {
    in_.get(buf.data(), std::streamsize(buf.size()), '\n');
    const size_t got = size_t(in_.gcount());
    any = any || got > 0;
    bytes_read_ += got;
    if (!skipping_ && line.text.size() + got > max_line_bytes_) {
      line.text.clear();
      line.too_long = skipping_ = true;
      return true;
    }
    if (!skipping_) line.text.append(buf.data(), got);
    if (in_.bad()) return false;
    if (in_.eof()) {
      const bool was_skipping = std::exchange(skipping_, false);
      return any && !was_skipping;
    }
    if (in_.fail()) in_.clear();  // nothing extracted: the next character is the newline
    if (in_.peek() == '\n') {
      in_.ignore(1);
      if (std::exchange(skipping_, false)) {  // the end of a too-long line: read the next
        line.text.clear();
        any = false;
        continue;
      }
      return true;
    }
  }
}

std::string InputLines::where(const Line& line) const {
  return fmt::format("{}:{}", files_[line.file], line.number);
}

std::string InputLines::names() const {
  std::string s;
  for (const std::string& f : files_) {
    if (!s.empty()) s += ", ";
    s += f;
  }
  return s;
}

std::vector<size_t> token_end_offsets(const Tokenizer& tok, std::span<const int32_t> ids,
                                      std::string_view text) {
  std::vector<size_t> ends;
  ends.reserve(ids.size());
  size_t pos = 0;
  for (size_t k = 0; k < ids.size(); ++k) {
    const std::string piece = tok.decode_bytes(ids.subspan(k, 1));
    std::string_view p = piece;
    if (text.compare(pos, p.size(), p) != 0) {
      size_t at = pos;
      // A leading space the text does not have (SentencePiece's dummy prefix).
      while (!p.empty() && p[0] == ' ' && (at >= text.size() || text[at] != ' ')) p.remove_prefix(1);
      // Spaces the token swallowed (an added token's lstrip / rstrip).
      while (at < text.size() && is_ascii_space(text[at]) && text.compare(at, p.size(), p) != 0) ++at;
      if (text.compare(at, p.size(), p) != 0)
        fail("cannot line token {} (id {}, '{}') up with the text at byte {}: the tokenizer does "
             "not reproduce its input",
             k, ids[k], piece, pos);
      pos = at;
    }
    pos += p.size();
    ends.push_back(pos);
  }
  return ends;
}

DocumentTokenizer::DocumentTokenizer(ModelTokenizer tokenizer, std::optional<ChatTemplate> chat)
    : mt_(std::move(tokenizer)), chat_(std::move(chat)) {}

DocumentTokenizer::Doc DocumentTokenizer::text(std::string_view text) const {
  if (!mt_.eos_id) fail("the tokenizer has no EOS token, which text documents end with");
  Doc d;
  if (mt_.add_bos && mt_.bos_id) d.tokens.push_back(uint32_t(*mt_.bos_id));
  for (int32_t id : mt_.tokenizer.encode(text)) d.tokens.push_back(uint32_t(id));
  d.tokens.push_back(uint32_t(*mt_.eos_id));
  d.mask.assign(d.tokens.size(), 1);
  d.mask[0] = 0;  // the first token is never a target
  return d;
}

DocumentTokenizer::Doc DocumentTokenizer::conversation(std::span<const ChatMessage> messages) const {
  TEMPER_CHECK(chat_.has_value(), "conversation without a chat template");
  const std::vector<ChatSpan> spans = render_chat_spans(*chat_, messages, false);
  std::string text;
  std::vector<std::pair<size_t, size_t>> trained;  // [begin, end) byte ranges
  for (const ChatSpan& s : spans) {
    if (s.trainable) trained.push_back({text.size(), text.size() + s.text.size()});
    text += s.text;
  }
  const std::vector<int32_t> ids = mt_.tokenizer.encode(text);
  const std::vector<size_t> ends = token_end_offsets(mt_.tokenizer, ids, text);
  Doc d;
  d.tokens.assign(ids.begin(), ids.end());
  d.mask.assign(ids.size(), 0);
  size_t r = 0, begin = 0;
  for (size_t k = 0; k < ids.size(); begin = ends[k], ++k) {
    // Token k covers [begin, ends[k]); trained if that overlaps a trained range.
    while (r < trained.size() && trained[r].second <= begin) ++r;
    if (r < trained.size() && trained[r].first < std::max(ends[k], begin + 1)) d.mask[k] = 1;
  }
  d.mask[0] = 0;
  return d;
}

PrepareStats prepare_jsonl(const PrepareOptions& o,
                           const std::function<void(const PrepareStats&)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  if (o.val_fraction < 0 || o.val_fraction >= 1)
    fail("--val-fraction must be in [0, 1), got {}", o.val_fraction);
  if (o.max_tokens < 0) fail("--max-tokens must be positive, got {}", o.max_tokens);
  if (o.model.empty()) fail("prepare: --model (a Hugging Face model directory or .gguf) is required");
  if (o.max_line_bytes <= 0) fail("--max-line-bytes must be positive, got {}", o.max_line_bytes);
  InputLines in(expand_inputs(o.inputs), uint64_t(o.max_line_bytes));
  PrepareStats st;
  st.bytes_total = in.bytes_total();
  ModelTokenizer mt = load_model_tokenizer(o.model);
  // Lines are read in blocks, parsed and tokenized in parallel, then written in order.
  constexpr size_t kBlock = 2048;
  std::optional<JsonlFormat> format;
  if (o.format != "auto") format = jsonl_format_from_name(o.format);
  std::optional<DocumentTokenizer> tokenizer;
  TokenDatasetWriter out(o.out, o.shard_tokens);
  auto bad_line = [&](const std::string& where, const std::string& why) {
    const std::string msg = fmt::format("{}: {}", where, why);
    if (!o.skip_bad) fail("{} (--skip-bad skips such lines)", msg);
    if (st.bad_lines++ == 0) st.first_bad = msg;
  };
  // The format (auto: from the first line that has a known key) and the template decide
  // how every line is read.
  auto start_reading = [&](const std::string& first, const std::string& where) {
    if (!format) {
      try {
        format = guess_jsonl_format(first);
      } catch (const Error& e) {
        ++st.lines;
        bad_line(where, e.what());
        return;
      }
    }
    if (*format == JsonlFormat::Text && !mt.eos_id)
      fail("{}: the tokenizer has no EOS token, which text documents end with", o.model);
    std::optional<ChatTemplate> chat;
    if (*format != JsonlFormat::Text) {
      chat = o.chat_template.empty()
                 ? detect_chat_template(mt.chat_template, o.model + " (its chat template)")
                 : chat_template_by_name(o.chat_template);
      st.chat_template = chat->name;
    }
    st.format = jsonl_format_name(*format);
    tokenizer.emplace(mt, chat);
  };
  InputLines::Line line;
  bool eof = false;
  while (!eof) {
    std::vector<InputLines::Line> block;
    while (block.size() < kBlock) {
      if (!in.next(line)) {
        eof = true;
        break;
      }
      if (line.too_long) {
        ++st.lines;
        bad_line(in.where(line), fmt::format("a line longer than {} bytes (--max-line-bytes raises the "
                                             "limit)", o.max_line_bytes));
        continue;
      }
      if (blank(line.text)) continue;
      if (!tokenizer) start_reading(line.text, in.where(line));
      if (tokenizer) block.push_back(std::move(line));
    }
    st.bytes_read = in.bytes_read();
    // Parse and tokenize; a failure is kept as its message, reported in line order.
    std::vector<std::variant<DocumentTokenizer::Doc, std::string>> done(block.size());
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = 0; i < block.size(); ++i) {
      try {
        Example e = parse_example(block[i].text, *format);
        done[i] = *format == JsonlFormat::Text ? tokenizer->text(e.text)
                                               : tokenizer->conversation(e.messages);
      } catch (const std::exception& e) {
        done[i] = std::string(e.what());
      }
    }
    for (size_t i = 0; i < block.size(); ++i) {
      ++st.lines;
      if (auto* why = std::get_if<std::string>(&done[i])) {
        bad_line(in.where(block[i]), *why);
        continue;
      }
      auto& d = std::get<DocumentTokenizer::Doc>(done[i]);
      if (o.max_tokens > 0 && int64_t(d.tokens.size()) > o.max_tokens) {
        // Cut, a conversation would lose the end of a reply or the reply itself.
        if (*format != JsonlFormat::Text) {
          ++st.dropped_long;
          continue;
        }
        d.tokens.resize(size_t(o.max_tokens));
        d.mask.resize(size_t(o.max_tokens));
        ++st.truncated;
      }
      const int64_t n = int64_t(d.tokens.size());
      st.longest = std::max(st.longest, n);
      for (size_t m = 0; m < std::size(PrepareStats::kLengthMarks); ++m)
        st.longer_than[m] += n > PrepareStats::kLengthMarks[m];
      st.tokens += n;
      st.trained_tokens += std::count(d.mask.begin(), d.mask.end(), 1);
      out.add(d.tokens, d.mask);
    }
    st.documents = int64_t(out.documents());
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (progress) progress(st);
  }
  if (out.documents() == 0)
    fail("{}: no documents ({} lines, {} bad, {} conversations longer than --max-tokens {})",
         in.names(), in.lines(), st.bad_lines, st.dropped_long, o.max_tokens);
  const std::vector<uint8_t> split = split_documents(out.documents(), o.val_fraction, o.seed);
  st.validation_documents = std::count(split.begin(), split.end(), 1);
  const DatasetInfo info{mt.tokenizer.vocab_size(), mt.eos_id ? *mt.eos_id : -1,
                         mt.tokenizer.fingerprint(), st.format, st.chat_template, TEMPER_VERSION};
  st.files = out.finish(split, info);
  st.inputs = in.files();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return st;
}

}  // namespace temper
