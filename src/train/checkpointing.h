// Where a run's checkpoints live and how a save becomes visible, and the stop requests
// (signals) that end a run with a save. The HDF5 contents are checkpoint/checkpoint.h's.
//
// OUT_DIR/checkpoints/
//   step-00000012.h5        complete checkpoints, one per save
//   step-00000015.h5.tmp    a save in progress (or one that died): never read
//   latest                  one line naming the newest complete checkpoint
//
// A save writes step-N.h5.tmp (every rank, collectively), then rank 0 fsyncs it, renames
// it to step-N.h5 (atomic), fsyncs the directory, replaces `latest` the same way (write
// latest.tmp, fsync, rename) and deletes the oldest complete checkpoints beyond `keep`.
// A crash at any moment leaves every step-N.h5 complete and untouched, and `latest`
// naming one of them (or, killed between the two renames, the one before the newest).
#pragma once
#include <atomic>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace temper {

class Communicator;

class CheckpointDir {
 public:
  explicit CheckpointDir(const std::filesystem::path& out_dir);
  const std::filesystem::path& path() const { return dir_; }
  std::filesystem::path file_for(int64_t step) const;  // .../step-00000012.h5
  std::filesystem::path temp_for(int64_t step) const;  // .../step-00000012.h5.tmp
  std::filesystem::path latest_pointer() const { return dir_ / "latest"; }

  struct Entry {
    int64_t step;
    std::filesystem::path path;
  };
  // Complete checkpoints (step-N.h5, never *.tmp), oldest first.
  std::vector<Entry> complete() const;
  // The checkpoint a resume starts from: the newest complete one. That is the one
  // `latest` names, or a newer one when a save was killed between renaming its file and
  // moving the pointer (logged). A pointer naming nothing, or unreadable, is logged and
  // passed over. nullopt: no checkpoint here.
  std::optional<Entry> resume_point() const;

  // Rank 0, after every rank has written and closed temp_for(step): makes it step-N.h5,
  // points `latest` at it and deletes the oldest beyond `keep`. Throws temper::Error
  // naming the file on any failure (the earlier checkpoints and pointer stay as they were).
  std::filesystem::path publish(int64_t step, int64_t keep) const;
  // Deletes *.tmp files left by saves that died (rank 0, before the run writes any).
  void remove_partial() const;

 private:
  std::filesystem::path dir_;
};

// The step number of a checkpoint file name ("step-00000012.h5" -> 12); nullopt for
// anything else (temp files included).
std::optional<int64_t> checkpoint_step_of(const std::string& file_name);

// SIGTERM, SIGUSR1 and SIGINT (Ctrl-C) ask the run to stop: the handler only records the
// signal; the training loop looks once per step (all ranks together, see agree_on_stop),
// finishes the step, saves and exits 0. A SIGINT after a stop request ends the process at
// once (exit status 130, no checkpoint), as a second Ctrl-C should, and so does SIGUSR2
// (launch/temper-mpirun's second Ctrl-C: mpirun forwards only SIGUSR1 and SIGUSR2 as they
// are). Installed for the object's lifetime, then restored.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int received() const;  // the first signal number this process got, 0 if none
 private:
  struct sigaction old_term_ {}, old_usr1_ {}, old_int_ {}, old_usr2_ {};
};

const char* signal_name(int signal);  // "SIGTERM", "SIGUSR1", ...

// One stop decision for the whole job: the signal some rank received (the largest
// number when ranks got different ones), 0 when none did. `world` null: this process
// alone. Collective over `world`.
int agree_on_stop(int local_signal, Communicator* world);

// Test-only fault injection, read from the environment variable TEMPER_TEST_NONFINITE:
// "3,5-7" puts a NaN into a weight (element 0 of model.norm.weight) for steps 3, 5, 6
// and 7 on every rank, "4@1" on world rank 1 only. The NaN then reaches the loss and the
// gradients of every rank through the usual reductions, as a real fault would; the
// weight is restored after the (skipped) step. Unset: nothing is injected. Documented as
// test-only (docs/user-guide.md); not a config key.
struct NonfiniteInjection {
  int rank = -1;  // only on this world rank (-1: every rank)
  std::vector<int64_t> steps;
  bool at(int64_t step, int world_rank) const;
};
// Parses the variable's text; throws temper::Error naming it when malformed.
NonfiniteInjection parse_nonfinite_injection(const std::string& text);
NonfiniteInjection nonfinite_injection_from_env();

// Test-only: TEMPER_TEST_LOSS_SCALE=1 gives the run a dynamic loss scale whatever the
// model dtype (normally f16 only), so the CPU f32 backend exercises the trainer's loss-scale
// path: scaled backward, overflow skip and halving (with TEMPER_TEST_NONFINITE), growth,
// and its save to and restore from checkpoints. A power-of-two scale changes no f32 result.
bool loss_scale_forced_for_test();

// Test-only: TEMPER_TEST_KILL_IN_SAVE=PHASE@STEP makes the process SIGKILL itself at that
// point of the save of step STEP (temp-written, renamed, pointer-temp-written,
// pointer-moved, pruned-one), so the crash-safety test reaches every window between the
// steps of publish().
void test_kill_point(const char* phase, int64_t step);

}  // namespace temper
