// Per-rank memory of the model and AdamW state under ZeRO-1, as docs/parallelism.md states it for
// mixed precision: 16 bytes per parameter unsharded (bf16 parameters 2 + bf16 gradients
// 2 + fp32 master, m, v 12), 4 + 12/dp with the optimizer state sharded. The buffers are
// real allocations (bf16 on the CPU backend; no kernels run), each rank's shard as
// ZeroShards would give it.
#include <gtest/gtest.h>

#include "model/transformer.h"
#include "optim/adamw.h"
#include "parallel/zero.h"
#include "parallel/tensor_parallel.h"
#include "support/rank_only_comm.h"

namespace temper {
namespace {

TEST(ZeroMemory, BytesPerParameterFollowTheFormula) {
  ModelConfig c;
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.intermediate_size = 688;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.max_position_embeddings = 64;
  auto cpu = make_backend("cpu");
  for (int dp : {1, 2, 4, 8}) {
    Transformer model(c, *cpu, DType::BF16, dp);
    const int64_t shard = model.params().padded_numel() / dp;
    for (int rank : {0, dp - 1}) {
      AdamW opt(model.params(), *cpu, AdamWConfig{}, ElementRange{rank * shard, (rank + 1) * shard});
      const MemoryReport r = memory_report(model.params(), opt);
      const double expected = 4.0 + 12.0 / dp;
      // Padding to dp elements and 256-byte arena alignment per tensor stay below 0.1%.
      EXPECT_NEAR(r.bytes_per_parameter(), expected, 1e-3 * expected) << "dp " << dp << " rank " << rank;
    }
  }
}

// ZeRO-2: the model has no full gradient buffer; this rank keeps only its gradient
// shards (2/dp bytes per parameter in bf16) next to the sharded AdamW state, so the
// per-rank total is 2 + 14/dp. (During backward one or two groups' transient buffers
// exist as well; the report lists them apart, as they do not grow with the model.) A
// stand-in dp communicator gives the shard arithmetic of the last rank of each dp.
TEST(ZeroMemory, Stage2HoldsOnlyGradientShards) {
  ModelConfig c;
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.intermediate_size = 688;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 4;
  c.max_position_embeddings = 64;
  auto cpu = make_backend("cpu");
  for (int dp : {1, 2, 4, 8}) {
    Transformer model(c, *cpu, DType::BF16, 1, TensorParallel(), /*gradient_buffer=*/false);
    EXPECT_FALSE(model.params().flat_grads().defined());
    test::RankOnlyComm comm(dp - 1, dp);
    ZeroGradientShards shards(model.params(), comm, *cpu, model.gradient_groups());
    AdamW opt(model.params(), *cpu, AdamWConfig{}, shards.segments());
    const MemoryReport r = memory_report(model.params(), opt, &shards);
    const double expected = 2.0 + 14.0 / dp;
    // Per-group padding (< dp elements each) and arena alignment stay below 0.1%.
    EXPECT_NEAR(r.bytes_per_parameter(), expected, 1e-3 * expected) << "dp " << dp;
  }
}

}  // namespace
}  // namespace temper
