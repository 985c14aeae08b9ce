// The safetensors header validation against the reference reader (the safetensors
// package), live: a set of well-formed and malformed files, each accepted by our reader
// exactly when the reference accepts it; every rejection names the file (and the tensor
// where there is one). Where we are deliberately stricter (a key twice in one object,
// which the reference resolves silently by keeping the last) the test says so.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/safetensors.h"
#include "support/test_util.h"

namespace temper {
namespace {

// 8-byte little-endian header length, header, data.
std::string file_bytes(const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  const uint64_t n = claimed_len < 0 ? header.size() : uint64_t(claimed_len);
  std::string out;
  for (int i = 0; i < 8; ++i) out += char((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\x01');
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

TEST(SafetensorsValidation, AcceptsExactlyWhatTheReferenceAccepts) {
  const std::string a8 = entry("a", "\"F32\"", "[2]", "[0,8]");
  const std::map<std::string, std::string> cases = {
      {"ok", file_bytes("{" + a8 + "}", 8)},
      {"ok_unaligned", file_bytes("{" + entry("a", "\"U8\"", "[3]", "[0,3]") + "," +
                                  entry("b", "\"F32\"", "[1]", "[3,7]") + "}", 7)},
      {"ok_empty", file_bytes("{}", 0)},
      {"ok_zero_size", file_bytes("{" + entry("a", "\"F32\"", "[0]", "[0,0]") + "}", 0)},
      {"ok_scalar", file_bytes("{" + entry("a", "\"F32\"", "[]", "[0,4]") + "}", 4)},
      {"ok_extra_field", file_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8)},
      {"ok_leading_space", file_bytes(" {" + a8 + "}", 8)},
      {"ok_trailing_spaces", file_bytes("{" + a8 + "}   ", 8)},
      {"ok_metadata", file_bytes("{\"__metadata__\":{\"format\":\"pt\"}," + a8 + "}", 8)},
      {"ok_null_metadata", file_bytes("{\"__metadata__\":null," + a8 + "}", 8)},
      {"ok_f8", file_bytes("{" + entry("a", "\"F8_E4M3\"", "[2]", "[0,2]") + "}", 2)},
      {"ok_f4_pair", file_bytes("{" + entry("a", "\"F4\"", "[2]", "[0,1]") + "}", 1)},
      {"ok_c64", file_bytes("{" + entry("a", "\"C64\"", "[1]", "[0,8]") + "}", 8)},
      {"short_file", std::string("\x02\0\0", 3)},
      {"header_beyond_file", file_bytes("{" + a8 + "}", 8, 4000)},
      {"header_too_large", file_bytes("{}", 0, 200'000'000)},
      {"not_json", file_bytes("{\"a\":", 0)},
      {"trailing_nul", file_bytes("{" + a8 + "}" + std::string(1, '\0'), 8)},
      {"not_object", file_bytes("[1,2]", 0)},
      {"bad_utf8", file_bytes("{\"\xff\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0)},
      {"tensor_not_object", file_bytes("{\"a\":[1]}", 8)},
      {"missing_shape", file_bytes("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8)},
      {"dtype_not_string", file_bytes("{" + entry("a", "3", "[2]", "[0,8]") + "}", 8)},
      {"unknown_dtype", file_bytes("{" + entry("a", "\"f32\"", "[2]", "[0,8]") + "}", 8)},
      {"shape_not_array", file_bytes("{" + entry("a", "\"F32\"", "2", "[0,8]") + "}", 8)},
      {"shape_negative", file_bytes("{" + entry("a", "\"F32\"", "[-2]", "[0,8]") + "}", 8)},
      {"shape_float", file_bytes("{" + entry("a", "\"F32\"", "[2.0]", "[0,8]") + "}", 8)},
      {"shape_overflow", file_bytes("{" + entry("a", "\"F32\"", "[4611686018427387904,8]", "[0,8]") + "}", 8)},
      {"f4_half_byte", file_bytes("{" + entry("a", "\"F4\"", "[1]", "[0,1]") + "}", 1)},
      {"size_mismatch", file_bytes("{" + entry("a", "\"F32\"", "[3]", "[0,8]") + "}", 8)},
      {"offsets_beyond_data", file_bytes("{" + entry("a", "\"F32\"", "[2]", "[8,16]") + "}", 8)},
      {"offsets_reversed", file_bytes("{" + entry("a", "\"F32\"", "[0]", "[8,0]") + "}", 8)},
      {"offsets_three", file_bytes("{" + entry("a", "\"F32\"", "[2]", "[0,8,8]") + "}", 8)},
      {"offsets_float", file_bytes("{" + entry("a", "\"F32\"", "[2]", "[0.0,8.0]") + "}", 8)},
      {"gap", file_bytes("{" + a8 + "," + entry("b", "\"F32\"", "[1]", "[12,16]") + "}", 16)},
      {"overlap", file_bytes("{" + a8 + "," + entry("b", "\"F32\"", "[2]", "[4,12]") + "}", 12)},
      {"trailing_data", file_bytes("{" + a8 + "}", 12)},
      {"metadata_not_string", file_bytes("{\"__metadata__\":{\"x\":1}," + a8 + "}", 8)},
      {"metadata_array", file_bytes("{\"__metadata__\":[\"x\"]," + a8 + "}", 8)},
      {"strict_duplicate_tensor", file_bytes("{" + a8 + "," + a8 + "}", 8)},
      {"strict_duplicate_metadata", file_bytes("{\"__metadata__\":{\"x\":\"1\",\"x\":\"2\"}," + a8 + "}", 8)},
  };
  const auto dir = test::temp_dir("safetensors_validation");
  for (const auto& [name, bytes] : cases)
    std::ofstream(dir / (name + ".safetensors"), std::ios::binary) << bytes;
  std::string out;
  ASSERT_EQ(test::run_python("reference/safetensors_validation.py", {dir.string()}, &out), 0) << out;
  const nlohmann::json ref = nlohmann::json::parse(out.substr(out.rfind("\n{") + 1));
  ASSERT_EQ(ref.size(), cases.size()) << out;

  for (const auto& [name, bytes] : cases) {
    const std::string path = (dir / (name + ".safetensors")).string();
    std::string ours = "ok";
    try {
      read_safetensors(path);
    } catch (const Error& e) {
      ours = e.what();
      EXPECT_EQ(ours.rfind(path, 0), 0u) << name << ": the error does not start with the file: " << ours;
    }
    const bool ref_ok = ref[name + ".safetensors"] == "ok", ours_ok = ours == "ok";
    if (name.starts_with("strict_")) {
      EXPECT_TRUE(ref_ok) << name << ": the reference rejects it now: " << ref[name + ".safetensors"];
      EXPECT_FALSE(ours_ok) << name;
      EXPECT_NE(ours.find("twice"), std::string::npos) << ours;
    } else {
      EXPECT_EQ(ours_ok, ref_ok) << name << "\n  ours: " << ours << "\n  reference: " << ref[name + ".safetensors"];
    }
    if (name.starts_with("ok")) EXPECT_TRUE(ref_ok) << name << " (the case itself is wrong)";
  }
  // Errors about one tensor name it.
  try {
    read_safetensors((dir / "size_mismatch.safetensors").string());
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'a'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace temper
