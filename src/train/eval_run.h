// `temper eval`: the loss and perplexity of a model on one split of an HDF5 token dataset,
// over the tokens it marks as targets (the assistant's in chat data, every next token in
// text data). Each document is scored on its own, from its first token, one document per
// row (a document longer than the rows continues in the next row, without the context
// before it); the micro-batches are dealt to the data-parallel ranks in turn and the
// sums are added up, so the result does not depend on the layout (dp, tp) beyond fp32
// reduction order.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace temper {

struct EvalOptions {
  // A Hugging Face model directory, a .gguf file, a PEFT adapter directory (its base is
  // the one adapter_config.json names), or a temper checkpoint (a .h5 file, a run
  // directory or its checkpoints/: the newest), whose stored config gives model and PEFT.
  std::string model;
  std::string adapter;        // a PEFT adapter directory applied to `model`
  std::string data;           // the HDF5 token dataset (`temper prepare`)
  std::string split = "val";  // val | train | all
  int64_t batch_size = 4;     // rows per micro-batch
  int64_t seq_len = 0;        // row length; 0: the longest document, within the model's context
  int64_t tp = 1;             // tensor-parallel ranks (the rest of the world is dp)
  std::string backend = "auto";  // auto | cpu | cuda
  std::string dtype;             // "" (f32 on cpu, bf16 on cuda) | f32 | bf16 | f16
  double timeout_s = 600;        // a collective that waits longer is an error naming the rank
};

struct EvalResult {
  double loss = 0.0;        // mean cross-entropy per target token (nats)
  double perplexity = 0.0;  // exp(loss)
  int64_t target_tokens = 0;
  int64_t tokens = 0;       // document tokens read (padding not counted)
  int64_t documents = 0;
  int64_t windowed_documents = 0;  // longer than a row: scored in pieces
  double seconds = 0.0;
  double tokens_per_s = 0.0;
  int dp = 1, tp = 1;
  int64_t seq_len = 0, batch_size = 0;
  std::string split, model, data, device;
};

// Runs the evaluation (a collective under mpirun: every rank calls it; every rank gets the
// result). Errors name the file or option at fault.
EvalResult run_eval(const EvalOptions& options);

nlohmann::json eval_result_json(const EvalResult& r);
std::string format_eval_result(const EvalResult& r);  // one line for the terminal

}  // namespace temper
