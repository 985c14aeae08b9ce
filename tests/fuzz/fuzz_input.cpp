#include "fuzz_input.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace temper::fuzz {

MemoryFile::MemoryFile(const uint8_t* data, size_t size) {
  fd_ = memfd_create("fuzz-input", MFD_CLOEXEC);
  if (fd_ < 0) {
    std::perror("memfd_create");
    std::abort();
  }
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd_, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;  // libFuzzer's -timeout alarm
    if (n <= 0) {
      std::perror("write to memfd");
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
  path_ = "/proc/self/fd/" + std::to_string(fd_);
}

MemoryFile::~MemoryFile() { ::close(fd_); }

namespace {
std::string make_scratch_dir() {
  std::string templ = "/dev/shm/temper-fuzz-XXXXXX";
  if (!mkdtemp(templ.data())) {
    std::perror("mkdtemp");
    std::abort();
  }
  static std::string removed_at_exit = templ;
  std::atexit([] { std::filesystem::remove_all(removed_at_exit); });
  return templ;
}
}  // namespace

const std::string& scratch_dir() {
  static const std::string dir = make_scratch_dir();
  return dir;
}

std::string write_scratch_file(const std::string& name, std::string_view bytes) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

void copy_file(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
  if (!in || !out) {
    std::fprintf(stderr, "cannot copy %s to %s\n", from.c_str(), to.c_str());
    std::abort();
  }
}

std::pair<std::string_view, std::string_view> split_once(std::string_view in, char separator) {
  const size_t at = in.find(separator);
  if (at == std::string_view::npos) return {in, {}};
  return {in.substr(0, at), in.substr(at + 1)};
}

std::vector<std::string> split_all(std::string_view in, char separator) {
  std::vector<std::string> parts;
  while (true) {
    const size_t at = in.find(separator);
    parts.emplace_back(in.substr(0, at));
    if (at == std::string_view::npos) return parts;
    in.remove_prefix(at + 1);
  }
}

void error_without_source(const std::string& what, const std::vector<std::string>& sources) {
  std::string names;
  for (const std::string& s : sources) names += (names.empty() ? "'" : " or '") + s + "'";
  std::string shown;  // control bytes escaped: the message may quote the input
  for (const unsigned char ch : what) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "\\x%02x", ch);
    shown += (ch < 0x20 && ch != '\n') || ch == 0x7f ? std::string(hex) : std::string(1, char(ch));
  }
  std::fprintf(stderr, "FINDING: a temper::Error that does not name its source (%s):\n  %s\n",
               names.c_str(), shown.c_str());
  std::abort();
}

}  // namespace temper::fuzz
