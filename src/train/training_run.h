// Trainer internals: everything one rank of a `temper train` run is made of (backend,
// communicators, data, model, optimizer, parallel helpers), built from a RunConfig, and
// the counters a checkpoint carries. trainer.cpp runs the loop over it.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "data/loader.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/loss_scale.h"
#include "optim/schedule.h"
#include "parallel/data_parallel.h"
#include "parallel/grid.h"
#include "parallel/mpi_comm.h"
#include "parallel/process.h"
#include "parallel/zero.h"
#include "train/run_config.h"
#include "train/run_length.h"
#include "train/train_step.h"

namespace temper {

// Where a run runs: one process, or one rank of an mpirun / srun job as a dp × tp grid.
struct Placement {
  ProcessInfo process;
  std::unique_ptr<MpiRuntime> mpi;
  std::unique_ptr<MpiComm> world;
  std::unique_ptr<DeviceGrid> grid;
  int dp_size() const { return grid ? grid->dp_size() : 1; }
  int dp_rank() const { return grid ? grid->dp_rank() : 0; }
  bool is_rank0() const { return process.rank == 0; }
  Communicator* world_comm() { return world.get(); }  // null for one process
};

// Where a run stands; saved in every checkpoint, restored on resume.
struct RunCounters {
  int64_t step = 0;              // optimizer steps done (skipped ones included)
  int64_t tokens_seen = 0;       // tokens of all those steps' global batches
  int64_t skipped_steps = 0;     // non-finite steps, no update made
  int64_t nonfinite_streak = 0;  // of which the last ones in a row
  double lr = 0.0;               // learning rate of the last step
};

struct TrainingRun {
  TrainingRun(const RunConfig& config, Placement& place) : config(config), place(place) {}
  TrainingRun(const TrainingRun&) = delete;
  TrainingRun& operator=(const TrainingRun&) = delete;
  ~TrainingRun();

  const RunConfig& config;
  Placement& place;
  ModelConfig model_config;
  DType dtype = DType::F32;
  std::unique_ptr<Backend> backend;
  // Tensors travel over MPI on the CPU backend and over NCCL on CUDA; small host values
  // (counts, losses, norm partials) always over MPI.
  std::vector<std::unique_ptr<Communicator>> owned_comms;  // NCCL dp, tp
  Communicator* dp_tensors = nullptr;
  Communicator* tp_tensors = nullptr;
  TensorParallel tp;
  std::unique_ptr<DocumentLoader> train_data;  // every rank walks the same global stream
  std::vector<MicroBatch> val;                 // fixed validation micro-batches
  std::unique_ptr<Transformer> model;
  std::unique_ptr<ZeroShards> shards;                // ZeRO-1
  std::unique_ptr<ZeroGradientShards> grad_shards;  // ZeRO-2
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<DynamicLossScale> loss_scale;  // f16 only
  std::unique_ptr<GradientBuckets> buckets;      // plain data parallelism
  StepOptions step_options;
  RunLength length;  // steps (train.steps or train.epochs), validation interval
  LrSchedule schedule;
  // Where the frozen base of a PEFT run comes from (checkpoint/base.h): model.path made
  // absolute, a model-only checkpoint it started from, or "" (drawn from the seed).
  std::string base_model;

  int zero_stage() const { return shards ? 1 : grad_shards ? 2 : 0; }
  // This rank's micro-batches of the next step's global batch (advances the loader).
  std::vector<MicroBatch> next_micro_batches();
};

// The PEFT spec of a run config's peft section (errors name the key).
PeftSpec peft_spec_of(const RunConfig& config);
// The base model a run fine-tunes, for adapter_config.json: model.path made absolute, else
// the preset or config.json it was built from.
std::string base_model_name(const RunConfig& config);

// Builds a rank's run. `checkpoint`: the checkpoint the run is about to start from (then
// the parameters are left uninitialised, so no model.path or init work is wasted, and a
// config that names no model shape takes the checkpoint's); "" for a fresh start.
std::unique_ptr<TrainingRun> build_training_run(const RunConfig& config, Placement& place,
                                                const std::string& checkpoint);

// Only the backend and the model of a run (weights from model.path or the seed, the adapter
// of model.adapter; none when `checkpoint` is about to be loaded, but a PEFT model's frozen
// base): no data, no optimizer. For `temper eval`.
std::unique_ptr<TrainingRun> build_model_run(const RunConfig& config, Placement& place,
                                             const std::string& checkpoint);

// An error when parallel.tp exceeds the ranks running.
void check_ranks_for_tp(const ProcessInfo& process, int64_t tp);
// Under mpirun / srun: starts MPI and makes `place` one rank of a dp × tp grid of the world.
void start_mpi(Placement& place, int64_t tp, double timeout_s);

}  // namespace temper
