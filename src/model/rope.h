// RoPE angle tables, with Llama 3 frequency scaling. Built once on the host in double,
// stored as f32 cos/sin [P, D/2] on the backend's device.
#pragma once
#include <vector>

#include "model/config.h"

namespace temper {

// inv_freq[i] for i < head_dim/2, after rope scaling when the config asks for it.
std::vector<double> rope_inverse_frequencies(const ModelConfig& c);
// cos and sin of position p × inv_freq[i], row-major [positions, head_dim/2].
void rope_tables(const ModelConfig& c, int64_t positions, std::vector<float>& cos,
                 std::vector<float>& sin);

}  // namespace temper
