// Memory: a device memory resource with peak accounting, and bump-pointer arenas on
// top of it. One arena per group of tensors (parameters, gradients, activations,
// scratch), each normally one flat allocation sized up front.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace temper {

// Raw device memory with byte accounting. Backends implement it (host malloc, cudaMalloc).
class MemoryResource {
 public:
  virtual ~MemoryResource() = default;
  void* allocate(size_t bytes);
  void deallocate(void* p, size_t bytes);
  size_t bytes_in_use() const { return in_use_; }
  size_t peak_bytes() const { return peak_; }
  void reset_peak() { peak_ = in_use_; }
  virtual Device device() const = 0;

 protected:
  virtual void* raw_allocate(size_t bytes) = 0;
  virtual void raw_deallocate(void* p) = 0;

 private:
  size_t in_use_ = 0;
  size_t peak_ = 0;
};

// Host memory (256-byte aligned).
class HostMemory final : public MemoryResource {
 public:
  Device device() const override { return {DeviceKind::CPU, 0}; }

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_deallocate(void* p) override;
};

// Bump allocator. Grows by whole blocks when a request does not fit; mark()/release()
// pop everything allocated after a mark (scratch reuse between layers).
class Arena {
 public:
  Arena(MemoryResource& memory, std::string name, size_t block_bytes = 0);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  Tensor allocate(DType dtype, Shape shape);
  void* allocate_bytes(size_t bytes);

  struct Mark {
    size_t block = 0, offset = 0;
  };
  Mark mark() const;
  void release(Mark m);
  void reset() { release(Mark{}); }

  size_t used_bytes() const;
  size_t peak_bytes() const { return peak_; }
  size_t capacity_bytes() const;
  const std::string& name() const { return name_; }
  Device device() const { return memory_.device(); }

  static constexpr size_t kAlign = 256;

 private:
  struct Block {
    char* data;
    size_t size;
    size_t used;
  };
  MemoryResource& memory_;
  std::string name_;
  size_t block_bytes_;
  std::vector<Block> blocks_;
  size_t current_ = 0;  // index of the block being filled
  size_t peak_ = 0;
};

}  // namespace temper
