#include "support/allocation_probe.h"

#include <atomic>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#define TEMPER_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEMPER_SANITIZED 1
#endif
#endif

namespace temper::test {
namespace {
std::atomic<size_t> largest{0};
}

#ifdef TEMPER_SANITIZED
bool allocation_probe_available() { return false; }
#else
bool allocation_probe_available() { return true; }
#endif

void reset_largest_allocation() { largest.store(0); }
size_t largest_allocation() { return largest.load(); }

}  // namespace temper::test

#ifndef TEMPER_SANITIZED
// Replaces the global operator new (libstdc++'s operator delete frees with free(); new[]
// and the nothrow forms call this one).
void* operator new(size_t size) {
  size_t seen = temper::test::largest.load(std::memory_order_relaxed);
  while (size > seen && !temper::test::largest.compare_exchange_weak(seen, size)) {
  }
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
#endif
