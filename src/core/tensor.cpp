#include "core/tensor.h"

#include <fmt/format.h>

#include "core/error.h"

namespace temper {

std::string Device::str() const {
  return kind == DeviceKind::CPU ? std::string("cpu") : fmt::format("cuda:{}", index);
}

Shape::Shape(std::initializer_list<int64_t> d) {
  TEMPER_CHECK(d.size() <= kMaxDims, "at most {} dims, got {}", kMaxDims, d.size());
  for (int64_t v : d) dims[ndim++] = v;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= dims[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (ndim != o.ndim) return false;
  for (int i = 0; i < ndim; ++i)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return s + "]";
}

Tensor Tensor::view(Shape shape) const {
  TEMPER_CHECK(shape.numel() == numel(), "view {} of {} changes the element count",
               shape.str(), shape_.str());
  return Tensor(data_, dtype_, shape, device_);
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  TEMPER_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= size(0),
               "rows [{}, {}) of {}", begin, end, shape_.str());
  Shape s = shape_;
  s.dims[0] = end - begin;
  int64_t row = ndim() ? numel() / std::max<int64_t>(size(0), 1) : 0;
  return Tensor(static_cast<char*>(data_) + begin * row * int64_t(dtype_size(dtype_)), dtype_, s,
                device_);
}

Tensor Tensor::flat(int64_t offset, int64_t n) const {
  TEMPER_CHECK(0 <= offset && offset + n <= numel(), "flat [{}, {}) of {}", offset, offset + n,
               shape_.str());
  return Tensor(static_cast<char*>(data_) + offset * int64_t(dtype_size(dtype_)), dtype_, Shape{n},
                device_);
}

std::string Tensor::str() const {
  return fmt::format("{}{} on {}", dtype_name(dtype_), shape_.str(), device_.str());
}

void expect_tensor(const Tensor& t, DType dtype, const Shape& shape, const char* what) {
  if (!t.defined()) fail("{}: tensor is missing (expected {}{})", what, dtype_name(dtype), shape.str());
  if (t.dtype() != dtype || !(t.shape() == shape))
    fail("{}: expected {}{}, got {}{}", what, dtype_name(dtype), shape.str(), dtype_name(t.dtype()),
         t.shape().str());
}

}  // namespace temper
