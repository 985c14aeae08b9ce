#include "core/log.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace temper::log {
namespace {

Level level_from_env() {
  const char* s = std::getenv("TEMPER_LOG");
  if (!s) return Level::info;
  std::string v(s);
  if (v == "debug") return Level::debug;
  if (v == "warn") return Level::warn;
  if (v == "error") return Level::error;
  return Level::info;
}

Level g_level = level_from_env();
int g_rank = -1;
std::mutex g_mutex;

}  // namespace

void set_level(Level l) { g_level = l; }
Level level() { return g_level; }
void set_rank(int rank) { g_rank = rank; }

void write(Level l, std::string_view message) {
  static const char* names[] = {"debug", "info", "warn", "error"};
  std::lock_guard<std::mutex> lock(g_mutex);
  FILE* out = l >= Level::warn ? stderr : stdout;
  if (g_rank >= 0)
    fmt::print(out, "[rank {}] {}: {}\n", g_rank, names[static_cast<int>(l)], message);
  else if (l == Level::info)
    fmt::print(out, "{}\n", message);
  else
    fmt::print(out, "{}: {}\n", names[static_cast<int>(l)], message);
  std::fflush(out);
}

}  // namespace temper::log
