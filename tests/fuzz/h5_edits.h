// Structure-aware mutations of HDF5 files for the HDF5 fuzz targets. Random bytes rarely
// get past HDF5's own parsing (its metadata is checksummed), so most of what our
// validators check would never be reached from mutated raw files: instead the input
// drives edits, made with the HDF5 API, of a valid file: attributes set to other values
// and types, datasets replaced by others of any shape, type and contents, objects deleted.
#pragma once
#include <fuzzer/FuzzedDataProvider.h>

#include <string>

#include "fuzz_input.h"

namespace temper::fuzz {

// Applies the edits the input describes to the HDF5 file at `path` (read-write).
void apply_h5_edits(const std::string& path, FuzzedDataProvider& in);

// Input mode of the HDF5 targets: true when the input is an HDF5 file itself (it begins
// with HDF5's signature), else it describes edits of a seed file.
bool is_hdf5_file(const uint8_t* data, size_t size);

// The raw mode: when the input is an HDF5 file, runs read(path) on it as a memory file
// and returns true; else returns false (the input describes edits).
template <typename Read>
bool read_as_hdf5_file(const uint8_t* data, size_t size, Read&& read) {
  if (!is_hdf5_file(data, size)) return false;
  const MemoryFile file(data, size);
  read(file.path());
  return true;
}

}  // namespace temper::fuzz
