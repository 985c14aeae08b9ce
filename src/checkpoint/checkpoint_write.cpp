// write_checkpoint: every rank creates the same groups and datasets (collective under
// MPI-IO), then writes the hyperslabs it owns; checksums are summed over ranks and stored
// last. See checkpoint.h for the layout.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "checkpoint/base.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "checkpoint/slab.h"
#include "checkpoint/tally.h"
#include "core/error.h"
#include "parallel/grid.h"

namespace temper {
namespace {

using ckpt::Selection;

h5::Id create_dataset(const h5::File& f, hid_t loc, const std::string& name, hid_t type,
                      const std::vector<int64_t>& dims, const std::string& what) {
  std::vector<hsize_t> d(dims.begin(), dims.end());
  h5::Id space(H5Screate_simple(int(d.size()), d.data(), nullptr));
  h5::Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);  // every element gets written
  if (f.parallel()) H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY);
  h5::Id set(H5Dcreate2(loc, name.c_str(), type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
  if (!set.valid()) fail("{}: cannot create dataset '{}' (disk full?)", f.path, what);
  return set;
}

void write_meta(hid_t file, const CheckpointMeta& m, const std::string& path) {
  with_context(path + ": /meta", [&] {
    h5::Id g = h5::create_group(file, "meta", path);
    const hid_t id = g.get();
    h5::write_attr(id, "format_version", m.format_version);
    h5::write_attr(id, "step", m.step);
    h5::write_attr(id, "tokens_seen", m.tokens_seen);
    h5::write_attr(id, "config", m.config_yaml);
    h5::write_attr(id, "model_config", m.model_config_json);
    h5::write_attr(id, "model_dtype", m.model_dtype);
    h5::write_attr(id, "grid_world", m.grid.world);
    h5::write_attr(id, "grid_tp", m.grid.tp);
    h5::write_attr(id, "grid_dp", m.grid.dp);
    h5::write_attr(id, "grid_zero", m.grid.zero);
    h5::write_attr(id, "has_optimizer", int64_t(m.has_optimizer));
    h5::write_attr(id, "optimizer_steps", m.optimizer_steps);
    h5::write_attr(id, "lr", m.lr);
    h5::write_attr(id, "lr_schedule", m.schedule.kind);
    h5::write_attr(id, "lr_peak", m.schedule.lr);
    h5::write_attr(id, "lr_min_ratio", m.schedule.min_lr_ratio);
    h5::write_attr(id, "lr_warmup_steps", m.schedule.warmup_steps);
    h5::write_attr(id, "lr_total_steps", m.schedule.total_steps);
    h5::write_attr(id, "loss_scale", m.loss_scale);
    h5::write_attr(id, "loss_scale_good_steps", m.loss_scale_good_steps);
    h5::write_attr(id, "loss_scale_overflows", m.loss_scale_overflows);
    h5::write_attr(id, "nonfinite_streak", m.nonfinite_streak);
    h5::write_attr(id, "skipped_steps", m.skipped_steps);
    h5::write_attr(id, "source", m.source);
    h5::write_attr(id, "creator_version", m.creator_version);
    if (m.has_base) {
      h5::write_attr(id, "base_model", m.base_model);
      h5::write_attr(id, "base_checksum", m.base_checksum);
    }
    h5::Id extra = h5::create_group(id, "extra", path);
    for (const auto& [k, v] : m.extra) h5::write_attr(extra.get(), k.c_str(), v);
  });
}

// This rank's optimizer pieces of parameter `param`, in element order.
std::vector<AdamW::StatePiece> pieces_of(const std::vector<AdamW::StatePiece>& all, size_t param) {
  std::vector<AdamW::StatePiece> out;
  for (const auto& s : all)
    if (s.param == param) out.push_back(s);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  return out;
}

// Writes one tensor dataset and records this rank's checksum part.
void write_tensor(const h5::File& f, hid_t loc, const std::string& name, const std::string& path_in_file,
                  DType dtype, const std::vector<int64_t>& full, const Selection& s, const void* data,
                  ckpt::Tally& tally) {
  h5::Id set = create_dataset(f, loc, name, h5::file_type(dtype), full, path_in_file);
  h5::write_attr(set.get(), "dtype", std::string(dtype_name(dtype)));
  ckpt::write_selection(f, set.get(), h5::file_type(dtype), s, data, path_in_file);
  int64_t numel = 1;
  for (int64_t d : full) numel *= d;
  tally.add(path_in_file, ckpt::checksum(s, data, dtype_size(dtype)), uint64_t(s.count()), uint64_t(numel));
}

void write_optimizer(const h5::File& f, Transformer& model, const AdamW& optimizer, bool owner_dp,
                     int tp_rank, ckpt::Tally& tally) {
  Backend& backend = model.backend();
  const std::vector<AdamW::StatePiece> all = optimizer.state_pieces();
  h5::Id optim = h5::create_group(f.id.get(), "optim", f.path);
  for (size_t i = 0; i < model.params().size(); ++i) {
    const Parameter& p = model.params()[i];
    if (!p.trainable) continue;
    const ckpt::Block b = ckpt::block_of(p);
    const bool owner = owner_dp && (p.split_dim >= 0 || tp_rank == 0);
    Selection s;
    std::vector<AdamW::StatePiece> mine;
    if (owner) mine = pieces_of(all, i);
    for (const auto& piece : mine) s.add(b, piece.begin, piece.end);
    s.cols = b.cols, s.ndim = int(b.full.size());
    h5::Id g = h5::create_group(optim.get(), p.name, f.path);
    const std::vector<int64_t> full = b.full;
    auto state = [](const AdamW::StatePiece& piece, int k) {
      return k == 0 ? piece.master : k == 1 ? piece.m : piece.v;
    };
    const char* kinds[3] = {"master", "m", "v"};
    std::vector<float> host(size_t(s.count()));
    for (int k = 0; k < 3; ++k) {
      size_t at = 0;
      for (const auto& piece : mine) {
        backend.copy_to_host(host.data() + at, state(piece, k));
        at += size_t(piece.end - piece.begin);
      }
      write_tensor(f, g.get(), kinds[k], fmt::format("optim/{}/{}", p.name, kinds[k]), DType::F32,
                   full, s, host.data(), tally);
    }
  }
}

void write_rank_state(const h5::File& f, const RankState& state, int rank, int world, int dp_rank,
                      int dp, int tp_rank) {
  // Every rank must create the same datasets: the RNG vectors must have one length.
  std::vector<uint64_t> len = {state.rng.size(), ~uint64_t(state.rng.size())};
  if (f.parallel()) MPI_Allreduce(MPI_IN_PLACE, len.data(), 2, MPI_UINT64_T, MPI_MAX, f.comm);
  if (len[0] != ~len[1])
    fail("{}: ranks save RNG states of different lengths (rank {} has {})", f.path, rank, state.rng.size());
  const int64_t k = int64_t(len[0]);
  h5::Id rng = h5::create_group(f.id.get(), "rng", f.path);
  for (int r = 0; r < world; ++r) {
    const std::string name = std::to_string(r);
    h5::Id set = create_dataset(f, rng.get(), name, H5T_STD_U64LE, {k}, "rng/" + name);
    if (k == 0) continue;  // nothing to write (the same on every rank)
    Selection s;
    s.cols = k;
    if (r == rank) s.rects.push_back({0, 1, 0, k});
    ckpt::write_selection(f, set.get(), H5T_NATIVE_UINT64, s, state.rng.data(), "rng/" + name);
  }
  h5::Id data = h5::create_group(f.id.get(), "data", f.path);
  const uint64_t pos[2] = {state.data.epoch, state.data.index};
  for (int d = 0; d < dp; ++d) {
    const std::string name = std::to_string(d);
    h5::Id set = create_dataset(f, data.get(), name, H5T_STD_U64LE, {2}, "data/" + name);
    h5::write_attr(set.get(), "fields", std::string("epoch,index"));
    Selection s;
    s.cols = 2;
    if (d == dp_rank && tp_rank == 0) s.rects.push_back({0, 1, 0, 2});
    ckpt::write_selection(f, set.get(), H5T_NATIVE_UINT64, s, pos, "data/" + name);
  }
}

// Everything but the final flush and close, into the open file `f`.
void write_contents(const h5::File& f, const CheckpointMeta& meta, Transformer& model,
                    const AdamW* optimizer, const RankState& state, DeviceGrid* grid) {
  const std::string& path = f.path;
  const int rank = grid ? grid->rank() : 0, world = grid ? grid->world_size() : 1;
  const int tp_rank = grid ? grid->tp_rank() : 0, dp_rank = grid ? grid->dp_rank() : 0;
  const int dp = grid ? grid->dp_size() : 1;
  const DType dtype = model.params().dtype();
  write_meta(f.id.get(), meta, path);
  ckpt::Tally tally;

  // Model: each dp_rank 0 rank writes its tensor-parallel shards (replicated: tp_rank 0).
  Backend& backend = model.backend();
  h5::Id group = h5::create_group(f.id.get(), "model", path);
  for (const Parameter& p : model.params().all()) {
    if (meta.has_base && !p.trainable) continue;  // the base is referenced, not stored
    const ckpt::Block b = ckpt::block_of(p);
    const bool owner = dp_rank == 0 && (p.split_dim >= 0 || tp_rank == 0);
    Selection s;
    s.cols = b.cols, s.ndim = int(b.full.size());
    if (owner) s.add(b, 0, b.numel());
    std::vector<uint8_t> host(owner ? p.value.nbytes() : 0);
    if (owner) backend.copy_to_host(host.data(), p.value);
    write_tensor(f, group.get(), p.name, "model/" + p.name, dtype, b.full, s, host.data(), tally);
  }
  // Optimizer: under ZeRO every dp rank owns its pieces; otherwise dp_rank 0 holds them all.
  if (optimizer) write_optimizer(f, model, *optimizer, meta.grid.zero > 0 || dp_rank == 0, tp_rank, tally);
  write_rank_state(f, state, rank, world, dp_rank, dp, tp_rank);

  // Checksums of the whole tensors: the parts of all writers added up.
  tally.reduce(f.comm);
  for (size_t i = 0; i < tally.names.size(); ++i) {
    if (tally.counts[i] != tally.numel[i])
      fail("{}: {} of {} elements of '{}' were written (is CheckpointMeta::grid.zero = {} the "
           "optimizer's ZeRO stage?)", path, tally.counts[i], tally.numel[i], tally.names[i], meta.grid.zero);
    h5::Id set(H5Dopen2(f.id.get(), tally.names[i].c_str(), H5P_DEFAULT));
    with_context(path + ": " + tally.names[i], [&] { h5::write_attr(set.get(), "checksum", tally.sums[i]); });
  }
}

}  // namespace

void write_checkpoint(const std::string& path, CheckpointMeta meta, Transformer& model,
                      const AdamW* optimizer, const RankState& state, DeviceGrid* grid) {
  meta.format_version = kCheckpointFormatVersion;
  meta.grid.world = grid ? grid->world_size() : 1;
  meta.grid.tp = grid ? grid->tp_size() : 1;
  meta.grid.dp = grid ? grid->dp_size() : 1;
  meta.model_config_json = model_config_to_hf_json(model.config()).dump();
  meta.model_dtype = std::string(dtype_name(model.params().dtype()));
  meta.has_optimizer = optimizer != nullptr;
  meta.optimizer_steps = optimizer ? optimizer->steps_taken() : 0;
  meta.has_base = model.params().frozen_numel() > 0;
  if (meta.has_base)
    meta.base_checksum = parameter_checksum(model, grid, [](const Parameter& p) { return !p.trainable; });

  h5::File f = h5::create_file(path, ckpt::file_comm(grid));
  try {
    write_contents(f, meta, model, optimizer, state, grid);
    if (H5Fflush(f.id.get(), H5F_SCOPE_GLOBAL) < 0)
      fail("{}: flushing the checkpoint failed (disk full?)", path);
  } catch (...) {
    h5::abandon(f);  // closes the file for good, so HDF5's exit handler has nothing left
    throw;
  }
  if (!f.id.close()) fail("{}: closing the checkpoint failed (disk full?)", path);
}

}  // namespace temper
