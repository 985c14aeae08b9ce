#include "model/parameters.h"

#include "core/error.h"
#include "peft/nf4.h"

#include <vector>

namespace temper {

size_t ParameterSet::declare(std::string name, Shape full_shape, ParamInit init,
                             bool is_norm_or_bias, int split_dim, int shards, int shard) {
  TEMPER_CHECK(!allocated(), "declare({}) after allocate()", name);
  Shape shape = full_shape;
  if (split_dim < 0) shards = 1, shard = 0;  // replicated on every rank
  if (shards > 1) {
    TEMPER_CHECK(split_dim >= 0 && split_dim < shape.ndim, "{}: split dim {}", name, split_dim);
    if (shape.dims[split_dim] % shards)
      fail("{}: dimension {} of {} does not divide into {} tensor-parallel shards", name, split_dim,
           full_shape.str(), shards);
    shape.dims[split_dim] /= shards;
  }
  Parameter p;
  p.name = std::move(name);
  p.shape = shape;
  p.full_shape = full_shape;
  p.split_dim = shards > 1 ? split_dim : -1;
  p.shards = shards;
  p.shard = shard;
  p.init = init;
  p.is_norm_or_bias = is_norm_or_bias;
  params_.push_back(std::move(p));
  return params_.size() - 1;
}

void ParameterSet::allocate(DType dtype, int64_t pad_multiple, bool gradients) {
  TEMPER_CHECK(pad_multiple >= 1, "pad_multiple {}", pad_multiple);
  TEMPER_CHECK(!allocated(), "allocate() twice");
  trainable_numel_ = frozen_numel_ = 0;
  for (auto& p : params_) {
    if (p.quantized) {
      if (p.trainable) fail("{}: an NF4-quantized weight is frozen, it cannot train", p.name);
      continue;
    }
    int64_t& region = p.trainable ? trainable_numel_ : frozen_numel_;
    p.offset = region;
    region += p.shape.numel();
  }
  const int64_t padded = (trainable_numel_ + pad_multiple - 1) / pad_multiple * pad_multiple;
  arena_ = std::make_unique<Arena>(backend_.memory(), "parameters");
  values_ = arena_->allocate(dtype, Shape{padded});
  frozen_ = arena_->allocate(dtype, Shape{frozen_numel_});
  if (gradients) grads_ = arena_->allocate(dtype, Shape{padded});
  for (auto& p : params_) {
    if (p.quantized) continue;
    p.value = (p.trainable ? values_ : frozen_).flat(p.offset, p.shape.numel()).view(p.shape);
    if (gradients && p.trainable) p.grad = grads_.flat(p.offset, p.shape.numel()).view(p.shape);
  }
  backend_.zero(values_);
  backend_.zero(frozen_);
  if (gradients) backend_.zero(grads_);
  allocate_quantized();
}

void ParameterSet::allocate_quantized() {
  quantized_bytes_ = 0;
  bool any = false;
  for (auto& p : params_) any |= p.quantized;
  if (!any) return;
  for (auto& p : params_) {
    if (!p.quantized) continue;
    const int64_t rows = p.shape[0], cols = p.shape[1], n = rows * cols;
    const int64_t full_cols = p.full_shape[1];
    if (p.shape.ndim != 2 || cols % kNf4Block || full_cols % kNf4Block)
      fail("{}: NF4 needs a matrix whose rows are a multiple of {} wide (this rank's: {}, whole: {})",
           p.name, kNf4Block, cols, full_cols);
    Nf4Weight& w = p.nf4;
    w.rows = rows, w.cols = cols, w.full_cols = full_cols;
    w.row0 = p.split_dim == 0 ? p.shard * rows : 0;
    w.col0 = p.split_dim == 1 ? p.shard * cols : 0;
    w.packed = arena_->allocate(DType::U8, Shape{n / 2});
    w.code = arena_->allocate(DType::F32, Shape{16});  // a file's own code books are kept
    backend_.copy_from_host(w.code, nf4_code().data());
    if (p.double_quant) {
      const int64_t whole_blocks = p.full_shape.numel() / kNf4Block;
      w.qabsmax = arena_->allocate(DType::U8, Shape{n / kNf4Block});
      w.nested_absmax = arena_->allocate(DType::F32, Shape{(whole_blocks + kNf4Nested - 1) / kNf4Nested});
      w.nested_map = arena_->allocate(DType::F32, Shape{256});
      backend_.copy_from_host(w.nested_map, dynamic_map().data());
    } else {
      w.absmax = arena_->allocate(DType::F32, Shape{n / kNf4Block});
    }
  }
  for (const auto& p : params_)  // the storage itself (without the arena's alignment)
    if (p.quantized)
      for (const Tensor* t : {&p.nf4.packed, &p.nf4.absmax, &p.nf4.qabsmax, &p.nf4.nested_absmax,
                              &p.nf4.code, &p.nf4.nested_map})
        if (t->defined()) quantized_bytes_ += t->nbytes();
}

void ParameterSet::init_quantized(size_t index, uint64_t seed, float std) {
  Parameter& p = params_[index];
  const RngStream stream = rng_stream(seed, RngPurpose::Init, name_hash(p.name));
  std::vector<float> whole(size_t(p.full_shape.numel()));  // the dense draw init() would make
  for (size_t i = 0; i < whole.size(); ++i) whole[i] = stream.normal(i) * std;
  set_nf4_parameter(backend_, p, nf4_quantize(whole.data(), int64_t(whole.size()), p.double_quant));
}

int64_t ParameterSet::quantized_numel() const {
  int64_t n = 0;
  for (const auto& p : params_)
    if (p.quantized) n += p.shape.numel();
  return n;
}

void ParameterSet::draw(size_t index, uint64_t seed, Draw kind, float scale) {
  Parameter& p = params_[index];
  const RngStream stream = rng_stream(seed, RngPurpose::Init, name_hash(p.name));
  // Element (r, c) of this shard is element `first(r) + c` of the full tensor's stream: a
  // block of whole rows is one run; a block of columns is one run per row.
  const int64_t rows = p.split_dim == 1 ? p.shape[0] : 1;
  const int64_t cols = p.shape.numel() / rows, full_cols = p.full_shape.numel() / rows;
  auto first = [&](int64_t r) {
    return p.split_dim == 1 ? uint64_t(r * full_cols + p.shard * cols)
                            : uint64_t(p.shard) * uint64_t(p.shape.numel());
  };
  Tensor m = p.value.view(Shape{rows, cols});
  if (kind == Draw::Normal) {
    for (int64_t r = 0; r < rows; ++r) backend_.fill_normal(m.slice_rows(r, r + 1), stream, first(r), scale);
    return;
  }
  std::vector<float> host(size_t(p.shape.numel()));  // uniform: drawn on the host (adapters)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      host[size_t(r * cols + c)] = scale * (2.0f * stream.uniform(first(r) + uint64_t(c)) - 1.0f);
  Arena scratch(backend_.memory(), "uniform init");
  Tensor f32 = scratch.allocate(DType::F32, p.shape);
  backend_.copy_from_host(f32, host.data());
  backend_.copy(p.value, f32);
  backend_.synchronize();
}

void ParameterSet::init(uint64_t seed, float std) {
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = params_[i];
    if (p.quantized) {  // drawn dense on the host, then quantized
      init_quantized(i, seed, std);
      continue;
    }
    switch (p.init) {
      case ParamInit::Normal: draw(i, seed, Draw::Normal, std); break;
      case ParamInit::Ones: backend_.fill(p.value, 1.0f); break;
      case ParamInit::Zeros: backend_.zero(p.value); break;
      case ParamInit::Adapter: break;
    }
  }
}

void ParameterSet::zero_grads() {
  if (grads_.defined()) backend_.zero(grads_);
}

std::pair<int64_t, int64_t> ParameterSet::trainable_range(size_t first, size_t last) const {
  int64_t begin = -1, end = -1;
  for (size_t i = first; i < last; ++i) {
    const Parameter& p = params_[i];
    if (!p.trainable) continue;
    if (begin < 0) begin = p.offset;
    end = p.offset + p.shape.numel();
  }
  return begin < 0 ? std::pair<int64_t, int64_t>{0, 0} : std::pair{begin, end - begin};
}

void ParameterSet::bind_grads(size_t first, size_t last, Tensor buffer) {
  TEMPER_CHECK(first < last && last <= params_.size(), "bind_grads [{}, {})", first, last);
  const int64_t base = trainable_range(first, last).first;
  for (size_t i = first; i < last; ++i) {
    Parameter& p = params_[i];
    if (p.trainable) p.grad = buffer.flat(p.offset - base, p.shape.numel()).view(p.shape);
  }
}

Parameter* ParameterSet::find(const std::string& name) {
  for (auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

const Parameter* ParameterSet::find(const std::string& name) const {
  for (auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

Parameter& ParameterSet::at(const std::string& name) {
  Parameter* p = find(name);
  if (!p) fail("no parameter named '{}'", name);
  return *p;
}

size_t ParameterSet::index_of(const std::string& name) const {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].name == name) return i;
  fail("no parameter named '{}'", name);
}

}  // namespace temper
