// Structure-aware mutations of HDF5 files for the HDF5 fuzz targets. Random bytes rarely
// get past HDF5's own parsing (its metadata is checksummed), so most of what our
// validators check would never be reached from mutated raw files: instead the input
// drives edits, made with the HDF5 API, of a valid file: attributes set to other values
// and types, datasets replaced by others of any shape, type and contents, objects deleted.
#pragma once
#include <fuzzer/FuzzedDataProvider.h>

#include <string>

namespace temper::fuzz {

// Applies the edits the input describes to the HDF5 file at `path` (read-write).
void apply_h5_edits(const std::string& path, FuzzedDataProvider& in);

// Input mode of the HDF5 targets: true when the input is an HDF5 file itself (it begins
// with HDF5's signature), else it describes edits of a seed file.
bool is_hdf5_file(const uint8_t* data, size_t size);

}  // namespace temper::fuzz
