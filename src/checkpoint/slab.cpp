#include "checkpoint/slab.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace temper::ckpt {

Block block_of(const Parameter& p) {
  const Shape& f = p.full_shape;
  if (f.ndim < 1 || f.ndim > 2)
    fail("tensor '{}' has shape {}: checkpoints hold 1-D and 2-D tensors", p.name, f.str());
  Block b;
  b.full.assign(f.dims.begin(), f.dims.begin() + f.ndim);
  b.rows = f.ndim == 2 ? f[0] : 1;
  b.cols = f.ndim == 2 ? f[1] : f[0];
  b.lrows = b.rows;
  b.lcols = b.cols;
  if (p.split_dim < 0 || p.shards == 1) return b;
  const bool by_columns = f.ndim == 1 || p.split_dim == 1;  // a split 1-D tensor is one row
  if (by_columns) {
    b.lcols = b.cols / p.shards;
    b.c0 = b.lcols * p.shard;
  } else {
    b.lrows = b.rows / p.shards;
    b.r0 = b.lrows * p.shard;
  }
  return b;
}

int64_t Selection::count() const {
  int64_t n = 0;
  for (const Rect& r : rects) n += r.nrows * r.ncols;
  return n;
}

void Selection::add(const Block& b, int64_t begin, int64_t end) {
  TEMPER_CHECK(0 <= begin && begin <= end && end <= b.numel(), "piece [{}, {}) of a block of {}",
               begin, end, b.numel());
  cols = b.cols;
  ndim = int(b.full.size());
  const int64_t lc = b.lcols;
  while (begin < end) {
    const int64_t row = begin / lc, col = begin % lc;
    if (col != 0 || end - begin < lc) {  // a partial row
      const int64_t n = std::min(lc - col, end - begin);
      rects.push_back({b.r0 + row, 1, b.c0 + col, n});
      begin += n;
    } else {  // whole rows of the block
      const int64_t nr = (end - begin) / lc;
      rects.push_back({b.r0 + row, nr, b.c0, lc});
      begin += nr * lc;
    }
  }
}

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Selects `s` in the dataset's file space (nothing when empty).
h5::Id file_space(hid_t dataset, const Selection& s) {
  h5::Id space(H5Dget_space(dataset));
  if (s.rects.empty()) {
    H5Sselect_none(space.get());
    return space;
  }
  bool first = true;
  for (const Rect& r : s.rects) {
    hsize_t start[2], count[2];
    if (s.ndim == 2) {
      start[0] = hsize_t(r.row), start[1] = hsize_t(r.col);
      count[0] = hsize_t(r.nrows), count[1] = hsize_t(r.ncols);
    } else {
      start[0] = hsize_t(r.col), count[0] = hsize_t(r.ncols);
    }
    H5Sselect_hyperslab(space.get(), first ? H5S_SELECT_SET : H5S_SELECT_OR, start, nullptr, count,
                        nullptr);
    first = false;
  }
  return space;
}

h5::Id memory_space(const Selection& s) {
  const hsize_t n = hsize_t(std::max<int64_t>(s.count(), 1));
  h5::Id space(H5Screate_simple(1, &n, nullptr));
  if (s.count() == 0) H5Sselect_none(space.get());
  return space;
}

}  // namespace

uint64_t checksum(const Selection& s, const void* data, size_t element_bytes) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t sum = 0;
  for (const Rect& r : s.rects)
    for (int64_t i = r.row; i < r.row + r.nrows; ++i)
      for (int64_t j = r.col; j < r.col + r.ncols; ++j, p += element_bytes) {
        uint64_t bits = 0;
        std::memcpy(&bits, p, element_bytes);  // little-endian host
        sum += splitmix64(splitmix64(uint64_t(i * s.cols + j)) ^ bits);
      }
  return sum;
}

void write_selection(const h5::File& f, hid_t dataset, hid_t type, const Selection& s,
                     const void* data, const std::string& what) {
  h5::Id fs = file_space(dataset, s), ms = memory_space(s);
  const uint64_t dummy = 0;
  if (H5Dwrite(dataset, type, ms.get(), fs.get(), f.transfer.get(), data ? data : &dummy) < 0)
    fail("{}: cannot write '{}' (disk full?)", f.path, what);
}

void read_selection(const h5::File& f, hid_t dataset, hid_t type, const Selection& s, void* data,
                    const std::string& what) {
  h5::Id fs = file_space(dataset, s), ms = memory_space(s);
  uint64_t dummy = 0;
  if (H5Dread(dataset, type, ms.get(), fs.get(), f.transfer.get(), data ? data : &dummy) < 0)
    fail("{}: cannot read '{}' (truncated or corrupt file?)", f.path, what);
}

}  // namespace temper::ckpt
