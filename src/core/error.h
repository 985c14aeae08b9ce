// Errors with context. Every user-facing failure is a temper::Error whose message
// names the file, line, tensor, key or rank involved and says what was expected.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace temper {

class Error : public std::runtime_error {
 public:
  // A NUL byte in the message (quoted from a file or an argument) is written as \0, so
  // what() shows the whole message rather than stopping there.
  explicit Error(const std::string& what) : std::runtime_error(without_nul(what)) {}

 private:
  static std::string without_nul(const std::string& s) {
    if (s.find('\0') == std::string::npos) return s;
    std::string out;
    for (const char c : s) out += c ? std::string(1, c) : std::string("\\0");
    return out;
  }
};

// Throws temper::Error with a formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// Runs fn(); if it throws temper::Error, rethrows with `context: ` prepended, so an
// error deep in a loader still says which file or tensor it was about.
template <typename Fn>
decltype(auto) with_context(const std::string& context, Fn&& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace temper

// Internal invariant (a bug if it fails): names the source location and the condition.
#define TEMPER_CHECK(cond, ...)                                                        \
  do {                                                                                 \
    if (!(cond))                                                                       \
      throw ::temper::Error(::fmt::format("{}:{}: check failed: {}: {}", __FILE__,     \
                                          __LINE__, #cond, ::fmt::format(__VA_ARGS__))); \
  } while (0)
