#include "core/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "core/error.h"

namespace temper {

void* MemoryResource::allocate(size_t bytes) {
  void* p = raw_allocate(bytes);
  in_use_ += bytes;
  peak_ = std::max(peak_, in_use_);
  return p;
}

void MemoryResource::deallocate(void* p, size_t bytes) {
  if (!p) return;
  raw_deallocate(p);
  in_use_ -= bytes;
}

void* HostMemory::raw_allocate(size_t bytes) {
  // 256-byte aligned like cudaMalloc, so arena offsets keep the same alignment.
  void* p = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  if (!p) fail("host out of memory allocating {} bytes", bytes);
  return p;
}

void HostMemory::raw_deallocate(void* p) { std::free(p); }

Arena::Arena(MemoryResource& memory, std::string name, size_t block_bytes)
    : memory_(memory), name_(std::move(name)), block_bytes_(block_bytes) {}

Arena::~Arena() {
  for (auto& b : blocks_) memory_.deallocate(b.data, b.size);
}

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

void* Arena::allocate_bytes(size_t bytes) {
  bytes = align_up(std::max<size_t>(bytes, 1), kAlign);
  while (current_ < blocks_.size()) {
    Block& b = blocks_[current_];
    if (b.used + bytes <= b.size) {
      void* p = b.data + b.used;
      b.used += bytes;
      peak_ = std::max(peak_, used_bytes());
      return p;
    }
    if (current_ + 1 == blocks_.size()) break;
    ++current_;
  }
  size_t size = std::max(bytes, block_bytes_);
  Block b{static_cast<char*>(memory_.allocate(size)), size, bytes};
  blocks_.push_back(b);
  current_ = blocks_.size() - 1;
  peak_ = std::max(peak_, used_bytes());
  return b.data;
}

Tensor Arena::allocate(DType dtype, Shape shape) {
  size_t bytes = size_t(shape.numel()) * dtype_size(dtype);
  return Tensor(allocate_bytes(bytes), dtype, shape, memory_.device());
}

Arena::Mark Arena::mark() const {
  if (blocks_.empty()) return {};
  return {current_, blocks_[current_].used};
}

void Arena::release(Mark m) {
  for (size_t i = m.block + 1; i < blocks_.size(); ++i) blocks_[i].used = 0;
  if (m.block < blocks_.size()) blocks_[m.block].used = m.offset;
  current_ = m.block;
}

size_t Arena::used_bytes() const {
  size_t n = 0;
  for (auto& b : blocks_) n += b.used;
  return n;
}

size_t Arena::capacity_bytes() const {
  size_t n = 0;
  for (auto& b : blocks_) n += b.size;
  return n;
}

}  // namespace temper
