// Checkpoints written under one layout (tp × dp, ZeRO 0/1/2) and loaded under another,
// on every rank of temper_mpi_tests (1, 2 or 4 ranks): each rank's parameters and its
// optimizer pieces hold, element by element, the deterministic values the writer was
// filled with at the same positions of the full tensors (support/checkpoint_state.h);
// `export` of each file gives those values as full tensors.
// Layouts that need more ranks than the world has are left out; ranks outside a layout
// wait at a barrier.
#include <gtest/gtest.h>

#include <memory>

#include "checkpoint/checkpoint.h"
#include "checkpoint/convert.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "parallel/grid.h"
#include "parallel/mpi_comm.h"
#include "parallel/zero.h"
#include "support/checkpoint_state.h"
#include "support/test_util.h"

namespace temper {
namespace {

constexpr double kTimeoutS = 60;

ModelConfig config() {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 32;
  c.attention_bias = true;  // 1-D tensors split by tp too
  return c;
}

struct Layout {
  int tp = 1, dp = 1, zero = 0;
  DType dtype = DType::BF16;
  int ranks() const { return tp * dp; }
  std::string str() const { return fmt::format("tp{} dp{} zero{} {}", tp, dp, zero, dtype_name(dtype)); }
};

// A model and optimizer of one layout on world ranks [0, tp·dp), built as the trainer does.
struct Placed {
  std::unique_ptr<MpiComm> group;
  std::unique_ptr<DeviceGrid> grid;
  std::unique_ptr<Backend> cpu = make_backend("cpu");
  std::unique_ptr<Transformer> model;
  std::unique_ptr<ZeroShards> zero1;
  std::unique_ptr<ZeroGradientShards> zero2;
  std::unique_ptr<AdamW> optimizer;

  // Collective over `world`; returns false on the ranks outside the layout.
  bool place(MpiComm& world, const Layout& l) {
    const bool inside = world.rank() < l.ranks();
    group = world.split(inside ? 0 : 1, world.rank(), "ckpt");
    if (!inside) return false;
    if (l.ranks() > 1) grid = std::make_unique<DeviceGrid>(*group, l.tp);
    const bool z1 = l.zero == 1 && l.dp > 1, z2 = l.zero == 2 && l.dp > 1;
    const TensorParallel tp = grid ? TensorParallel(grid->tp()) : TensorParallel();
    model = std::make_unique<Transformer>(config(), *cpu, l.dtype, z1 ? l.dp : 1, tp, !z2);
    if (z1) {
      zero1 = std::make_unique<ZeroShards>(model->params(), grid->dp());
      optimizer = std::make_unique<AdamW>(model->params(), *cpu, AdamWConfig{}, zero1->shard());
    } else if (z2) {
      zero2 = std::make_unique<ZeroGradientShards>(model->params(), grid->dp(), *cpu,
                                                   model->gradient_groups());
      optimizer = std::make_unique<AdamW>(model->params(), *cpu, AdamWConfig{}, zero2->segments());
    } else {
      optimizer = std::make_unique<AdamW>(model->params(), *cpu, AdamWConfig{});
    }
    return true;
  }
};

// The path rank 0 chose, on every rank.
std::string shared_dir(MpiComm& world, const std::string& name) {
  std::string dir = world.rank() == 0 ? test::temp_dir(name).string() : std::string();
  int n = int(dir.size());
  MPI_Bcast(&n, 1, MPI_INT, 0, world.handle());
  dir.resize(size_t(n));
  MPI_Bcast(dir.data(), n, MPI_CHAR, 0, world.handle());
  return dir;
}

class CheckpointReshard : public ::testing::Test {
 protected:
  MpiComm world{MPI_COMM_WORLD, "world", kTimeoutS};
};

// Zeros everywhere a load must write (a checkpoint value is never exactly 0).
void poison(Placed& p) {
  p.cpu->zero(p.model->params().flat_values());
  for (const AdamW::StatePiece& s : p.optimizer->state_pieces()) {
    p.cpu->zero(s.master);
    p.cpu->zero(s.m);
    p.cpu->zero(s.v);
  }
  p.optimizer->set_steps_taken(0);
}

// `temper export` of a checkpoint written under any layout: full tensors with the values
// the writer's ranks held at each position.
void expect_export(const std::string& path, const std::string& out, DType dtype) {
  export_hf(path, out);
  const SafetensorsFile f = read_safetensors(out + "/model.safetensors");
  auto cpu = make_backend("cpu");
  const Transformer names(config(), *cpu, dtype, 1, {}, false);
  ASSERT_EQ(f.tensors.size(), names.params().size());
  for (const Parameter& p : names.params().all()) {
    const SafetensorsEntry& e = f.at(p.name);
    EXPECT_EQ(e.dtype, dtype == DType::F32 ? "F32" : "BF16") << p.name;
    const std::vector<float> got = e.to_f32();
    const test::StateKind kind = dtype == DType::F32 ? test::kMaster : test::kModel;
    for (int64_t i = 0; i < p.full_shape.numel(); ++i)
      if (got[size_t(i)] != test::stored_as(dtype, test::state_value(p.name, kind, i))) {
        ADD_FAILURE() << path << ": exported " << p.name << " element " << i;
        return;
      }
  }
}

TEST_F(CheckpointReshard, AnyLayoutLoadsWhatAnyOtherWrote) {
  std::vector<Layout> layouts;
  for (const Layout& l : std::vector<Layout>{
           {1, 1, 0},          {1, 1, 0, DType::F32}, {2, 1, 0}, {1, 2, 0}, {1, 2, 1},
           {1, 2, 2, DType::F32}, {4, 1, 0},          {2, 2, 1}, {2, 2, 2}, {1, 4, 2},
           {1, 4, 0, DType::F32}})
    if (l.ranks() <= world.size()) layouts.push_back(l);
  // Every layout once (communicators are slow to make on oversubscribed ranks).
  std::vector<std::unique_ptr<Placed>> placed;
  for (const Layout& l : layouts) {
    placed.push_back(std::make_unique<Placed>());
    if (!placed.back()->place(world, l)) placed.back().reset();
  }
  const std::string dir = shared_dir(world, "ckpt_reshard");
  for (size_t i = 0; i < layouts.size(); ++i) {
    const Layout& w = layouts[i];
    const std::string path = fmt::format("{}/{}.h5", dir, i);
    if (Placed* a = placed[i].get()) {
      test::fill_training_state(*a->model, a->optimizer.get());
      a->optimizer->set_steps_taken(9);
      CheckpointMeta meta;
      meta.step = 9;
      meta.grid.zero = w.zero;
      RankState state;
      state.rng = {uint64_t(world.rank()), 7};
      state.data = {1, uint64_t(a->grid ? a->grid->dp_rank() : 0)};
      write_checkpoint(path, meta, *a->model, a->optimizer.get(), state, a->grid.get());
    }
    world.barrier();
    const CheckpointMeta meta = read_checkpoint_meta(path);
    EXPECT_EQ(meta.grid.world, w.ranks());
    EXPECT_EQ(meta.grid.tp, w.tp);
    EXPECT_EQ(meta.grid.dp, w.dp);
    EXPECT_EQ(meta.grid.zero, w.zero);
    for (int r = 0; r < w.ranks(); ++r) EXPECT_EQ(read_rank_state(path, r, r / w.tp).rng[0], uint64_t(r));
    for (int d = 0; d < w.dp; ++d) EXPECT_EQ(read_rank_state(path, d * w.tp, d).data.index, uint64_t(d));
    if (world.rank() == 0) expect_export(path, dir + fmt::format("/hf{}", i), w.dtype);

    for (size_t j = 0; j < layouts.size(); ++j) {
      const Layout& r = layouts[j];
      if (r.dtype != w.dtype) continue;
      SCOPED_TRACE("written " + w.str() + ", read " + r.str());
      if (Placed* b = placed[j].get()) {
        poison(*b);
        load_checkpoint(path, *b->model, b->optimizer.get(), b->grid.get());
        EXPECT_EQ(test::check_training_state(*b->model, b->optimizer.get(), w.dtype, true), "");
        EXPECT_EQ(b->optimizer->steps_taken(), 9);
      }
      world.barrier();
    }
  }
}

// A bf16 checkpoint into f32 models (model only, and with the optimizer), across layouts.
TEST_F(CheckpointReshard, OtherDtypeAndModelOnly) {
  const std::string dir = shared_dir(world, "ckpt_reshard_dtype");
  const Layout w{world.size() >= 2 ? 2 : 1, world.size() >= 4 ? 2 : 1, 1, DType::BF16};
  const std::string path = dir + "/w.h5";
  {
    Placed a;
    if (a.place(world, w)) {
      test::fill_training_state(*a.model, a.optimizer.get());
      CheckpointMeta meta;
      meta.grid.zero = w.zero;
      write_checkpoint(path, meta, *a.model, a.optimizer.get(), RankState{}, a.grid.get());
    }
  }
  world.barrier();
  const Layout r{1, world.size(), 2, DType::F32};
  for (bool with_optimizer : {false, true}) {
    Placed b;
    if (b.place(world, r)) {
      load_checkpoint(path, *b.model, with_optimizer ? b.optimizer.get() : nullptr, b.grid.get());
      EXPECT_EQ(test::check_training_state(*b.model, with_optimizer ? b.optimizer.get() : nullptr,
                                           DType::BF16, true), "");
    }
    world.barrier();
  }
}

// A wrong-shape model fails on every rank with the same message (no rank left waiting).
TEST_F(CheckpointReshard, WrongShapeFailsOnEveryRank) {
  const std::string dir = shared_dir(world, "ckpt_reshard_shape");
  const std::string path = dir + "/w.h5";
  const Layout l{1, world.size(), 0, DType::F32};
  {
    Placed a;
    ASSERT_TRUE(a.place(world, l));
    write_checkpoint(path, CheckpointMeta{}, *a.model, nullptr, RankState{}, a.grid.get());
  }
  ModelConfig other = config();
  other.intermediate_size = 64;
  auto cpu = make_backend("cpu");
  std::unique_ptr<DeviceGrid> grid;
  if (world.size() > 1) grid = std::make_unique<DeviceGrid>(world, 1);
  Transformer model(other, *cpu, DType::F32);
  std::string error = "(no error)";
  try {
    load_checkpoint(path, model, nullptr, grid.get());
  } catch (const Error& e) {
    error = e.what();
  }
  // The first MLP tensor the model declares: [48, 32] in the file, [64, 32] wanted.
  EXPECT_NE(error.find("w.h5: tensor 'model/model.layers.0.mlp."), std::string::npos) << error;
  EXPECT_NE(error.find("has shape [48, 32], the model expects [64, 32]"), std::string::npos) << error;
  world.barrier();
}

}  // namespace
}  // namespace temper
