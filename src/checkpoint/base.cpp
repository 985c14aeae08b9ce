#include "checkpoint/base.h"

#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/slab.h"
#include "checkpoint/tally.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/safetensors.h"
#include "data/model_tokenizer.h"
#include "io/hf_model.h"
#include "parallel/grid.h"
#include "peft/nf4.h"

namespace temper {

uint64_t parameter_checksum(Transformer& model, DeviceGrid* grid,
                            const std::function<bool(const Parameter&)>& include) {
  const int dp_rank = grid ? grid->dp_rank() : 0, tp_rank = grid ? grid->tp_rank() : 0;
  std::vector<uint64_t> sum = {0};
  if (dp_rank == 0) {
    for (const Parameter& p : model.params().all()) {
      if (!include(p) || (p.split_dim < 0 && tp_rank != 0)) continue;
      const ckpt::Block b = ckpt::block_of(p);
      ckpt::Selection s;
      s.cols = b.cols, s.ndim = int(b.full.size());
      s.add(b, 0, b.numel());
      const uint64_t weight = 2 * uint64_t(name_hash(p.name)) + 1;
      if (p.quantized) {  // NF4 (QLoRA): the values it dequantizes to, f32
        const std::vector<float> values = nf4_parameter_values(model.backend(), p);
        sum[0] += ckpt::checksum(s, values.data(), sizeof(float)) * weight;
        continue;
      }
      std::vector<uint8_t> host(p.value.nbytes());
      model.backend().copy_to_host(host.data(), p.value);
      sum[0] += ckpt::checksum(s, host.data(), dtype_size(p.value.dtype())) * weight;
    }
  }
  ckpt::sum_over_ranks(ckpt::file_comm(grid), sum);
  return sum[0];
}

void load_base_model(Transformer& model, const std::string& base, uint64_t seed, DeviceGrid* grid) {
  namespace fs = std::filesystem;
  if (base.empty()) return model.init_weights(seed);
  if (!fs::exists(base))
    fail("the frozen base model '{}' is not there any more (moved or deleted?); a PEFT "
         "checkpoint refers to its base instead of storing it", base);
  if (fs::is_directory(base)) return load_hf_weights(model, base);
  if (is_gguf_file(base)) return load_gguf_weights(model, read_gguf(base));
  if (is_checkpoint_file(base)) {
    load_checkpoint(base, model, nullptr, grid);
    return;
  }
  fail("the base model '{}' is neither a Hugging Face directory, a GGUF file nor a checkpoint", base);
}

std::unique_ptr<Transformer> load_checkpoint_model(const std::string& checkpoint, Backend& backend) {
  const CheckpointMeta meta = read_checkpoint_meta(checkpoint);
  const ModelConfig mc = with_context(checkpoint + ": /meta model_config", [&] {
    return model_config_from_hf_json(nlohmann::json::parse(meta.model_config_json, nullptr, false),
                                     "config.json text");
  });
  PeftSpec spec;
  if (auto it = meta.extra.find("peft"); it != meta.extra.end())
    spec = with_context(checkpoint + ": /meta/extra peft", [&] {
      return peft_spec_from_json(nlohmann::json::parse(it->second));
    });
  auto model = std::make_unique<Transformer>(mc, backend, parse_dtype(meta.model_dtype), 1,
                                             TensorParallel{}, false, spec);
  if (meta.has_base) {
    uint64_t seed = 0;
    try {
      const YAML::Node c = YAML::Load(meta.config_yaml);
      if (c["seed"]) seed = c["seed"].as<uint64_t>();
    } catch (const YAML::Exception&) {
      fail("{}: /meta config is not readable YAML; the seed of its base is unknown", checkpoint);
    }
    with_context(checkpoint, [&] { load_base_model(*model, meta.base_model, seed); });
  }
  load_checkpoint(checkpoint, *model, nullptr, nullptr);
  return model;
}

}  // namespace temper
