// describe_checkpoint: the text `temper inspect` prints for a checkpoint.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include "checkpoint/reader.h"
#include "core/error.h"
#include "model/config.h"

namespace temper {
namespace {

std::string indent(const std::string& text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    out += "  " + text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos + 1);
    if (nl == std::string::npos) {
      out += "\n";
      break;
    }
    pos = nl + 1;
  }
  return out;
}

struct TensorInfo {
  std::string name;  // path in the file
  std::vector<int64_t> shape;
  DType dtype;
};

TensorInfo tensor_info(const h5::File& f, const std::string& name) {
  h5::Id set(H5Dopen2(f.id.get(), name.c_str(), H5P_DEFAULT));
  if (!set.valid()) fail("{}: cannot open tensor '{}' (corrupt file?)", f.path, name);
  h5::Id type(H5Dget_type(set.get()));
  TensorInfo info{name, h5::extent(set.get(), f.path + ": " + name), h5::dtype_of(type.get(), f.path + ": " + name)};
  if (info.shape.empty() || info.shape.size() > 2)
    fail("{}: tensor '{}' has {} dimensions (a parameter has 1 or 2)", f.path, name, info.shape.size());
  return info;
}

// Reads the whole tensor and records its checksum.
void check_whole(const h5::File& f, const TensorInfo& t, ckpt::Tally& tally) {
  h5::Id set = ckpt::open_tensor(f, t.name, t.shape, "listed");
  ckpt::Block b;
  b.full = t.shape;
  b.rows = t.shape.size() == 2 ? t.shape[0] : 1;
  b.cols = t.shape.back();
  b.lrows = b.rows, b.lcols = b.cols;
  ckpt::Selection s;
  s.add(b, 0, b.numel());
  DType stored;
  ckpt::read_tensor(f, set.get(), t.name, s, &stored, tally);
}

}  // namespace

std::string describe_checkpoint(const std::string& path, bool verify) {
  h5::File f = h5::open_file(path);
  const CheckpointMeta m = ckpt::read_meta(f.id.get(), path);
  std::string out = fmt::format("checkpoint {} (format {}, written by temper {})\n", path,
                                m.format_version, m.creator_version);
  out += fmt::format("step {}, tokens seen {}, optimizer {}\n", m.step, m.tokens_seen,
                     m.has_optimizer ? fmt::format("AdamW, {} steps taken", m.optimizer_steps)
                                     : std::string("none (model only)"));
  if (m.schedule.total_steps > 0 && m.has_optimizer)
    out += fmt::format("lr {:g} at save ({} schedule: peak {:g}, warmup {}, {} steps, min ratio {:g})\n",
                       m.lr, m.schedule.kind, m.schedule.lr, m.schedule.warmup_steps,
                       m.schedule.total_steps, m.schedule.min_lr_ratio);
  out += fmt::format("grid at save: world {} = dp {} x tp {}, ZeRO-{}\n", m.grid.world, m.grid.dp,
                     m.grid.tp, m.grid.zero);
  if (m.loss_scale > 0)
    out += fmt::format("loss scale {:g} ({} good steps in the window, {} overflows)\n", m.loss_scale,
                       m.loss_scale_good_steps, m.loss_scale_overflows);
  if (m.skipped_steps || m.nonfinite_streak)
    out += fmt::format("non-finite steps: {} skipped, {} in a row at save\n", m.skipped_steps,
                       m.nonfinite_streak);
  if (!m.source.empty()) out += fmt::format("source: {}\n", m.source);
  if (m.has_base)
    out += fmt::format("frozen base (not stored here): {}, checksum {:016x}\n",
                       m.base_model.empty() ? std::string("drawn from the run's seed") : m.base_model,
                       m.base_checksum);
  for (const auto& [k, v] : m.extra) out += fmt::format("{}: {}\n", k, v);

  const ModelConfig mc = with_context(path + ": /meta model_config", [&] {
    return model_config_from_hf_json(nlohmann::json::parse(m.model_config_json, nullptr, false),
                                     path + ": /meta model_config");
  });
  std::vector<TensorInfo> model, optim;
  int64_t params = 0;
  h5::Id group = h5::open_group(f.id.get(), "model", path);
  for (const std::string& n : h5::children(group.get(), path + ": /model")) {
    model.push_back(tensor_info(f, "model/" + n));
    int64_t numel = 1;
    for (int64_t d : model.back().shape) numel *= d;
    params += numel;
  }
  out += fmt::format("model: {} ({} layers, hidden {}, {} heads / {} kv, vocab {}), {}, {} tensors, "
                     "{:.3f}M parameters\n", mc.model_type, mc.num_hidden_layers, mc.hidden_size,
                     mc.num_attention_heads, mc.num_key_value_heads, mc.vocab_size, m.model_dtype,
                     model.size(), double(params) / 1e6);
  if (m.has_optimizer) {
    h5::Id og = h5::open_group(f.id.get(), "optim", path);
    for (const std::string& n : h5::children(og.get(), path + ": /optim"))
      for (const char* k : {"master", "m", "v"}) optim.push_back(tensor_info(f, fmt::format("optim/{}/{}", n, k)));
  }
  for (const char* g : {"rng", "data"}) {
    if (!h5::exists(f.id.get(), g)) continue;
    h5::Id grp = h5::open_group(f.id.get(), g, path);
    out += fmt::format("/{}: {} entries\n", g, h5::children(grp.get(), path).size());
  }
  out += "tensors:\n";
  for (const TensorInfo& t : model)
    out += fmt::format("  {:<60} {:<4} [{}]\n", t.name, dtype_name(t.dtype), fmt::join(t.shape, ", "));
  if (!optim.empty())
    out += fmt::format("  optim/<name>/{{master,m,v}}: f32 AdamW state of {} tensors\n", optim.size() / 3);
  out += "config:\n" + (m.config_yaml.empty() ? std::string("  (none)\n") : indent(m.config_yaml));
  if (verify) {
    ckpt::Tally tally;
    for (const auto* list : {&model, &optim})
      for (const TensorInfo& t : *list) check_whole(f, t, tally);
    ckpt::verify(tally, path);
    out += fmt::format("checksums: {} tensors verified\n", tally.names.size());
  }
  return out;
}

}  // namespace temper
