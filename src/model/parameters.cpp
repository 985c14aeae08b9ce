#include "model/parameters.h"

#include "core/error.h"

namespace temper {

size_t ParameterSet::declare(std::string name, Shape shape, ParamInit init, bool is_norm_or_bias) {
  TEMPER_CHECK(!values_.defined(), "declare({}) after allocate()", name);
  Parameter p;
  p.name = std::move(name);
  p.shape = shape;
  p.init = init;
  p.is_norm_or_bias = is_norm_or_bias;
  p.offset = numel_;
  numel_ += shape.numel();
  params_.push_back(std::move(p));
  return params_.size() - 1;
}

void ParameterSet::allocate(DType dtype, int64_t pad_multiple) {
  TEMPER_CHECK(pad_multiple >= 1, "pad_multiple {}", pad_multiple);
  const int64_t padded = (numel_ + pad_multiple - 1) / pad_multiple * pad_multiple;
  arena_ = std::make_unique<Arena>(backend_.memory(), "parameters");
  values_ = arena_->allocate(dtype, Shape{padded});
  grads_ = arena_->allocate(dtype, Shape{padded});
  for (auto& p : params_) {
    p.value = values_.flat(p.offset, p.shape.numel()).view(p.shape);
    p.grad = grads_.flat(p.offset, p.shape.numel()).view(p.shape);
  }
  backend_.zero(values_);
  backend_.zero(grads_);
}

void ParameterSet::init(uint64_t seed, float std) {
  for (auto& p : params_) {
    switch (p.init) {
      case ParamInit::Normal:
        backend_.fill_normal(p.value, rng_stream(seed, RngPurpose::Init, name_hash(p.name)), 0, std);
        break;
      case ParamInit::Ones: backend_.fill(p.value, 1.0f); break;
      case ParamInit::Zeros: backend_.zero(p.value); break;
    }
  }
}

void ParameterSet::zero_grads() { backend_.zero(grads_); }

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
