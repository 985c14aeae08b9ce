#include "h5_edits.h"

#include <hdf5.h>

#include <cstring>
#include <iterator>
#include <set>
#include <vector>

namespace temper::fuzz {
namespace {

struct Objects {
  std::vector<std::string> all, datasets;
  std::set<std::string> attribute_names;  // of every object: edits may add them elsewhere
};

herr_t collect_attribute(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<Objects*>(out)->attribute_names.insert(name);
  return 0;
}

herr_t collect(hid_t root, const char* name, const H5O_info_t* info, void* out) {
  auto* objects = static_cast<Objects*>(out);
  const hid_t obj = H5Oopen(root, name, H5P_DEFAULT);
  if (obj >= 0) H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_attribute, out), H5Oclose(obj);
  if (std::strcmp(name, ".") == 0) return 0;
  objects->all.emplace_back(name);
  if (info->type == H5O_TYPE_DATASET) objects->datasets.emplace_back(name);
  return 0;
}

// An element type for replaced datasets and attributes.
hid_t pick_type(FuzzedDataProvider& in) {
  const hid_t types[] = {H5T_NATIVE_FLOAT, H5T_NATIVE_UINT16, H5T_NATIVE_INT32, H5T_NATIVE_UINT32,
                         H5T_NATIVE_UINT64, H5T_NATIVE_INT64, H5T_NATIVE_UINT8, H5T_NATIVE_DOUBLE};
  return types[in.ConsumeIntegralInRange<size_t>(0, std::size(types) - 1)];
}

std::vector<hsize_t> pick_dims(FuzzedDataProvider& in) {
  std::vector<hsize_t> dims(in.ConsumeIntegralInRange<int>(0, 3));
  for (hsize_t& d : dims) d = in.ConsumeIntegralInRange<hsize_t>(0, 24);
  return dims;
}

// Element bytes for n elements of `type`, from the input (zero-padded when it runs out).
std::vector<uint8_t> pick_values(FuzzedDataProvider& in, hid_t type, hsize_t n) {
  std::vector<uint8_t> bytes(size_t(n) * H5Tget_size(type), 0);
  const std::vector<uint8_t> given = in.ConsumeBytes<uint8_t>(bytes.size());
  std::copy(given.begin(), given.end(), bytes.begin());
  // Small values are the interesting ones (counts, offsets, ids): often keep only a byte.
  if (in.ConsumeBool())
    for (size_t i = 0; i < bytes.size(); ++i)
      if (i % H5Tget_size(type)) bytes[i] = 0;
  return bytes;
}

// Sets (or adds) an attribute of `object`: one of the file's attribute names or another.
void set_attribute(hid_t file, const std::string& object, const Objects& objects, FuzzedDataProvider& in) {
  const hid_t obj = H5Oopen(file, object.c_str(), H5P_DEFAULT);
  if (obj < 0) return;
  std::string name;
  if (!objects.attribute_names.empty() && in.ConsumeIntegralInRange(0, 3) > 0) {
    auto it = objects.attribute_names.begin();
    std::advance(it, in.ConsumeIntegralInRange<size_t>(0, objects.attribute_names.size() - 1));
    name = *it;
  } else {
    name = in.ConsumeRandomLengthString(24);
    if (name.empty()) name = "x";
  }
  H5Adelete(obj, name.c_str());
  if (in.ConsumeBool()) {  // a string attribute
    const std::string value = in.ConsumeRandomLengthString(64);
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, value.empty() ? 1 : value.size());
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr >= 0) H5Awrite(attr, type, value.empty() ? "" : value.data()), H5Aclose(attr);
    H5Sclose(space), H5Tclose(type);
  } else {  // a number, or an array of them
    const hid_t type = pick_type(in);
    const hsize_t n = in.ConsumeIntegralInRange<hsize_t>(1, 4);
    const hid_t space = n == 1 && in.ConsumeBool() ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr);
    const std::vector<uint8_t> values = pick_values(in, type, n);
    const hid_t attr = H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr >= 0) H5Awrite(attr, type, values.data()), H5Aclose(attr);
    H5Sclose(space);
  }
  H5Oclose(obj);
}

// Replaces a dataset by one of another type, shape and contents (and no attributes).
void replace_dataset(hid_t file, const std::string& name, FuzzedDataProvider& in) {
  H5Ldelete(file, name.c_str(), H5P_DEFAULT);
  const hid_t type = pick_type(in);
  const std::vector<hsize_t> dims = pick_dims(in);
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  const hid_t space = dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  const hid_t set = H5Dcreate2(file, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (set >= 0) {
    const std::vector<uint8_t> values = pick_values(in, type, n);
    if (n) H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(set);
  }
  H5Sclose(space);
}

}  // namespace

bool is_hdf5_file(const uint8_t* data, size_t size) {
  static const char kSignature[] = "\x89HDF\r\n\x1a\n";
  return size >= 8 && std::memcmp(data, kSignature, 8) == 0;
}

void apply_h5_edits(const std::string& path, FuzzedDataProvider& in) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // edits that fail (a deleted parent) say nothing
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (file < 0) return;
  Objects objects;
  H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_INC, collect, &objects, H5O_INFO_BASIC);
  objects.all.insert(objects.all.begin(), "/");  // the root holds a dataset's attributes
  for (int edits = in.ConsumeIntegralInRange(1, 4); edits > 0 && in.remaining_bytes() > 0; --edits) {
    switch (in.ConsumeIntegralInRange(0, 2)) {
      case 0:
        set_attribute(file, objects.all[in.ConsumeIntegralInRange<size_t>(0, objects.all.size() - 1)], objects, in);
        break;
      case 1:
        if (!objects.datasets.empty())
          replace_dataset(file, objects.datasets[in.ConsumeIntegralInRange<size_t>(0, objects.datasets.size() - 1)], in);
        break;
      case 2:
        if (objects.all.size() > 1)
          H5Ldelete(file, objects.all[in.ConsumeIntegralInRange<size_t>(1, objects.all.size() - 1)].c_str(), H5P_DEFAULT);
        break;
    }
  }
  H5Fclose(file);
}

}  // namespace temper::fuzz
