#include "checkpoint/h5.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include <fmt/ranges.h>

#include "core/error.h"
#include "core/log.h"

namespace temper::h5 {

void quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

bool Id::close() {
  if (id_ < 0) return true;
  const hid_t id = std::exchange(id_, H5I_INVALID_HID);
  herr_t r = -1;
  switch (H5Iget_type(id)) {
    case H5I_FILE: r = H5Fclose(id); break;
    case H5I_GROUP: r = H5Gclose(id); break;
    case H5I_DATASET: r = H5Dclose(id); break;
    case H5I_DATASPACE: r = H5Sclose(id); break;
    case H5I_DATATYPE: r = H5Tclose(id); break;
    case H5I_ATTR: r = H5Aclose(id); break;
    case H5I_GENPROP_LST: r = H5Pclose(id); break;
    default: r = H5Idec_ref(id) < 0 ? -1 : 0; break;
  }
  return r >= 0;
}

namespace {

// Versions 1.8+ of the object formats: superblock and object headers carry checksums,
// so damaged metadata is detected when it is read.
Id access_list(const std::string& path, MPI_Comm comm) {
  Id fapl(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  if (comm != MPI_COMM_NULL) {
#ifdef H5_HAVE_PARALLEL
    if (H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL) < 0) fail("{}: cannot set up MPI-IO", path);
    H5Pset_coll_metadata_write(fapl.get(), true);  // metadata written in one collective
    H5Pset_alignment(fapl.get(), 1 << 20, 1 << 20);  // large tensors on 1 MiB boundaries
#else
    fail("{}: several ranks need parallel HDF5, and this build's HDF5 is serial", path);
#endif
  }
  return fapl;
}

File finish(File f, MPI_Comm comm) {
  f.comm = comm;
  f.transfer = Id(H5Pcreate(H5P_DATASET_XFER));
#ifdef H5_HAVE_PARALLEL
  if (comm != MPI_COMM_NULL) H5Pset_dxpl_mpio(f.transfer.get(), H5FD_MPIO_COLLECTIVE);
#endif
  return f;
}

}  // namespace

File create_file(const std::string& path, MPI_Comm comm) {
  quiet();
  Id fapl = access_list(path, comm);
  File f;
  f.path = path;
  f.id = Id(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()));
  if (!f.id.valid()) fail("{}: cannot create the checkpoint file (directory missing or not writable?)", path);
  return finish(std::move(f), comm);
}

namespace {

// Where an abandoned file's last writes go: a memory file when file sizes are unlimited
// (it takes the sparse writes and the final truncate of a full disk's file), /dev/null
// under a file-size limit (which memory files obey too).
int scratch_sink() {
  rlimit lim{};
  if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur == RLIM_INFINITY) {
    const int fd = memfd_create("temper-abandoned-checkpoint", MFD_CLOEXEC);
    if (fd >= 0) return fd;
  }
  return ::open("/dev/null", O_RDWR | O_CLOEXEC);
}

}  // namespace

void abandon(File& f) {
  if (!f.id.valid()) return;
  f.transfer.close();
  void* handle = nullptr;
  if (!f.parallel() && H5Fget_vfd_handle(f.id.get(), H5P_DEFAULT, &handle) >= 0 && handle) {
    const int sink = scratch_sink();
    if (sink >= 0) {
      ::dup2(sink, *static_cast<int*>(handle));  // the file's descriptor now writes to the sink
      ::close(sink);
      // Fails ("slist already enabled") after a failed flush, yet writes the stuck entries
      // out and leaves the cache clean, so the close below can succeed.
      (void)H5Fflush(f.id.get(), H5F_SCOPE_LOCAL);
    }
  }
  if (!f.id.close())
    log::warn("{}: HDF5 could not close the failed checkpoint; the process may crash at exit", f.path);
}

File open_file(const std::string& path) {
  quiet();
  if (!std::filesystem::exists(path)) fail("checkpoint '{}' does not exist", path);
  Id fapl = access_list(path, MPI_COMM_NULL);
  File f;
  f.path = path;
  f.id = Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()));
  if (!f.id.valid()) fail("{}: not a readable HDF5 file (truncated or corrupt?)", path);
  return finish(std::move(f), MPI_COMM_NULL);
}

namespace {

// A 16-bit float type: sign bit 15, `ebits` exponent bits above `mbits` mantissa bits.
hid_t make_half(size_t ebits, size_t mbits, size_t bias) {
  hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(t, 15, mbits, ebits, 0, mbits);
  H5Tset_precision(t, 16);
  H5Tset_size(t, 2);
  H5Tset_ebias(t, bias);
  return t;
}

}  // namespace

hid_t file_type(DType t) {
  static const hid_t bf16 = make_half(8, 7, 127);
  static const hid_t f16 = make_half(5, 10, 15);
  switch (t) {
    case DType::F32: return H5T_IEEE_F32LE;
    case DType::BF16: return bf16;
    case DType::F16: return f16;
    default: fail("checkpoint tensors are f32, bf16 or f16, not {}", dtype_name(t));
  }
}

DType dtype_of(hid_t type, const std::string& what) {
  for (DType t : {DType::F32, DType::BF16, DType::F16})
    if (H5Tequal(type, file_type(t)) > 0) return t;
  fail("{}: unsupported element type (expected f32, bf16 or f16 floats)", what);
}

bool exists(hid_t loc, const std::string& path) {
  size_t pos = 0;
  while (true) {
    const size_t slash = path.find('/', pos);
    const std::string prefix = path.substr(0, slash);
    if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (slash == std::string::npos) return true;
    pos = slash + 1;
  }
}

Id create_group(hid_t loc, const std::string& name, const std::string& file) {
  Id g(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!g.valid()) fail("{}: cannot create group '{}' (disk full?)", file, name);
  return g;
}

Id open_group(hid_t loc, const std::string& name, const std::string& file) {
  if (!exists(loc, name)) fail("{}: group '/{}' is missing", file, name);
  Id g(H5Gopen2(loc, name.c_str(), H5P_DEFAULT));
  if (!g.valid()) fail("{}: cannot open group '/{}' (corrupt file?)", file, name);
  return g;
}

std::vector<std::string> children(hid_t group, const std::string& what) {
  H5G_info_t info;
  if (H5Gget_info(group, &info) < 0) fail("{}: cannot list (corrupt file?)", what);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t n = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (n < 0) fail("{}: cannot read link {} (corrupt file?)", what, i);
    std::string s(size_t(n) + 1, '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), s.size(), H5P_DEFAULT);
    s.resize(size_t(n));
    names.push_back(std::move(s));
  }
  return names;
}

namespace {

void write_scalar(hid_t obj, const char* name, hid_t type, const void* value) {
  Id space(H5Screate(H5S_SCALAR));
  Id a(H5Acreate2(obj, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!a.valid() || H5Awrite(a.get(), type, value) < 0)
    fail("cannot write attribute '{}' (disk full?)", name);
}

Id open_attr(hid_t obj, const char* name, const std::string& what) {
  if (H5Aexists(obj, name) <= 0) fail("{}: attribute '{}' is missing", what, name);
  Id a(H5Aopen(obj, name, H5P_DEFAULT));
  if (!a.valid()) fail("{}: cannot open attribute '{}' (corrupt file?)", what, name);
  return a;
}

// An attribute holds one value: a scalar, or an array of one (anything else would be read
// past the single value's memory).
void require_one_value(hid_t attr, const char* name, const std::string& what) {
  Id space(H5Aget_space(attr));
  const hssize_t n = space.valid() ? H5Sget_simple_extent_npoints(space.get()) : -1;
  if (n != 1) fail("{}: attribute '{}' holds {} values, expected one", what, name, n);
}

template <typename T>
T read_number(hid_t obj, const char* name, hid_t mem_type, H5T_class_t cls, const std::string& what) {
  Id a = open_attr(obj, name, what);
  require_one_value(a.get(), name, what);
  Id type(H5Aget_type(a.get()));
  if (H5Tget_class(type.get()) != cls)
    fail("{}: attribute '{}' is not {}", what, name, cls == H5T_FLOAT ? "a float" : "an integer");
  T v{};
  if (H5Aread(a.get(), mem_type, &v) < 0) fail("{}: cannot read attribute '{}'", what, name);
  return v;
}

}  // namespace

void write_attr(hid_t obj, const char* name, int64_t value) {
  write_scalar(obj, name, H5T_STD_I64LE, &value);
}
void write_attr(hid_t obj, const char* name, uint64_t value) {
  write_scalar(obj, name, H5T_STD_U64LE, &value);
}
void write_attr(hid_t obj, const char* name, double value) {
  write_scalar(obj, name, H5T_IEEE_F64LE, &value);
}

void write_attr(hid_t obj, const char* name, const std::string& value) {
  // A fixed-length UTF-8 string of the value's length (h5py shows it as bytes / str).
  Id type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), std::max<size_t>(value.size(), 1));
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  write_scalar(obj, name, type.get(), padded.data());
}

bool has_attr(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

int64_t read_int_attr(hid_t obj, const char* name, const std::string& what) {
  return read_number<int64_t>(obj, name, H5T_NATIVE_INT64, H5T_INTEGER, what);
}
uint64_t read_u64_attr(hid_t obj, const char* name, const std::string& what) {
  return read_number<uint64_t>(obj, name, H5T_NATIVE_UINT64, H5T_INTEGER, what);
}
double read_double_attr(hid_t obj, const char* name, const std::string& what) {
  return read_number<double>(obj, name, H5T_NATIVE_DOUBLE, H5T_FLOAT, what);
}

std::string read_string_attr(hid_t obj, const char* name, const std::string& what) {
  Id a = open_attr(obj, name, what);
  require_one_value(a.get(), name, what);
  Id type(H5Aget_type(a.get()));
  if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) > 0)
    fail("{}: attribute '{}' is not a fixed-length string", what, name);
  std::string s(H5Tget_size(type.get()), '\0');
  if (H5Aread(a.get(), type.get(), s.data()) < 0) fail("{}: cannot read attribute '{}'", what, name);
  s.resize(strnlen(s.data(), s.size()));
  return s;
}

std::vector<std::string> attr_names(hid_t obj) {
  H5O_info_t info;
  std::vector<std::string> names;
  if (H5Oget_info2(obj, &info, H5O_INFO_NUM_ATTRS) < 0) return names;
  for (hsize_t i = 0; i < info.num_attrs; ++i) {
    const ssize_t n = H5Aget_name_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (n < 0) continue;
    std::string s(size_t(n) + 1, '\0');
    H5Aget_name_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), s.size(), H5P_DEFAULT);
    s.resize(size_t(n));
    names.push_back(std::move(s));
  }
  return names;
}

std::vector<int64_t> extent(hid_t dataset, const std::string& what) {
  Id space(H5Dget_space(dataset));
  const int nd = space.valid() ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (nd < 0) fail("{}: cannot read the dataset's shape (corrupt file?)", what);
  std::vector<hsize_t> dims(static_cast<size_t>(nd));
  if (nd > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
    fail("{}: cannot read the dataset's shape (corrupt file?)", what);
  Id type(H5Dget_type(dataset));
  Id file(H5Iget_file_id(dataset));
  hsize_t file_bytes = 0;
  if (!type.valid() || !file.valid() || H5Fget_filesize(file.get(), &file_bytes) < 0)
    fail("{}: cannot read the dataset's type (corrupt file?)", what);
  long double bytes = H5Tget_size(type.get());
  for (hsize_t d : dims) bytes *= d;
  if (bytes > file_bytes)
    fail("{}: declares [{}] elements of {} bytes, more than the whole file ({} bytes): damaged "
         "or not written by temper", what, fmt::join(dims, ", "), H5Tget_size(type.get()), file_bytes);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

}  // namespace temper::h5
