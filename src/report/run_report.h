// The run report: OUT_DIR/report.html, one self-contained page (inline CSS and SVG, no
// scripts, nothing fetched) that any browser opens offline, also from a cluster's shared
// file system. Built from what `temper train` leaves in OUT_DIR: metrics.jsonl (loss,
// learning rate, gradient norm, tokens/s, MFU, memory per step; validation loss),
// events.jsonl (start, resumes, checkpoints, end), config.yaml. `temper train` writes it
// at every validation and at the end of the run; `temper report OUT_DIR` at any time.
#pragma once
#include <string>

namespace temper {

// Writes RUN_DIR/report.html (through a temp file and a rename, so a reader never sees half
// a page) and returns its path. An error names RUN_DIR when it holds no metrics.jsonl.
std::string write_run_report(const std::string& run_dir);

// The page itself, from the run directory's files.
std::string run_report_html(const std::string& run_dir);

}  // namespace temper
