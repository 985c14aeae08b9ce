#include "train/checkpointing.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string_view>

#include "core/error.h"
#include "core/log.h"
#include "parallel/communicator.h"

namespace fs = std::filesystem;

namespace temper {

namespace {

constexpr const char* kPrefix = "step-";
constexpr const char* kSuffix = ".h5";

// fsync of a file or a directory, so a rename that follows (or one that happened) is on
// disk before anything points at it.
void sync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) fail("cannot open '{}' to sync it: {}", p.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems cannot fsync a directory (EINVAL); the rename is still atomic.
  if (rc != 0 && !(directory && err == EINVAL))
    fail("cannot sync '{}': {}", p.string(), std::strerror(err));
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    fail("cannot rename '{}' to '{}': {}", from.string(), to.string(), std::strerror(errno));
}

// Writes `text` to `path` and syncs it; removes the partial file on failure.
void write_synced(const fs::path& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("cannot create '{}': {}", path.string(), std::strerror(errno));
  size_t done = 0;
  int err = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : ENOSPC;
      break;
    }
    done += size_t(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    std::error_code ec;
    fs::remove(path, ec);
    fail("cannot write '{}': {}", path.string(), std::strerror(err));
  }
}

// `text` with anything unprintable as '?', at most 80 characters (a damaged pointer file
// goes into a log line).
std::string printable(const std::string& text) {
  std::string out = text.substr(0, 80);
  for (char& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  return out;
}

}  // namespace

std::optional<int64_t> checkpoint_step_of(const std::string& name) {
  const size_t prefix = std::strlen(kPrefix), suffix = std::strlen(kSuffix);
  if (name.size() <= prefix + suffix || name.compare(0, prefix, kPrefix) != 0 ||
      name.compare(name.size() - suffix, suffix, kSuffix) != 0)
    return std::nullopt;
  const char* first = name.data() + prefix;
  const char* last = name.data() + name.size() - suffix;
  int64_t step = 0;
  auto [end, ec] = std::from_chars(first, last, step);
  if (ec != std::errc() || end != last || step < 0) return std::nullopt;
  return step;
}

CheckpointDir::CheckpointDir(const fs::path& out_dir) : dir_(out_dir / "checkpoints") {}

fs::path CheckpointDir::file_for(int64_t step) const {
  return dir_ / fmt::format("{}{:08d}{}", kPrefix, step, kSuffix);
}

fs::path CheckpointDir::temp_for(int64_t step) const {
  return fs::path(file_for(step).string() + ".tmp");
}

std::vector<CheckpointDir::Entry> CheckpointDir::complete() const {
  std::vector<Entry> out;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (!e.is_regular_file(ec)) continue;
    if (auto step = checkpoint_step_of(e.path().filename().string())) out.push_back({*step, e.path()});
  }
  if (ec) fail("cannot list checkpoint directory '{}': {}", dir_.string(), ec.message());
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.step < b.step; });
  return out;
}

std::optional<CheckpointDir::Entry> CheckpointDir::resume_point() const {
  const std::vector<Entry> all = complete();
  std::optional<Entry> pointed;
  std::error_code ec;
  if (fs::exists(latest_pointer(), ec)) {
    std::ifstream in(latest_pointer());
    std::string name;
    std::getline(in, name);
    const std::optional<int64_t> step = checkpoint_step_of(name);
    const fs::path target = dir_ / name;
    if (step && fs::is_regular_file(target, ec))
      pointed = Entry{*step, target};
    else
      log::warn("{}: names '{}', which is not a complete checkpoint here; taking the newest "
                "complete one instead", latest_pointer().string(), printable(name));
  }
  if (all.empty()) return std::nullopt;
  if (pointed && pointed->step != all.back().step)
    log::warn("{} is newer than {} says (a save stopped between its rename and the pointer's "
              "update); resuming from it", all.back().path.string(), latest_pointer().string());
  return all.back();
}

fs::path CheckpointDir::publish(int64_t step, int64_t keep) const {
  const fs::path temp = temp_for(step), final_path = file_for(step);
  test_kill_point("temp-written", step);
  sync_path(temp, false);
  rename_or_fail(temp, final_path);
  sync_path(dir_, true);
  test_kill_point("renamed", step);
  const fs::path pointer_temp = dir_ / "latest.tmp";
  write_synced(pointer_temp, final_path.filename().string() + "\n");
  test_kill_point("pointer-temp-written", step);
  rename_or_fail(pointer_temp, latest_pointer());
  sync_path(dir_, true);
  test_kill_point("pointer-moved", step);
  // Keep the newest `keep`; never the one just published (even with a newer one around).
  std::vector<Entry> all = complete();
  for (size_t i = 0; i + size_t(keep) < all.size(); ++i) {
    if (all[i].step == step) continue;
    std::error_code ec;
    fs::remove(all[i].path, ec);
    if (ec) log::warn("cannot delete old checkpoint '{}': {}", all[i].path.string(), ec.message());
    test_kill_point("pruned-one", step);
  }
  return final_path;
}

void CheckpointDir::remove_partial() const {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().extension() != ".tmp") continue;
    log::info("removing {} (left by a save that did not finish)", e.path().string());
    fs::remove(e.path(), ec);
  }
}

// ---- stop signals ------------------------------------------------------------------

namespace {

std::atomic<int> g_stop_signal{0};

void say(const char* text) { (void)!::write(STDERR_FILENO, text, std::strlen(text)); }

extern "C" void record_stop_signal(int signal) {
  if (signal == SIGUSR2) {  // launch/temper-mpirun's second Ctrl-C (mpirun forwards USR1/2)
    say("\ntemper: SIGUSR2 (Ctrl-C again): exiting now, without a checkpoint\n");
    ::_exit(128 + SIGINT);
  }
  int none = 0;
  if (g_stop_signal.compare_exchange_strong(none, signal)) {  // lock-free: async-signal-safe
    if (signal == SIGINT)
      say("\ntemper: SIGINT: finishing this step, then saving a checkpoint (Ctrl-C again to exit "
          "at once, without one)\n");
    return;
  }
  if (signal == SIGINT) {  // a second request, by Ctrl-C: now
    say("\ntemper: SIGINT again: exiting now, without a checkpoint\n");
    ::_exit(128 + SIGINT);
  }
}

void install(int signal, struct sigaction* old) {
  struct sigaction sa {};
  sa.sa_handler = record_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking calls (MPI progress, file I/O) just carry on
  if (sigaction(signal, &sa, old) != 0)
    fail("cannot install the {} handler: {}", signal_name(signal), std::strerror(errno));
}

}  // namespace

StopSignals::StopSignals() {
  static_assert(std::atomic<int>::is_always_lock_free);
  g_stop_signal = 0;
  install(SIGTERM, &old_term_);
  install(SIGUSR1, &old_usr1_);
  install(SIGINT, &old_int_);
  install(SIGUSR2, &old_usr2_);
}

StopSignals::~StopSignals() {
  sigaction(SIGTERM, &old_term_, nullptr);
  sigaction(SIGUSR1, &old_usr1_, nullptr);
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGUSR2, &old_usr2_, nullptr);
}

int StopSignals::received() const { return g_stop_signal.load(); }

const char* signal_name(int signal) {
  switch (signal) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGINT: return "SIGINT";
    default: return "a signal";
  }
}

int agree_on_stop(int local_signal, Communicator* world) {
  if (!world || world->size() == 1) return local_signal;
  // Max over ranks via a sum of one-hot slots (the f64 all-reduce is what we have for
  // host scalars), one slot per stop signal.
  constexpr int kStops[] = {SIGINT, SIGUSR1, SIGTERM};  // ascending
  std::vector<double> got;
  for (int s : kStops) got.push_back(local_signal == s ? 1.0 : 0.0);
  all_reduce_sum_f64(*world, got);
  for (size_t i = std::size(kStops); i-- > 0;)
    if (got[i] > 0) return kStops[i];
  return 0;
}

// ---- test-only hooks ---------------------------------------------------------------

bool NonfiniteInjection::at(int64_t step, int world_rank) const {
  if (rank >= 0 && rank != world_rank) return false;
  return std::find(steps.begin(), steps.end(), step) != steps.end();
}

NonfiniteInjection parse_nonfinite_injection(const std::string& text) {
  auto bad = [&](const std::string& why) {
    fail("TEMPER_TEST_NONFINITE='{}': {} (expected e.g. '3,5-7' or '4@1')", text, why);
  };
  auto number = [&](const std::string& s) -> int64_t {
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0)
      bad("'" + s + "' is not a number >= 0");
    return v;
  };
  NonfiniteInjection inj;
  std::string rest = text;
  if (const size_t at = rest.find('@'); at != std::string::npos) {
    inj.rank = int(number(rest.substr(at + 1)));
    rest.resize(at);
  }
  for (size_t start = 0; start <= rest.size();) {
    size_t comma = rest.find(',', start);
    if (comma == std::string::npos) comma = rest.size();
    const std::string item = rest.substr(start, comma - start);
    const size_t dash = item.find('-');
    const int64_t first = number(item.substr(0, dash));
    const int64_t last = dash == std::string::npos ? first : number(item.substr(dash + 1));
    if (last < first) bad("range '" + item + "' runs backwards");
    for (int64_t s = first; s <= last; ++s) inj.steps.push_back(s);
    start = comma + 1;
  }
  return inj;
}

NonfiniteInjection nonfinite_injection_from_env() {
  const char* v = std::getenv("TEMPER_TEST_NONFINITE");
  if (!v || !*v) return {};
  return parse_nonfinite_injection(v);
}

bool loss_scale_forced_for_test() {
  const char* v = std::getenv("TEMPER_TEST_LOSS_SCALE");
  return v && std::string_view(v) == "1";
}

void test_kill_point(const char* phase, int64_t step) {
  static const char* wanted = std::getenv("TEMPER_TEST_KILL_IN_SAVE");
  if (wanted && fmt::format("{}@{}", phase, step) == wanted) ::raise(SIGKILL);
}

}  // namespace temper
