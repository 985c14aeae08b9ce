// Training checkpoints in HDF5 (docs/architecture.md): one logical file per save, written by every
// rank as hyperslabs of the full logical tensors (parallel HDF5 over MPI-IO), readable
// under any other tp / dp / ZeRO layout by reading other hyperslabs.
//
// Status: implemented — write (one process: plain HDF5; several: MPI-IO with collective
// metadata and transfers), meta, per-rank state, validation and the resharding load
// (model + optimizer; each rank reads its own hyperslabs with plain HDF5), per-tensor
// checksums, describe (`temper inspect`), convert/export (checkpoint/convert.h).
// PEFT adapters are parameters like any other (PEFT's names, /model and /optim); the
// frozen base is referenced, not stored (checkpoint/base.h). Pending — tensors of more than 2 dimensions (none in the
// Llama family); one H5Dwrite per tensor, so a single shard above 2 GiB may hit MPI-IO
// count limits (not tried).
//
// File layout (format_version 1):
//   /meta                      attributes: format_version, step, tokens_seen, config
//                              (run config YAML), model_config (HF config.json text),
//                              model_dtype, grid_world/grid_tp/grid_dp/grid_zero,
//                              optimizer_steps, lr, lr_schedule/lr_peak/lr_min_ratio/
//                              lr_warmup_steps/lr_total_steps, loss_scale,
//                              loss_scale_good_steps, loss_scale_overflows,
//                              nonfinite_streak, skipped_steps, source, creator_version;
//                              a PEFT checkpoint also base_model and base_checksum
//                              (checkpoint/base.h) and has no /model/<frozen name>
//   /meta/extra                string attributes the caller adds (CheckpointMeta::extra)
//   /model/<hf name>           the parameter at full logical shape, in the model dtype:
//                              f32 (IEEE), bf16 and f16 as HDF5 16-bit float types with
//                              those bit layouts, so HDF5 readers decode real values
//                              (h5py: ds.astype('f4')[...] is exact); attribute dtype
//   /optim/<hf name>/{master,m,v}   f32 AdamW state at full logical shape (trainable
//                              parameters only; absent in a model-only checkpoint)
//   /rng/<world rank>          uint64 [k]: the caller's RNG stream positions
//   /data/<dp rank>            uint64 [2]: loader position (epoch, index)
// Every tensor dataset carries `checksum` (uint64): Σ over elements of a hash of (flat
// index in the full tensor, stored bits), mod 2^64. A sum does not depend on which rank
// wrote or reads which part, so a load under any layout verifies it (flipped bytes in the
// raw data are caught; HDF5 itself checksums only its metadata).
//
// Errors: a missing, truncated or corrupt file, a missing dataset or attribute, a shape
// that differs from the model, another format version or a checksum mismatch is a
// temper::Error naming the file and the tensor or attribute. HDF5's own error printing is
// silenced.
//
// Collectives: with a DeviceGrid every rank of grid->world() must call write_checkpoint
// and load_checkpoint together, with models of the same config. A rank that fails in the
// write throws (the others may be left in a collective: the caller aborts the job with
// abort_job, as for any other rank failure). load_checkpoint has no collective until its
// end, where all ranks learn whether any failed and all throw.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/loader.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/schedule.h"

namespace temper {

class DeviceGrid;

constexpr int64_t kCheckpointFormatVersion = 1;

// The layout that wrote a checkpoint.
struct CheckpointGrid {
  int64_t world = 1, tp = 1, dp = 1;
  int64_t zero = 0;  // ZeRO stage of the optimizer state (0: every dp rank holds all of it)
};

struct CheckpointMeta {
  int64_t format_version = kCheckpointFormatVersion;  // read: what the file says
  int64_t step = 0;         // optimizer steps completed; a resume continues with step + 1
  int64_t tokens_seen = 0;  // training tokens consumed so far (all ranks)
  std::string config_yaml;  // the run config at save time (to_yaml)
  // Filled by write_checkpoint from the model (callers need not set them):
  std::string model_config_json;  // HF config.json of the model
  std::string model_dtype;        // "f32" | "bf16" | "f16"
  CheckpointGrid grid;            // world/tp/dp from the DeviceGrid; `zero` from the caller
  int64_t optimizer_steps = 0;    // AdamW::steps_taken() (Adam bias correction)
  bool has_optimizer = false;     // /optim present
  // Training state the caller fills:
  double lr = 0.0;          // the learning rate of the last step
  LrSchedule schedule;      // the schedule in use
  double loss_scale = 0.0;  // f16 dynamic loss scale (0: none)
  int64_t loss_scale_good_steps = 0, loss_scale_overflows = 0;
  int64_t nonfinite_streak = 0;  // non-finite steps in a row at save time
  int64_t skipped_steps = 0;     // non-finite steps skipped so far
  std::string source;            // where the weights came from (convert: the input)
  // A PEFT checkpoint leaves out its frozen parameters (checkpoint/base.h): then has_base,
  // base_model names the base (a model directory / GGUF; empty: drawn from the run's seed)
  // and base_checksum is parameter_checksum over the frozen parameters. write_checkpoint
  // sets has_base and base_checksum; the caller sets base_model.
  bool has_base = false;
  std::string base_model;
  uint64_t base_checksum = 0;
  std::string creator_version = TEMPER_VERSION;
  std::map<std::string, std::string> extra;  // free-form, stored under /meta/extra
};

// What a rank saves besides the model and optimizer.
struct RankState {
  std::vector<uint64_t> rng;  // /rng/<world rank>; the same length on every rank
  LoaderPosition data;        // /data/<dp rank> (written by the tp_rank 0 rank of each dp rank)
};

// Writes exactly `path` (created or truncated); the caller does any tmp-file + rename.
// `optimizer` null: a model-only checkpoint. `grid` null: one process (no MPI needed);
// otherwise collective over grid->world(), each rank writing its own shards: model
// tensors by the dp_rank 0 ranks (replicated ones by tp_rank 0), optimizer pieces by
// their owner (every dp rank under ZeRO, meta.grid.zero > 0; else dp_rank 0). Returns
// after the file is flushed and closed on every rank; a failure (e.g. a full disk) is a
// temper::Error naming the file.
void write_checkpoint(const std::string& path, CheckpointMeta meta, Transformer& model,
                      const AdamW* optimizer, const RankState& state, DeviceGrid* grid = nullptr);

// Meta only (cheap); validates the format version. One process, any rank.
CheckpointMeta read_checkpoint_meta(const std::string& path);

// Loads the model's parameters (this rank's tensor-parallel shard of each) and, with an
// optimizer, its master weights, moments (this rank's pieces, whatever its ZeRO stage)
// and step count, from a checkpoint written under any layout. The model's tensors must
// be exactly the file's (names and full shapes); dtypes are converted (bf16 <-> f32 <->
// f16). An f32 model takes trainable parameters from /optim/<name>/master when the file
// has it (exact f32 weights of a bf16 run). Parameters the file leaves out: frozen ones of
// a PEFT checkpoint keep the values the model has (its base, loaded by the caller), which
// must match base_checksum; adapters of a model-only checkpoint keep theirs (a fresh
// adapter on a converted base). Every rank reads its own hyperslabs with
// plain HDF5; with a `grid`, the ranks of grid->world() then sum their checksum parts
// (all must call it). Verifies the checksums of what is read. Returns the meta.
CheckpointMeta load_checkpoint(const std::string& path, Transformer& model, AdamW* optimizer,
                               DeviceGrid* grid = nullptr);

// /rng/<world_rank> and /data/<dp_rank>; an error naming the dataset when either is
// missing (e.g. a checkpoint written by fewer ranks). One process, any rank.
RankState read_rank_state(const std::string& path, int world_rank, int dp_rank);

// A summary for `temper inspect`: meta, grid, config and every dataset with its shape and
// dtype. `verify`: also read every tensor and check its checksum.
std::string describe_checkpoint(const std::string& path, bool verify = false);

// True when `path` is an HDF5 file with a /meta group carrying format_version.
bool is_checkpoint_file(const std::string& path);

}  // namespace temper
