// AdamW over a ParameterSet. The optimizer owns fp32 master weights (when parameters are
// kept in a lower precision) and the two moments, in flat buffers over the trainable
// parameters. Weight decay is decoupled and, by default, skips norms and biases.
#pragma once
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "model/parameters.h"

namespace temper {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decay_norms_and_biases = false;
};

// The elements [begin, end) of the flat parameter buffer this optimizer updates: all of
// them, or one rank's ZeRO shard.
struct ElementRange {
  int64_t begin = 0, end = -1;  // end -1: to the last parameter
};

// One piece of one parameter the optimizer updates: its elements [begin, end) and, when
// defined, where their gradient lives (ZeRO-2's shard buffer) instead of the parameter's
// own gradient view.
struct AdamWSegment {
  size_t param = 0;
  int64_t begin = 0, end = 0;
  Tensor grad;
};

class AdamW {
 public:
  AdamW(ParameterSet& params, Backend& backend, const AdamWConfig& config, ElementRange range = {});
  AdamW(ParameterSet& params, Backend& backend, const AdamWConfig& config,
        const std::vector<AdamWSegment>& segments);
  // One update of every trainable parameter with gradients times grad_scale.
  void step(float lr, float grad_scale);
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t steps) { step_ = steps; }  // checkpoint resume
  size_t state_bytes() const;

  // The state this optimizer holds, piece by piece (checkpoints read and write it):
  // parameter `param`'s elements [begin, end) of this rank's shard, as f32 [end - begin]
  // master weights (the parameter itself when it is f32) and moments.
  struct StatePiece {
    size_t param = 0;
    int64_t begin = 0, end = 0;
    Tensor master, m, v;
  };
  std::vector<StatePiece> state_pieces() const;

 private:
  struct Slot {
    AdamWSegment piece;   // the elements of this parameter it updates
    Tensor master, m, v;  // [end - begin] f32; master aliases the parameter when it is f32
    float weight_decay;
  };
  void add_slot(const AdamWSegment& piece);
  ParameterSet& params_;
  Backend& backend_;
  AdamWConfig config_;
  std::unique_ptr<Arena> arena_;
  std::vector<Slot> slots_;
  int64_t step_ = 0;
};

// The clip factor torch's clip_grad_norm_ applies for a global gradient norm:
// min(1, max_norm / (norm + 1e-6)); max_norm <= 0 disables clipping. (The norm itself:
// gradient_sum_squares in parallel/tensor_parallel.h.)
float clip_factor(double norm, double max_norm);

}  // namespace temper
