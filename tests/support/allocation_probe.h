// The largest single allocation (operator new) made by this process since the last reset,
// for tests that a reader refuses a huge declared size before allocating anything for it.
// Sanitizer builds keep their own operator new (it checks new/delete pairing), so there
// the probe is unavailable and such tests check the error alone; the fuzz targets bound
// every allocation there instead (-malloc_limit_mb, tests/fuzz/run-fuzz.sh).
#pragma once
#include <cstddef>

namespace temper::test {

bool allocation_probe_available();
void reset_largest_allocation();
size_t largest_allocation();

}  // namespace temper::test
