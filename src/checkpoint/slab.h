// Which elements of a full logical tensor a rank holds, as HDF5 hyperslabs, and the
// layout-independent checksum of tensor data.
//
// A tensor of full shape [R, C] (a 1-D tensor [C] is one row) is held by a rank as a
// block: rows [r0, r0 + lrows) × cols [c0, c0 + lcols) (the whole tensor, a block of rows
// for split_dim 0, a block of columns for split_dim 1). Optimizer pieces are flat ranges
// [begin, end) of that block in its row-major order, i.e. a partial row, whole rows and a
// partial row: at most three rectangles of the full tensor.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/h5.h"
#include "model/parameters.h"

namespace temper::ckpt {

struct Block {
  std::vector<int64_t> full;  // the dataset's shape (1 or 2 dims)
  int64_t rows = 1, cols = 1;                    // full tensor as [rows, cols]
  int64_t r0 = 0, c0 = 0, lrows = 1, lcols = 1;  // this rank's block
  int64_t numel() const { return lrows * lcols; }
};
Block block_of(const Parameter& p);

struct Rect {
  int64_t row, nrows, col, ncols;
};

// A set of elements of one tensor, in the tensor's row-major (file) order.
struct Selection {
  std::vector<Rect> rects;
  int64_t cols = 1;  // of the full tensor
  int ndim = 1;
  int64_t count() const;
  // Elements [begin, end) of `b`, in block order; add pieces in increasing `begin`.
  void add(const Block& b, int64_t begin, int64_t end);
};

// Σ over the elements of hash(flat index in the full tensor, stored bits), mod 2^64: sums
// over disjoint parts add up to the whole tensor's value whatever the partition.
uint64_t checksum(const Selection& s, const void* data, size_t element_bytes);

// Reads / writes `data` ([count()] elements of memory type `type`) at the selection of
// `dataset`. Under MPI-IO every rank of the file must call it (collective transfer),
// with an empty selection if it has nothing; `what` names the dataset in errors.
void write_selection(const h5::File& f, hid_t dataset, hid_t type, const Selection& s,
                     const void* data, const std::string& what);
void read_selection(const h5::File& f, hid_t dataset, hid_t type, const Selection& s, void* data,
                    const std::string& what);

}  // namespace temper::ckpt
