// Small HDF5 helpers for checkpoints: owned handles, files opened alone or over MPI-IO,
// the 16-bit float types, attributes and dataset queries. Every failure is a
// temper::Error naming the file and the object; HDF5's own error printing is off.
#pragma once
#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"

namespace temper::h5 {

// Turns off HDF5's printing of its error stack (we report errors ourselves).
void quiet();

// An HDF5 identifier closed on scope exit (files, groups, datasets, spaces, types, lists).
class Id {
 public:
  Id() = default;
  explicit Id(hid_t id) : id_(id) {}
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Id& operator=(Id&& o) noexcept {
    reset();
    id_ = std::exchange(o.id_, H5I_INVALID_HID);
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  ~Id() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now; returns false when HDF5 reports an error (e.g. a file's final flush).
  bool close();

 private:
  void reset() { (void)close(); }
  hid_t id_ = H5I_INVALID_HID;
};

// An open checkpoint file and how to move data in it: alone (sec2 driver, default
// transfers) or over MPI-IO with collective transfers.
struct File {
  Id id;
  std::string path;
  MPI_Comm comm = MPI_COMM_NULL;  // MPI_COMM_NULL: this process alone
  Id transfer;                    // dataset transfer list (collective under MPI-IO)
  bool parallel() const { return comm != MPI_COMM_NULL; }
};
// Creates (truncating): `comm` MPI_COMM_NULL for one process, else collective over comm.
File create_file(const std::string& path, MPI_Comm comm);
// Closes a file whose writing failed (disk full, file-size limit) for good. HDF5 1.10
// cannot close a file after a failed flush: its metadata cache stays mid-flush, H5Fclose
// fails yet frees the file, and the id left behind crashes HDF5's exit handler. So a
// serial file's descriptor is first pointed at a scratch sink, where one more flush
// empties the cache; the close then succeeds. (An MPI-IO handle cannot be redirected.)
void abandon(File& f);
// Opens read-only, this process alone (every rank may do so at once).
File open_file(const std::string& path);

// File types of the tensor dtypes: IEEE f32 LE, and 16-bit floats with the bf16 (8-bit
// exponent, 7-bit mantissa) and IEEE f16 bit layouts, so readers decode real values.
hid_t file_type(DType t);
// The dtype of a dataset's type (F32, BF16, F16), or throws naming `what`.
DType dtype_of(hid_t type, const std::string& what);

// Objects and attributes.
bool exists(hid_t loc, const std::string& path);  // every component of a/b/c exists
Id create_group(hid_t loc, const std::string& name, const std::string& file);
Id open_group(hid_t loc, const std::string& name, const std::string& file);
std::vector<std::string> children(hid_t group, const std::string& what);  // link names

void write_attr(hid_t obj, const char* name, int64_t value);
void write_attr(hid_t obj, const char* name, uint64_t value);
void write_attr(hid_t obj, const char* name, double value);
void write_attr(hid_t obj, const char* name, const std::string& value);
// `what` names the object in errors ("x.h5: /meta").
bool has_attr(hid_t obj, const char* name);
int64_t read_int_attr(hid_t obj, const char* name, const std::string& what);
uint64_t read_u64_attr(hid_t obj, const char* name, const std::string& what);
double read_double_attr(hid_t obj, const char* name, const std::string& what);
std::string read_string_attr(hid_t obj, const char* name, const std::string& what);
std::vector<std::string> attr_names(hid_t obj);

// The extent of a dataset's dataspace, checked against its file: the data it declares
// (elements times element size) must fit in the file's bytes, so a damaged or hostile file
// cannot make a reader allocate more than the file holds. `what` names it in errors.
std::vector<int64_t> extent(hid_t dataset, const std::string& what);

}  // namespace temper::h5
