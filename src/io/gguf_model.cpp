#include "io/gguf_model.h"

#include <set>

#include "core/error.h"
#include "core/log.h"
#include "io/hf_model.h"

namespace temper {

void load_gguf_weights(Transformer& model, const GgufFile& file) {
  const std::string& path = file.path;
  std::set<std::string> loaded;
  std::vector<std::string> unused;
  for (const GgufTensor& t : file.tensors) {
    std::string name;
    try {
      name = hf_name_for_gguf(t.name);
    } catch (const Error&) {  // e.g. rope_freqs: not a parameter of ours
      unused.push_back(t.name);
      continue;
    }
    Parameter* p = model.params().find(name);
    if (!p) {
      unused.push_back(t.name);
      continue;
    }
    if (t.numel() != p->full_shape.numel() || int(t.shape.size()) != p->full_shape.ndim)
      fail("{}: tensor '{}' ({}) has {} elements in {} dims, the model expects {}", path, t.name,
           name, t.numel(), t.shape.size(), p->full_shape.str());
    for (int d = 0; d < p->full_shape.ndim; ++d)
      if (t.shape[d] != p->full_shape[d])
        fail("{}: tensor '{}' ({}) has the wrong shape for {}", path, t.name, name,
             p->full_shape.str());
    set_parameter(model.backend(), *p, gguf_tensor_to_hf(file, t, model.config()));
    loaded.insert(name);
  }
  for (const Parameter& p : model.params().all())
    if (p.init != ParamInit::Adapter && !loaded.count(p.name)) fail("{}: no tensor for parameter '{}'", path, p.name);
  if (!unused.empty())
    log::warn("{}: {} tensor(s) not used by the model (first: {})", path, unused.size(), unused.front());
}

}  // namespace temper
