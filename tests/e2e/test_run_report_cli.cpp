// What a run leaves for people and tools, through the real CLI: a tiny run with
// validation and checkpoints, then resumed to train further. Its end-of-run summary,
// events.jsonl (start, checkpoints, end, resume, ...), metrics.csv row for row with
// metrics.jsonl, report.html (checkpoint and resume markers, the config, rewritten by
// `temper report`), and the report opened in headless Chromium
// (tests/report/check_report_in_browser.py).
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <iostream>
#include <sstream>

#include "e2e/checkpoint_test_util.h"
#include "support/test_util.h"
#include "train/metrics.h"

namespace temper {
namespace {

namespace fs = std::filesystem;
#define EXPECT_HAS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Six steps (validation every 3, checkpoints every 2), then resumed to ten: both outputs.
struct ResumedRun {
  fs::path dir;
  std::string first, second;
};

const ResumedRun& resumed_run() {
  static const ResumedRun r = [] {
    ResumedRun x;
    x.dir = test::temp_dir("run_report");
    const std::string common = "train.eval_every=3 train.eval_batches=2 checkpoint.every=2";
    const auto a = test::run_command(test::train_cmd(x.dir, "train.steps=6 " + common, "timeout 300"));
    EXPECT_EQ(a.status, 0) << a.output;
    const auto b = test::run_command(
        test::train_cmd(x.dir, "train.steps=10 checkpoint.resume=force " + common, "timeout 300"));
    EXPECT_EQ(b.status, 0) << b.output;
    x.first = a.output;
    x.second = b.output;
    return x;
  }();
  return r;
}

TEST(RunSummary, EachRunEndsWithWhatItDidAndWhereEverythingIs) {
  const ResumedRun& r = resumed_run();
  const std::string dir = r.dir.string();
  EXPECT_HAS(r.first, "done: steps 1-6 of 6 in ");
  EXPECT_HAS(r.second, "done: steps 7-10 of 10 in ");
  for (const std::string& out : {r.first, r.second}) {
    EXPECT_HAS(out, "  loss: final ");
    EXPECT_HAS(out, "; validation: final ");
    EXPECT_HAS(out, ", best ");
    EXPECT_HAS(out, " seen in all; ");
    EXPECT_HAS(out, " tokens/s on average, MFU n/a (");
    EXPECT_HAS(out, "  peak memory: ");
    EXPECT_HAS(out, "  model (Hugging Face): " + dir + "/final");
    EXPECT_HAS(out, "  checkpoints: " + dir + "/checkpoints, latest ");
    EXPECT_HAS(out, "  metrics: " + dir + "/metrics.jsonl and " + dir + "/metrics.csv");
    EXPECT_HAS(out, "  report: " + dir + "/report.html");
  }
  EXPECT_HAS(r.first, "3072 seen in all");   // 6 steps of 8 rows of 64
  EXPECT_HAS(r.second, "5120 seen in all");  // counted from the start of the run
  EXPECT_HAS(r.second, "latest " + dir + "/checkpoints/step-00000010.h5");
}

TEST(RunEvents, StartCheckpointsEndThenResume) {
  const ResumedRun& r = resumed_run();
  std::vector<std::string> kinds;
  std::vector<nlohmann::json> events;
  for (const std::string& line : lines_of(r.dir / "events.jsonl")) {
    events.push_back(nlohmann::json::parse(line));
    kinds.push_back(fmt::format("{}@{}", events.back().at("event").get<std::string>(),
                                events.back().at("step").get<int64_t>()));
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"start@0", "checkpoint@2", "checkpoint@4", "checkpoint@6", "end@6",
                                             "resume@6", "checkpoint@8", "checkpoint@10", "end@10"}));
  ASSERT_EQ(events.size(), 9u);
  const nlohmann::json& start = events[0];
  EXPECT_EQ(start.at("peft_method"), "full");
  EXPECT_GT(start.at("parameters").get<int64_t>(), 0);
  EXPECT_EQ(start.at("trainable_parameters"), start.at("parameters"));
  EXPECT_EQ(start.at("world_size"), 1);
  EXPECT_EQ(start.at("steps"), 6);
  EXPECT_EQ(events[5].at("steps"), 10);
  EXPECT_EQ(events[5].at("from_checkpoint"), (r.dir / "checkpoints" / "step-00000006.h5").string());
  EXPECT_EQ(events[6].at("path"), (r.dir / "checkpoints" / "step-00000008.h5").string());
}

TEST(MetricsCsvFile, HasAHeaderAndOneRowPerJsonLine) {
  const ResumedRun& r = resumed_run();
  const auto rows = lines_of(r.dir / "metrics.csv"), json_lines = lines_of(r.dir / "metrics.jsonl");
  ASSERT_EQ(json_lines.size(), 10u + 4u);  // 10 steps, validation at 3, 6, 9, 10
  ASSERT_EQ(rows.size(), json_lines.size() + 1);
  std::string header;
  for (const std::string& c : metrics_csv_columns()) header += (header.empty() ? "" : ",") + c;
  EXPECT_EQ(rows[0], header);
  EXPECT_EQ(rows[0].substr(0, 24), "step,loss,val_loss,val_p");
  for (size_t i = 0; i < json_lines.size(); ++i) {
    const nlohmann::json j = nlohmann::json::parse(json_lines[i]);
    EXPECT_EQ(rows[i + 1], csv_row(j, metrics_csv_columns()));
    // The first two cells as a spreadsheet reads them: the step, then the loss or nothing.
    const std::string& row = rows[i + 1];
    EXPECT_EQ(std::stoll(row.substr(0, row.find(','))), j.at("step").get<int64_t>());
    const size_t a = row.find(',') + 1, b = row.find(',', a);
    if (j.contains("loss")) EXPECT_NEAR(std::stod(row.substr(a, b - a)), j.at("loss").get<double>(), 1e-12);
    else EXPECT_EQ(b, a);
  }
}

TEST(RunReportFile, MarksCheckpointsAndTheResumeAndIsRewrittenByTemperReport) {
  const ResumedRun& r = resumed_run();
  const fs::path report = r.dir / "report.html";
  const std::string html = read_text(report);
  EXPECT_HAS(html, "finished");
  EXPECT_HAS(html, fmt::format("<title>resume after step 6 from {}/checkpoints/step-00000006.h5</title>",
                               r.dir.string()));
  EXPECT_HAS(html, fmt::format("<title>checkpoint at step 10: {}/checkpoints/step-00000010.h5</title>",
                               r.dir.string()));
  EXPECT_HAS(html, "full: ");
  EXPECT_HAS(html, "learning rate");  // the config, as config.yaml has it
  EXPECT_EQ(html.find("<script"), std::string::npos);

  fs::remove(report);
  const auto again = test::run_command(test::temper_bin() + " report " + r.dir.string());
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_HAS(again.output, report.string());
  ASSERT_TRUE(fs::exists(report));
  EXPECT_HAS(read_text(report), fmt::format("<title>resume after step 6 from {}/checkpoints/step-00000006.h5",
                                            r.dir.string()));

  const auto missing = test::run_command(test::temper_bin() + " report " + (r.dir / "nothing").string());
  EXPECT_NE(missing.status, 0);
  EXPECT_HAS(missing.output, (r.dir / "nothing").string());
}

// Headless Chromium from Debian opens the report: no console messages, no network, a
// screenshot that is not blank and shows the training loss line, falling. The screenshot
// stays at DIR/report.png.
TEST(RunReportInBrowser, TheReportOfATinyRunRendersWithoutErrors) {
  const ResumedRun& r = resumed_run();
  std::string output;
  const int status = test::run_python(
      "report/check_report_in_browser.py", {(r.dir / "report.html").string(), (r.dir / "report.png").string()},
      &output);
  EXPECT_EQ(status, 0) << output;
  EXPECT_HAS(output, "PASS");
  std::cout << output;
}

}  // namespace
}  // namespace temper
