// Reading helpers shared by load_checkpoint and describe_checkpoint (internal).
#pragma once
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "checkpoint/slab.h"
#include "checkpoint/tally.h"

namespace temper::ckpt {

// /meta, after checking format_version; errors name the file and attribute.
CheckpointMeta read_meta(hid_t file, const std::string& path);
// Opens dataset `name` (a path in the file, "model/<hf name>") and checks its shape;
// `kind` says what it is in the error ("model weights").
h5::Id open_tensor(const h5::File& f, const std::string& name, const std::vector<int64_t>& full,
                   const char* kind);
// Selection `s` of `set` as raw bytes of its stored dtype (returned in *stored); records
// this rank's checksum part and the stored checksum in `tally`.
std::vector<uint8_t> read_tensor(const h5::File& f, hid_t set, const std::string& name,
                                 const Selection& s, DType* stored, Tally& tally);
// Host conversion between f32 / bf16 / f16 (round to nearest even).
std::vector<uint8_t> convert(const std::vector<uint8_t>& in, DType from, DType to);
// After tally.reduce(): every tensor read matches its stored checksum.
void verify(const Tally& t, const std::string& path);

}  // namespace temper::ckpt
