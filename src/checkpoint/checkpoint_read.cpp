// Reading checkpoints: meta, the resharding load (each rank reads the hyperslabs its own
// layout needs) and the per-rank state. Everything is validated against the model before
// any data is read; checksums are checked after.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "checkpoint/base.h"
#include "checkpoint/reader.h"
#include "core/error.h"
#include "parallel/grid.h"
#include "peft/nf4.h"

namespace temper {
namespace ckpt {

CheckpointMeta read_meta(hid_t file, const std::string& path) {
  if (!h5::exists(file, "meta"))
    fail("{}: no /meta group: not a temper checkpoint", path);
  h5::Id g = h5::open_group(file, "meta", path);
  const hid_t id = g.get();
  const std::string what = path + ": /meta";
  CheckpointMeta m;
  m.format_version = h5::read_int_attr(id, "format_version", what);
  if (m.format_version != kCheckpointFormatVersion)
    fail("{}: checkpoint format_version {}, this temper reads version {}", path, m.format_version,
         kCheckpointFormatVersion);
  m.step = h5::read_int_attr(id, "step", what);
  m.tokens_seen = h5::read_int_attr(id, "tokens_seen", what);
  m.config_yaml = h5::read_string_attr(id, "config", what);
  m.model_config_json = h5::read_string_attr(id, "model_config", what);
  m.model_dtype = h5::read_string_attr(id, "model_dtype", what);
  m.grid.world = h5::read_int_attr(id, "grid_world", what);
  m.grid.tp = h5::read_int_attr(id, "grid_tp", what);
  m.grid.dp = h5::read_int_attr(id, "grid_dp", what);
  m.grid.zero = h5::read_int_attr(id, "grid_zero", what);
  m.has_optimizer = h5::read_int_attr(id, "has_optimizer", what) != 0;
  m.optimizer_steps = h5::read_int_attr(id, "optimizer_steps", what);
  m.lr = h5::read_double_attr(id, "lr", what);
  m.schedule.kind = h5::read_string_attr(id, "lr_schedule", what);
  m.schedule.lr = h5::read_double_attr(id, "lr_peak", what);
  m.schedule.min_lr_ratio = h5::read_double_attr(id, "lr_min_ratio", what);
  m.schedule.warmup_steps = h5::read_int_attr(id, "lr_warmup_steps", what);
  m.schedule.total_steps = h5::read_int_attr(id, "lr_total_steps", what);
  m.loss_scale = h5::read_double_attr(id, "loss_scale", what);
  m.loss_scale_good_steps = h5::read_int_attr(id, "loss_scale_good_steps", what);
  m.loss_scale_overflows = h5::read_int_attr(id, "loss_scale_overflows", what);
  m.nonfinite_streak = h5::read_int_attr(id, "nonfinite_streak", what);
  m.skipped_steps = h5::read_int_attr(id, "skipped_steps", what);
  m.source = h5::read_string_attr(id, "source", what);
  m.creator_version = h5::read_string_attr(id, "creator_version", what);
  m.has_base = h5::has_attr(id, "base_checksum");
  if (m.has_base) {
    m.base_model = h5::read_string_attr(id, "base_model", what);
    m.base_checksum = h5::read_u64_attr(id, "base_checksum", what);
  }
  if (h5::exists(id, "extra")) {
    h5::Id extra = h5::open_group(id, "extra", path);
    for (const std::string& k : h5::attr_names(extra.get()))
      m.extra[k] = h5::read_string_attr(extra.get(), k.c_str(), what + "/extra");
  }
  return m;
}

// Opens `name` (a path in the file) and checks its shape and, for f32-only data, its type.
h5::Id open_tensor(const h5::File& f, const std::string& name, const std::vector<int64_t>& full,
                   const char* kind) {
  if (!h5::exists(f.id.get(), name))
    fail("{}: tensor '{}' is missing ({})", f.path, name, kind);
  h5::Id set(H5Dopen2(f.id.get(), name.c_str(), H5P_DEFAULT));
  if (!set.valid()) fail("{}: cannot open tensor '{}' (corrupt file?)", f.path, name);
  const std::vector<int64_t> dims = h5::extent(set.get(), f.path + ": " + name);
  if (dims != full)
    fail("{}: tensor '{}' has shape [{}], the model expects [{}] (a checkpoint of another model?)",
         f.path, name, fmt::join(dims, ", "), fmt::join(full, ", "));
  return set;
}

// Reads selection `s` of `set` in its stored dtype, and records the checksum part.
std::vector<uint8_t> read_tensor(const h5::File& f, hid_t set, const std::string& name,
                                 const Selection& s, DType* stored, Tally& tally) {
  h5::Id type(H5Dget_type(set));
  *stored = h5::dtype_of(type.get(), f.path + ": " + name);
  const size_t es = dtype_size(*stored);
  std::vector<uint8_t> raw(size_t(s.count()) * es);
  read_selection(f, set, h5::file_type(*stored), s, raw.data(), name);
  if (!h5::has_attr(set, "checksum")) fail("{}: tensor '{}' has no checksum attribute", f.path, name);
  const uint64_t stored_sum = h5::read_u64_attr(set, "checksum", f.path + ": " + name);
  int64_t numel = 1;
  for (int64_t d : h5::extent(set, f.path + ": " + name)) numel *= d;
  tally.add(name, checksum(s, raw.data(), es), uint64_t(s.count()), uint64_t(numel), stored_sum);
  return raw;
}

// Host conversion of n elements between f32 / bf16 / f16.
std::vector<uint8_t> convert(const std::vector<uint8_t>& in, DType from, DType to) {
  if (from == to) return in;
  const size_t n = in.size() / dtype_size(from);
  std::vector<uint8_t> out(n * dtype_size(to));
  for (size_t i = 0; i < n; ++i) {
    float x;
    if (from == DType::F32) {
      std::memcpy(&x, in.data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, in.data() + 2 * i, 2);
      x = from == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
    if (to == DType::F32) {
      std::memcpy(out.data() + 4 * i, &x, 4);
    } else {
      const uint16_t h = to == DType::BF16 ? f32_to_bf16(x) : f32_to_f16(x);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

// Every rank's part summed: a tensor read by k ranks whole (replicas) sums to k times its
// checksum, so no layout knowledge is needed here.
void verify(const Tally& t, const std::string& path) {
  for (size_t i = 0; i < t.names.size(); ++i) {
    if (t.counts[i] == 0) continue;
    if (t.counts[i] % t.numel[i])
      fail("{}: '{}': ranks read {} elements of {}, not whole copies", path, t.names[i], t.counts[i],
           t.numel[i]);
    if (t.sums[i] != t.stored[i] * (t.counts[i] / t.numel[i]))
      fail("{}: tensor '{}' does not match its checksum (corrupt file?)", path, t.names[i]);
  }
}

}  // namespace ckpt

namespace {

// An f32 model takes its trainable parameters from the f32 master weights when the file
// has them (more precise than a bf16 /model; and under ZeRO every rank then holds the same
// values, not its own shard's master and the rest rounded).
// Returns the indices of the parameters the file leaves out (see load_checkpoint).
std::vector<size_t> load_model(const h5::File& f, const CheckpointMeta& meta, Transformer& model,
                               ckpt::Tally& tally) {
  ParameterSet& params = model.params();
  // The file's tensors must be exactly the model's.
  h5::Id group = h5::open_group(f.id.get(), "model", f.path);
  std::set<std::string> names;
  for (const Parameter& p : params.all()) names.insert(p.name);
  for (const std::string& n : h5::children(group.get(), f.path + ": /model"))
    if (!names.count(n))
      fail("{}: tensor 'model/{}' is not a parameter of the model (a checkpoint of another model?)",
           f.path, n);
  std::vector<size_t> absent;
  for (size_t i = 0; i < params.size(); ++i) {
    Parameter& p = params[i];
    const bool master = meta.has_optimizer && p.trainable && p.value.dtype() == DType::F32;
    const std::string name = master ? fmt::format("optim/{}/master", p.name) : "model/" + p.name;
    const bool frozen_base = meta.has_base && !p.trainable;
    const bool fresh_adapter = !meta.has_optimizer && p.init == ParamInit::Adapter;
    if ((frozen_base || fresh_adapter) && !h5::exists(f.id.get(), name)) {
      absent.push_back(i);
      continue;
    }
    ckpt::Block b = ckpt::block_of(p);
    // An NF4 weight (QLoRA) is quantized whole, so every rank reads all of it.
    if (p.quantized) b.r0 = b.c0 = 0, b.lrows = b.rows, b.lcols = b.cols;
    h5::Id set = ckpt::open_tensor(f, name, b.full, master ? "optimizer state" : "model weights");
    ckpt::Selection s;
    s.add(b, 0, b.numel());
    DType stored;
    std::vector<uint8_t> raw = ckpt::read_tensor(f, set.get(), name, s, &stored, tally);
    if (p.quantized) {
      const std::vector<uint8_t> whole = ckpt::convert(raw, stored, DType::F32);
      set_nf4_parameter(model.backend(), p,
                        nf4_quantize(reinterpret_cast<const float*>(whole.data()), b.numel(), p.double_quant));
      continue;
    }
    std::vector<uint8_t> host = ckpt::convert(raw, stored, p.value.dtype());
    model.backend().copy_from_host(p.value, host.data());
  }
  return absent;
}

void load_optimizer(const h5::File& f, Transformer& model, AdamW& optimizer, ckpt::Tally& tally) {
  const std::vector<AdamW::StatePiece> all = optimizer.state_pieces();
  for (size_t i = 0; i < model.params().size(); ++i) {
    const Parameter& p = model.params()[i];
    if (!p.trainable) continue;
    std::vector<AdamW::StatePiece> mine;
    for (const auto& s : all)
      if (s.param == i) mine.push_back(s);
    std::sort(mine.begin(), mine.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
    const ckpt::Block b = ckpt::block_of(p);
    ckpt::Selection s;
    s.cols = b.cols, s.ndim = int(b.full.size());
    for (const auto& piece : mine) s.add(b, piece.begin, piece.end);
    const char* kinds[3] = {"master", "m", "v"};
    for (int k = 0; k < 3; ++k) {
      const std::string name = fmt::format("optim/{}/{}", p.name, kinds[k]);
      h5::Id set = ckpt::open_tensor(f, name, b.full, "optimizer state");
      DType stored;
      std::vector<uint8_t> raw = ckpt::read_tensor(f, set.get(), name, s, &stored, tally);
      if (stored != DType::F32) fail("{}: tensor '{}' is {}, optimizer state is f32", f.path, name, dtype_name(stored));
      size_t at = 0;
      for (const auto& piece : mine) {
        const Tensor dst = k == 0 ? piece.master : k == 1 ? piece.m : piece.v;
        model.backend().copy_from_host(dst, raw.data() + at);
        at += dst.nbytes();
      }
    }
  }
}

}  // namespace

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  h5::File f = h5::open_file(path);
  return ckpt::read_meta(f.id.get(), path);
}

bool is_checkpoint_file(const std::string& path) {
  h5::quiet();
  if (H5Fis_hdf5(path.c_str()) <= 0) return false;
  h5::Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid() || !h5::exists(file.get(), "meta")) return false;
  h5::Id meta(H5Gopen2(file.get(), "meta", H5P_DEFAULT));
  return meta.valid() && h5::has_attr(meta.get(), "format_version");
}

CheckpointMeta load_checkpoint(const std::string& path, Transformer& model, AdamW* optimizer,
                               DeviceGrid* grid) {
  // Every rank reads the hyperslabs it needs on its own (the file is complete and closed,
  // so no MPI-IO and no collective inside HDF5): nothing to wait in if one rank fails.
  const MPI_Comm comm = ckpt::file_comm(grid);
  CheckpointMeta meta;
  ckpt::Tally tally;
  std::string error;
  std::vector<bool> absent(model.params().size(), false);
  try {
    h5::File f = h5::open_file(path);
    meta = ckpt::read_meta(f.id.get(), path);
    if (optimizer && !meta.has_optimizer)
      fail("{}: a model-only checkpoint (no /optim): it can start a run (checkpoint.load) but not "
           "resume one", path);
    for (size_t i : load_model(f, meta, model, tally)) absent[i] = true;
    if (optimizer) {
      load_optimizer(f, model, *optimizer, tally);
      optimizer->set_steps_taken(meta.optimizer_steps);
    }
  } catch (const Error& e) {
    error = e.what();
  }
  std::vector<uint64_t> failed = {error.empty() ? 0u : 1u};
  ckpt::sum_over_ranks(comm, failed);
  if (!error.empty()) throw Error(error);
  if (failed[0]) fail("{}: {} other rank(s) could not load the checkpoint (see their errors)", path, failed[0]);
  tally.reduce(comm);
  ckpt::verify(tally, path);
  if (meta.has_base) {  // the frozen parameters the file left out are the model's own
    const uint64_t now = parameter_checksum(model, grid, [&](const Parameter& p) {
      return !p.trainable && absent[size_t(&p - model.params().all().data())];
    });
    if (now != meta.base_checksum)
      fail("{}: the frozen base weights differ from the ones this checkpoint was trained on "
           "(base_model '{}', checksum {:016x}, now {:016x}): the base model changed since the "
           "save, or model.path / seed / dtype now name another base", path,
           meta.base_model.empty() ? std::string("drawn from the run's seed") : meta.base_model,
           meta.base_checksum, now);
  }
  return meta;
}

RankState read_rank_state(const std::string& path, int world_rank, int dp_rank) {
  h5::File f = h5::open_file(path);
  auto read_u64 = [&](const std::string& name) {
    if (!h5::exists(f.id.get(), name))
      fail("{}: '{}' is missing (the checkpoint was written by fewer ranks?)", path, name);
    h5::Id set(H5Dopen2(f.id.get(), name.c_str(), H5P_DEFAULT));
    const std::vector<int64_t> dims = h5::extent(set.get(), path + ": " + name);
    if (dims.size() != 1) fail("{}: '{}' must be 1-D", path, name);
    std::vector<uint64_t> v(static_cast<size_t>(dims[0]));
    if (!v.empty() && H5Dread(set.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
      fail("{}: cannot read '{}' (truncated or corrupt file?)", path, name);
    return v;
  };
  RankState s;
  s.rng = read_u64(fmt::format("rng/{}", world_rank));
  const std::vector<uint64_t> pos = read_u64(fmt::format("data/{}", dp_rank));
  if (pos.size() != 2) fail("{}: 'data/{}' must hold (epoch, index)", path, dp_rank);
  s.data = {pos[0], pos[1]};
  return s;
}

}  // namespace temper
