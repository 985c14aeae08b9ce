// The run report (report/run_report.h, report/svg_chart.h) and the metrics files it is
// made from (train/metrics.h): the CSV beside metrics.jsonl, kept in step with it on a
// resume; a report page built from a run directory's files, its charts, markers and
// escaping. The page in a real browser: tests/report/.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "report/run_report.h"
#include "report/svg_chart.h"
#include "support/test_util.h"
#include "train/metrics.h"

namespace temper {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(MetricsCsv, ARowHasEveryColumnInOrderAndQuotesTextThatNeedsIt) {
  const std::vector<std::string> columns = {"step", "loss", "note", "skipped"};
  EXPECT_EQ(csv_row({{"step", 3}, {"loss", 1.5}, {"skipped", true}}, columns), "3,1.5,,1");
  EXPECT_EQ(csv_row({{"step", 4}, {"note", "a,\"b\""}}, columns), "4,,\"a,\"\"b\"\"\",");
  EXPECT_EQ(csv_row(nlohmann::json::object(), columns), ",,,");
}

TEST(MetricsCsv, FollowsTheJsonLinesThroughAResume) {
  const fs::path dir = test::temp_dir("metrics_csv");
  const std::string jsonl = (dir / "metrics.jsonl").string(), csv = (dir / "metrics.csv").string();
  const auto& columns = metrics_csv_columns();
  {
    MetricsWriter w(jsonl, -1, csv, columns);
    for (int s = 1; s <= 5; ++s) w.write({{"step", s}, {"loss", 6.0 - s}});
    w.write({{"step", 5}, {"val_loss", 0.5}});
  }
  ASSERT_EQ(lines_of(csv).size(), 7u);  // header + 6
  {
    MetricsWriter w(jsonl, 3, csv, columns);  // resumed from the checkpoint of step 3
    w.write({{"step", 4}, {"loss", 9.0}});
  }
  const auto rows = lines_of(csv), json_lines = lines_of(jsonl);
  ASSERT_EQ(json_lines.size(), 4u);
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0].substr(0, 19), "step,loss,val_loss,");
  for (size_t i = 0; i < json_lines.size(); ++i)
    EXPECT_EQ(rows[i + 1], csv_row(nlohmann::json::parse(json_lines[i]), columns));
  EXPECT_EQ(rows[4].substr(0, 6), "4,9.0,");
}

// A run directory: 20 steps of falling loss, validation every 5, checkpoints at 10 and 20,
// resumed after 10; a config with markup in it.
fs::path write_run_dir(const std::string& name, bool ended) {
  const fs::path dir = test::temp_dir(name);
  std::ofstream m(dir / "metrics.jsonl");
  for (int s = 1; s <= 20; ++s) {
    m << nlohmann::json({{"step", s}, {"loss", 5.0 / s}, {"lr", 1e-3}, {"grad_norm", 1.0 + s % 3},
                         {"tokens", 512}, {"tokens_seen", 512 * s}, {"tokens_per_s", 1000.0},
                         // after the resume a slow first step: 7 s, longer than all before it
                         {"elapsed_s", s > 10 ? 7.0 + 0.5 * (s - 11) : 0.5 * s}, {"mfu", 0.25},
                         {"memory_bytes", 1 << 20}, {"peak_memory_bytes", 2 << 20}}).dump() << "\n";
    if (s % 5 == 0) m << nlohmann::json({{"step", s}, {"val_loss", 6.0 / s}}).dump() << "\n";
  }
  m << "{\"step\": 21, \"loss\"";  // a line being written
  std::ofstream e(dir / "events.jsonl");
  e << R"({"step":0,"event":"start","peft_method":"lora","parameters":1000,"trainable_parameters":10,"device":"cpu","peak_tflops":100})" "\n"
    << R"({"step":10,"event":"checkpoint","path":"/x/step-10.h5"})" "\n"
    << R"({"step":10,"event":"resume","from_checkpoint":"/x/step-10.h5","peft_method":"lora","parameters":1000,"trainable_parameters":10,"device":"cpu","peak_tflops":100})" "\n"
    << R"({"step":20,"event":"checkpoint","path":"/x/step-20.h5"})" "\n";
  if (ended) e << R"({"step":20,"event":"end","elapsed_s":12.5})" "\n";  // 1 s after its last step
  std::ofstream(dir / "config.yaml") << "out_dir: <script>alert(1)</script>\n";
  return dir;
}

TEST(RunReport, ShowsCurvesMarkersSummaryAndTheEscapedConfig) {
  const fs::path dir = write_run_dir("report_run", true);
  const std::string path = write_run_report(dir.string());
  EXPECT_EQ(path, (dir / "report.html").string());
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string html = buf.str();
  for (const char* chart : {"loss-step", "loss-tokens", "lr", "grad-norm", "throughput", "mfu", "memory"})
    EXPECT_NE(html.find(fmt::format("data-chart=\"{}\"", chart)), std::string::npos) << chart;
  EXPECT_EQ(html.find("<script"), std::string::npos);  // the config's text is escaped
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_EQ(html.find("http-equiv=\"refresh\""), std::string::npos);  // finished: no reloads
  EXPECT_NE(html.find("finished"), std::string::npos);
  EXPECT_NE(html.find("lora: 10 of 1,000 parameters train (1.000%)"), std::string::npos);
  EXPECT_NE(html.find("best 0.3000 (step 20)"), std::string::npos);
  EXPECT_NE(html.find("25.0% of 100 TFLOP/s"), std::string::npos);
  // 5 s before the resume (killed: its last step's time), 12.5 after (its end event's).
  EXPECT_NE(html.find("wall time</th><td>17.5 s"), std::string::npos);
  // Two checkpoints and one resume, on each of the six step charts and the tokens chart.
  EXPECT_EQ(count(html, "<title>checkpoint at step 10: /x/step-10.h5</title>"), 7u);
  EXPECT_EQ(count(html, "<title>resume after step 10 from /x/step-10.h5</title>"), 7u);
  EXPECT_EQ(html.find("nan"), std::string::npos);
  // The training loss is drawn from its first value to its last.
  EXPECT_NE(html.find("data-series=\"training\" data-first=\"5\" data-last=\"0.25\""), std::string::npos);
}

TEST(RunReport, ARunInProgressReloadsItselfAndSaysSo) {
  const std::string html = run_report_html(write_run_dir("report_running", false).string());
  EXPECT_NE(html.find("http-equiv=\"refresh\""), std::string::npos);
  EXPECT_NE(html.find("in progress"), std::string::npos);
}

TEST(RunReport, ADirectoryWithoutMetricsIsAnErrorNamingIt) {
  const fs::path dir = test::temp_dir("report_empty");
  const std::string e = test::error_of([&] { write_run_report(dir.string()); });
  EXPECT_NE(e.find(dir.string() + ": no metrics.jsonl"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "report.html"));
}

TEST(SvgChart, AnEmptyOrFlatSeriesDrawsWithoutNaNs) {
  Chart empty{"e", "Empty", "step", "v", {{"s", "#000", {}}}, {}};
  EXPECT_NE(svg_line_chart(empty).find("no values logged yet"), std::string::npos);
  Chart flat{"f", "Flat <&>", "step", "v", {{"s", "#000", {{1, 2.0}, {2, 2.0}, {3, NAN}}}}, {{2, "checkpoint x", "#0f0"}}};
  const std::string svg = svg_line_chart(flat);
  EXPECT_EQ(svg.find("nan"), std::string::npos) << svg;
  EXPECT_NE(svg.find("Flat &lt;&amp;&gt;"), std::string::npos);
  EXPECT_EQ(count(svg, "<title>checkpoint x</title>"), 1u);
}

TEST(SvgChart, ALongSeriesIsThinnedToAboutTheChartsWidthKeepingItsEnds) {
  ChartSeries s{"s", "#000", {}};
  for (int i = 0; i < 100000; ++i) s.points.emplace_back(i, 100000 - i);
  const std::string svg = svg_line_chart({"t", "t", "x", "y", {s}, {}});
  EXPECT_LT(svg.size(), 60000u);
  EXPECT_NE(svg.find("data-first=\"100000\" data-last=\"1\""), std::string::npos);
}

}  // namespace
}  // namespace temper
