// What `temper train` may do with its OUT_DIR before it starts (rank 0 only).
//
// - OUT_DIR/checkpoints holds a checkpoint: the run resumes from it (run_checkpoint.h) and
//   says so; a config that breaks exactness is refused (resume_check.h).
// - No checkpoint, but OUT_DIR holds a finished run (final/): a fresh run would overwrite
//   it, so it is refused unless `--overwrite`. Logged steps of a run that stopped before
//   its first checkpoint (killed, requeued) are replaced, with a warning: the same command
//   starts that run again.
// - `--overwrite`: the earlier run's outputs (config.yaml, model_config.json,
//   metrics.jsonl, final/, checkpoints/) are deleted first, and the run starts afresh.
// - A run that fails before its first step is done leaves OUT_DIR as it found it: a
//   directory it created is removed, and so is anything it added to one that existed.
#pragma once
#include <filesystem>
#include <set>
#include <string>

namespace temper {

// Deletes the outputs of an earlier run in `out_dir` (--overwrite); logs what it removed.
void remove_previous_run(const std::filesystem::path& out_dir);

// Throws temper::Error, naming OUT_DIR, what it holds and what to do, when it holds a
// finished run and no checkpoint to resume from; warns about an unfinished one.
void refuse_to_overwrite_a_run(const std::filesystem::path& out_dir);

// Undoes a failed start: remembers what OUT_DIR held when constructed; unless release()d
// by then, the destructor removes OUT_DIR if it did not exist, else the entries added
// since. Inactive (does nothing) when `active` is false (ranks other than 0).
class OutDirGuard {
 public:
  OutDirGuard(const std::filesystem::path& out_dir, bool active);
  ~OutDirGuard();
  OutDirGuard(const OutDirGuard&) = delete;
  OutDirGuard& operator=(const OutDirGuard&) = delete;
  void release() { active_ = false; }

 private:
  std::filesystem::path dir_;
  bool active_, existed_ = false;
  std::set<std::string> before_;
};

}  // namespace temper
