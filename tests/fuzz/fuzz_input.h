// Shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp). A target hands its input to one
// parser and accepts exactly two outcomes: the input parses, or the parser throws a
// temper::Error whose message names the file (or source) it was given. Anything else is a
// finding that libFuzzer reports with the input: a crash or sanitizer report, an exception
// of another type escaping (std::terminate), an error that does not say which file, a
// single allocation over -malloc_limit_mb, or a run over -timeout seconds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace temper::fuzz {

// The input as a file for readers that take a path: an anonymous memory file (memfd), so
// no disk is touched and nothing is left behind; path() is /proc/self/fd/N.
class MemoryFile {
 public:
  MemoryFile(const uint8_t* data, size_t size);
  explicit MemoryFile(std::string_view bytes)
      : MemoryFile(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()) {}
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// A directory of this process (under /dev/shm, removed at exit) for readers of directories.
const std::string& scratch_dir();
// Replaces scratch_dir()/name with `bytes`.
std::string write_scratch_file(const std::string& name, std::string_view bytes);
// Copies `from` over `to`. Unlike std::filesystem::copy_file (sendfile), which fails when
// libFuzzer's -timeout alarm (SIGALRM) interrupts it, the stream copy retries.
void copy_file(const std::string& from, const std::string& to);

// Splits the input at the first `separator`: {before, after}; no separator: {all, ""}.
std::pair<std::string_view, std::string_view> split_once(std::string_view in, char separator);
std::vector<std::string> split_all(std::string_view in, char separator);

// Runs fn(). A temper::Error must name `source`, or one of `sources` (else abort with the
// message); any other exception aborts. Returns whether fn() completed.
template <typename Fn>
bool parses(const std::vector<std::string>& sources, Fn&& fn);
template <typename Fn>
bool parses(const std::string& source, Fn&& fn) {
  return parses(std::vector<std::string>{source}, std::forward<Fn>(fn));
}

// Implementation detail of parses(): aborts, printing what the error should have named.
[[noreturn]] void error_without_source(const std::string& what, const std::vector<std::string>& sources);

}  // namespace temper::fuzz

#include "core/error.h"

template <typename Fn>
bool temper::fuzz::parses(const std::vector<std::string>& sources, Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const temper::Error& e) {
    for (const std::string& source : sources)
      if (std::string_view(e.what()).find(source) != std::string_view::npos) return false;
    error_without_source(e.what(), sources);
  }
}
