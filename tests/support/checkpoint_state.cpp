#include "support/checkpoint_state.h"

#include <fmt/format.h>

#include <vector>

#include "core/rng.h"
#include "support/test_util.h"

namespace temper::test {

int64_t full_index(const Parameter& p, int64_t i) {
  if (p.split_dim < 0 || p.shards == 1) return i;
  const int64_t n = p.shape.numel();
  if (p.split_dim == 0) return p.shard * n + i;  // a block of whole rows
  const int64_t cols = n / p.shape[0];           // a block of columns of every row
  return (i / cols) * cols * p.shards + p.shard * cols + i % cols;
}

float state_value(const std::string& name, StateKind kind, int64_t index) {
  const RngStream s = rng_stream(977, RngPurpose::Test, name_hash(name) + 0x9E37u * uint32_t(kind));
  return s.normal(uint64_t(index));
}

float stored_as(DType t, float x) {
  if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(x));
  if (t == DType::F16) return f16_to_f32(f32_to_f16(x));
  return x;
}

namespace {

void upload(Backend& b, Tensor dst, const std::vector<float>& v) {
  if (dst.dtype() == DType::F32) return b.copy_from_host(dst, v.data());
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    h[i] = dst.dtype() == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  b.copy_from_host(dst, h.data());
}

// Any float tensor as f32 on the host (f16 included).
std::vector<float> download(Backend& b, Tensor t) {
  if (t.dtype() == DType::F32) return to_host(b, t);
  std::vector<uint16_t> h(size_t(t.numel()));
  b.copy_to_host(h.data(), t);
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = t.dtype() == DType::BF16 ? bf16_to_f32(h[i]) : f16_to_f32(h[i]);
  return v;
}

const char* kind_name(int k) { return k == 0 ? "master" : k == 1 ? "m" : k == 2 ? "v" : "model"; }

}  // namespace

void fill_training_state(Transformer& model, AdamW* optimizer) {
  Backend& b = model.backend();
  for (Parameter& p : model.params().all()) {
    const StateKind kind = p.value.dtype() == DType::F32 ? kMaster : kModel;
    std::vector<float> v(size_t(p.shape.numel()));
    for (int64_t i = 0; i < p.shape.numel(); ++i) v[size_t(i)] = state_value(p.name, kind, full_index(p, i));
    upload(b, p.value, v);
  }
  if (!optimizer) return;
  for (const AdamW::StatePiece& s : optimizer->state_pieces()) {
    const Parameter& p = model.params()[s.param];
    for (int k = 0; k < 3; ++k) {
      std::vector<float> v(size_t(s.end - s.begin));
      for (int64_t i = s.begin; i < s.end; ++i)
        v[size_t(i - s.begin)] = state_value(p.name, StateKind(k), full_index(p, i));
      upload(b, k == 0 ? s.master : k == 1 ? s.m : s.v, v);
    }
  }
}

std::string check_training_state(Transformer& model, AdamW* optimizer, DType written,
                                  bool file_has_optimizer) {
  Backend& b = model.backend();
  for (Parameter& p : model.params().all()) {
    const DType mine = p.value.dtype();
    const std::vector<float> got = download(b, p.value);
    for (int64_t i = 0; i < p.shape.numel(); ++i) {
      const int64_t idx = full_index(p, i);
      float want;
      if (mine == DType::F32 && file_has_optimizer && p.trainable) {
        want = state_value(p.name, kMaster, idx);
      } else {
        const StateKind kind = written == DType::F32 ? kMaster : kModel;
        want = stored_as(mine, stored_as(written, state_value(p.name, kind, idx)));
      }
      if (got[size_t(i)] != want)
        return fmt::format("model {} element {} (full index {}): {} != {}", p.name, i, idx, got[size_t(i)], want);
    }
  }
  if (!optimizer) return "";
  for (const AdamW::StatePiece& s : optimizer->state_pieces()) {
    const Parameter& p = model.params()[s.param];
    for (int k = 0; k < 3; ++k) {
      const std::vector<float> got = to_host(b, k == 0 ? s.master : k == 1 ? s.m : s.v);
      for (int64_t i = s.begin; i < s.end; ++i) {
        const float want = state_value(p.name, StateKind(k), full_index(p, i));
        if (got[size_t(i - s.begin)] != want)
          return fmt::format("optimizer {} {} element {} (full index {}): {} != {}", kind_name(k), p.name, i,
                             full_index(p, i), got[size_t(i - s.begin)], want);
      }
    }
  }
  return "";
}

}  // namespace temper::test
