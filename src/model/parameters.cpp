#include "model/parameters.h"

#include "core/error.h"

namespace temper {

size_t ParameterSet::declare(std::string name, Shape full_shape, ParamInit init,
                             bool is_norm_or_bias, int split_dim, int shards, int shard) {
  TEMPER_CHECK(!values_.defined(), "declare({}) after allocate()", name);
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
  p.offset = numel_;
  numel_ += shape.numel();
  params_.push_back(std::move(p));
  return params_.size() - 1;
}

void ParameterSet::allocate(DType dtype, int64_t pad_multiple, bool gradients) {
  TEMPER_CHECK(pad_multiple >= 1, "pad_multiple {}", pad_multiple);
  const int64_t padded = (numel_ + pad_multiple - 1) / pad_multiple * pad_multiple;
  arena_ = std::make_unique<Arena>(backend_.memory(), "parameters");
  values_ = arena_->allocate(dtype, Shape{padded});
  if (gradients) grads_ = arena_->allocate(dtype, Shape{padded});
  for (auto& p : params_) {
    p.value = values_.flat(p.offset, p.shape.numel()).view(p.shape);
    if (gradients) p.grad = grads_.flat(p.offset, p.shape.numel()).view(p.shape);
  }
  backend_.zero(values_);
  if (gradients) backend_.zero(grads_);
}

void ParameterSet::init(uint64_t seed, float std) {
  for (auto& p : params_) {
    switch (p.init) {
      case ParamInit::Normal: {
        const RngStream stream = rng_stream(seed, RngPurpose::Init, name_hash(p.name));
        if (p.split_dim <= 0) {  // whole tensor, or a block of whole rows
          backend_.fill_normal(p.value, stream, uint64_t(p.shard) * uint64_t(p.shape.numel()), std);
        } else {  // a block of columns: each row is a strided piece of the full tensor
          const int64_t rows = p.shape[0], cols = p.shape.numel() / rows;
          const int64_t full_cols = p.full_shape.numel() / rows;
          Tensor m = p.value.view(Shape{rows, cols});
          for (int64_t r = 0; r < rows; ++r)
            backend_.fill_normal(m.slice_rows(r, r + 1), stream,
                                 uint64_t(r * full_cols + p.shard * cols), std);
        }
        break;
      }
      case ParamInit::Ones: backend_.fill(p.value, 1.0f); break;
      case ParamInit::Zeros: backend_.zero(p.value); break;
    }
  }
}

void ParameterSet::zero_grads() {
  if (grads_.defined()) backend_.zero(grads_);
}

void ParameterSet::bind_grads(size_t first, size_t last, Tensor buffer) {
  TEMPER_CHECK(first < last && last <= params_.size(), "bind_grads [{}, {})", first, last);
  const int64_t base = params_[first].offset;
  for (size_t i = first; i < last; ++i) {
    Parameter& p = params_[i];
    p.grad = buffer.flat(p.offset - base, p.shape.numel()).view(p.shape);
  }
}

Parameter* ParameterSet::find(const std::string& name) {
  for (auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

Parameter& ParameterSet::at(const std::string& name) {
  Parameter* p = find(name);
  if (!p) fail("no parameter named '{}'", name);
  return *p;
}

int64_t ParameterSet::trainable_numel() const {
  int64_t n = 0;
  for (auto& p : params_)
    if (p.trainable) n += p.shape.numel();
  return n;
}

}  // namespace temper
