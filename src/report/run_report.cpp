#include "report/run_report.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "report/svg_chart.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace temper {
namespace {

constexpr const char* kTrainColor = "#1f77b4";
constexpr const char* kValColor = "#d62728";
constexpr const char* kPeakColor = "#9467bd";
constexpr const char* kCheckpointColor = "#2e7d32";
constexpr const char* kResumeColor = "#ef6c00";

// What a run directory holds, as read: JSON lines that do not parse (a line being written)
// are skipped.
struct RunLog {
  std::vector<json> steps;   // metrics.jsonl lines with "loss"
  std::vector<json> vals;    // metrics.jsonl lines with "val_loss"
  std::vector<json> events;  // events.jsonl
  std::string config_yaml;
};

std::vector<json> json_lines(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step")) out.push_back(std::move(j));
  }
  return out;
}

RunLog read_run_log(const fs::path& dir) {
  if (!fs::exists(dir / "metrics.jsonl"))
    fail("{}: no metrics.jsonl here (is it the out_dir of a temper train run?)", dir.string());
  RunLog log;
  for (json& j : json_lines(dir / "metrics.jsonl")) {
    if (j.contains("loss")) log.steps.push_back(std::move(j));
    else if (j.contains("val_loss")) log.vals.push_back(std::move(j));
  }
  log.events = json_lines(dir / "events.jsonl");
  std::ifstream config(dir / "config.yaml");
  std::stringstream text;
  text << config.rdbuf();
  log.config_yaml = text.str();
  return log;
}

double number(const json& j, const char* key, double otherwise = NAN) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : otherwise;
}

std::string text_of(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

// (step, value) of every step line that has `key`, scaled.
std::vector<std::pair<double, double>> per_step(const std::vector<json>& lines, const char* key,
                                                double scale = 1.0) {
  std::vector<std::pair<double, double>> out;
  for (const json& j : lines)
    if (const double v = number(j, key); !std::isnan(v)) out.emplace_back(number(j, "step"), v * scale);
  return out;
}

// The last start or resume event: what the run trains and where.
json last_start(const RunLog& log) {
  json start = json::object();
  for (const json& e : log.events)
    if (text_of(e, "event") == "start" || text_of(e, "event") == "resume") start = e;
  return start;
}

std::string status_of(const RunLog& log) {
  const std::string last = log.events.empty() ? "" : text_of(log.events.back(), "event");
  if (last == "end") return "finished";
  if (last == "stopped") return "stopped by " + text_of(log.events.back(), "signal") + " (resumable)";
  if (last == "failed") return "stopped: too many non-finite steps";
  return "in progress, or ended without saying so (killed?)";
}

struct Totals {
  double wall_s = 0, tokens_per_s = 0, mfu = NAN, peak_bytes = 0;
};

// Wall time over all the run's processes: each (from its start or resume event) adds the
// elapsed_s of its end, stopped or failed event, or of its last step when it has none
// (killed). elapsed_s restarts with each process: the step after a resume event's step
// is the first of a new one. Mean tokens/s and MFU over step time; the highest memory peak.
Totals totals_of(const RunLog& log) {
  std::map<double, double> closed_at;  // the step a process opened at -> its final elapsed_s
  std::set<double> resumed_after;
  double opened = 0;
  for (const json& e : log.events) {
    const std::string kind = text_of(e, "event");
    if (kind == "start" || kind == "resume") opened = number(e, "step", 0);
    if (kind == "resume") resumed_after.insert(opened);
    if ((kind == "end" || kind == "stopped" || kind == "failed") && e.contains("elapsed_s"))
      closed_at[opened] = number(e, "elapsed_s", 0);
  }
  Totals t;
  double segment = 0, step_time = 0, tokens = 0, mfu_time = 0, mfu_sum = 0;
  opened = log.events.empty() ? 0 : number(log.events.front(), "step", 0);
  const auto close_segment = [&] {
    const auto c = closed_at.find(opened);
    t.wall_s += std::max(segment, c == closed_at.end() ? 0.0 : c->second);
    segment = 0;
  };
  for (const json& j : log.steps) {
    if (const double step = number(j, "step"); resumed_after.count(step - 1)) {
      close_segment();
      opened = step - 1;
    }
    segment = number(j, "elapsed_s", segment);
    const double tps = number(j, "tokens_per_s", 0), n = number(j, "tokens", 0);
    if (tps > 0) {
      step_time += n / tps;
      tokens += n;
      if (const double m = number(j, "mfu"); !std::isnan(m)) {
        mfu_time += n / tps;
        mfu_sum += m * n / tps;
      }
    }
    t.peak_bytes = std::max(t.peak_bytes, number(j, "peak_memory_bytes", 0));
  }
  close_segment();
  t.tokens_per_s = step_time > 0 ? tokens / step_time : 0;
  if (mfu_time > 0) t.mfu = mfu_sum / mfu_time;
  return t;
}

std::string duration(double s) {
  const int64_t t = int64_t(s + 0.5);
  if (t < 60) return fmt::format("{:.1f} s", s);
  if (t < 3600) return fmt::format("{} min {:02} s", t / 60, t % 60);
  return fmt::format("{} h {:02} min", t / 3600, t % 3600 / 60);
}

std::string grouped(double v) {  // 1234567 -> 1,234,567
  std::string digits = fmt::format("{:.0f}", v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

std::string summary_table(const RunLog& log, const json& start) {
  std::vector<std::pair<std::string, std::string>> rows;
  const Totals t = totals_of(log);
  const json* last = log.steps.empty() ? nullptr : &log.steps.back();
  rows.emplace_back("status", status_of(log));
  rows.emplace_back("steps", last ? fmt::format("{} of {}", number(*last, "step"), number(start, "steps", 0))
                                  : "none yet");
  if (last) rows.emplace_back("training loss", fmt::format("{:.4f} (last step)", number(*last, "loss")));
  if (!log.vals.empty()) {
    const auto best = std::min_element(log.vals.begin(), log.vals.end(), [](const json& a, const json& b) {
      return number(a, "val_loss") < number(b, "val_loss");
    });
    rows.emplace_back("validation loss",
                      fmt::format("{:.4f} last (step {}), best {:.4f} (step {}), perplexity {:.3f}",
                                  number(log.vals.back(), "val_loss"), number(log.vals.back(), "step"),
                                  number(*best, "val_loss"), number(*best, "step"),
                                  std::exp(number(*best, "val_loss"))));
  }
  if (last) rows.emplace_back("tokens seen", grouped(number(*last, "tokens_seen", 0)));
  rows.emplace_back("wall time", duration(t.wall_s));
  rows.emplace_back("throughput", fmt::format("{} tokens/s on average", grouped(t.tokens_per_s)));
  rows.emplace_back("MFU", std::isnan(t.mfu) ? "n/a: the device's peak is not known (CPU, or an unlisted GPU)"
                                             : fmt::format("{:.1f}% of {:.0f} TFLOP/s per device", 100 * t.mfu,
                                                           number(start, "peak_tflops", 0)));
  rows.emplace_back("peak memory", fmt::format("{:.1f} MiB per rank", t.peak_bytes / 1048576.0));
  const double total = number(start, "parameters", 0), trainable = number(start, "trainable_parameters", 0);
  rows.emplace_back("method", fmt::format("{}: {} of {} parameters train ({:.3f}%)", text_of(start, "peft_method"),
                                          grouped(trainable), grouped(total),
                                          total > 0 ? 100 * trainable / total : 0.0));
  rows.emplace_back("hardware", fmt::format("{} ({}, {}); {} rank(s): dp {} x tp {}, ZeRO-{}",
                                            text_of(start, "device"), text_of(start, "backend"),
                                            text_of(start, "dtype"), number(start, "world_size", 1),
                                            number(start, "dp", 1), number(start, "tp", 1),
                                            number(start, "zero", 0)));
  std::string html = "<table class=\"summary\">\n";
  for (const auto& [k, v] : rows)
    html += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", html_escape(k), html_escape(v));
  return html + "</table>\n";
}

std::string events_table(const RunLog& log) {
  std::string html = "<table class=\"events\"><tr><th>step</th><th>event</th><th>time</th><th>file</th></tr>\n";
  for (const json& e : log.events) {
    const std::string file = text_of(e, "event") == "checkpoint" ? text_of(e, "path") : text_of(e, "from_checkpoint");
    html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n", number(e, "step", 0),
                        html_escape(text_of(e, "event") + (e.contains("signal") ? " (" + text_of(e, "signal") + ")" : "")),
                        html_escape(text_of(e, "time")), html_escape(file));
  }
  return html + "</table>\n";
}

std::vector<std::string> charts(const RunLog& log) {
  std::map<double, double> tokens_at;  // step -> tokens seen after it
  for (const json& j : log.steps) tokens_at[number(j, "step")] = number(j, "tokens_seen", NAN);
  std::vector<ChartMarker> by_step, by_tokens;
  for (const json& e : log.events) {
    const std::string kind = text_of(e, "event");
    if (kind != "checkpoint" && kind != "resume") continue;
    const double step = number(e, "step", 0);
    const ChartMarker m{step,
                        kind == "checkpoint" ? fmt::format("checkpoint at step {}: {}", step, text_of(e, "path"))
                                             : fmt::format("resume after step {} from {}", step, text_of(e, "from_checkpoint")),
                        kind == "checkpoint" ? kCheckpointColor : kResumeColor};
    by_step.push_back(m);
    if (tokens_at.count(step) && !std::isnan(tokens_at[step]))
      by_tokens.push_back({tokens_at[step], m.label, m.color});
  }
  const auto train_loss = per_step(log.steps, "loss"), val_loss = per_step(log.vals, "val_loss");
  std::vector<std::pair<double, double>> train_tokens, val_tokens;
  for (const json& j : log.steps)
    if (!std::isnan(number(j, "tokens_seen"))) train_tokens.emplace_back(number(j, "tokens_seen"), number(j, "loss"));
  for (const auto& [step, v] : val_loss)
    if (tokens_at.count(step) && !std::isnan(tokens_at[step])) val_tokens.emplace_back(tokens_at[step], v);

  std::vector<Chart> list = {
      {"loss-step", "Loss by step", "step", "loss (nats per target token)",
       {{"training", kTrainColor, train_loss}, {"validation", kValColor, val_loss, true}}, by_step},
      {"loss-tokens", "Loss by tokens seen", "tokens seen", "loss",
       {{"training", kTrainColor, train_tokens}, {"validation", kValColor, val_tokens, true}}, by_tokens},
      {"lr", "Learning rate", "step", "learning rate", {{"lr", kTrainColor, per_step(log.steps, "lr")}}, by_step},
      {"grad-norm", "Gradient norm (before clipping)", "step", "global L2 norm",
       {{"gradient norm", kTrainColor, per_step(log.steps, "grad_norm")}}, by_step},
      {"throughput", "Throughput", "step", "tokens/s (global batch)",
       {{"tokens/s", kTrainColor, per_step(log.steps, "tokens_per_s")}}, by_step},
      {"mfu", "Model FLOPs utilisation", "step", "MFU (% of the device's dense peak)",
       {{"MFU %", kTrainColor, per_step(log.steps, "mfu", 100.0)}}, by_step},
      {"memory", "Device memory per rank", "step", "MiB",
       {{"in use after the step", kTrainColor, per_step(log.steps, "memory_bytes", 1.0 / 1048576)},
        {"peak so far", kPeakColor, per_step(log.steps, "peak_memory_bytes", 1.0 / 1048576)}}, by_step},
  };
  std::vector<std::string> out;
  for (const Chart& c : list) {
    if (c.id == "mfu" && c.series[0].points.empty()) {
      out.push_back("<div class=\"note\" data-chart=\"mfu\"><b>Model FLOPs utilisation</b><br>n/a: this "
                    "run's device has no known dense peak (CPU, or a GPU temper does not list; "
                    "<code>temper bench --peak-tflops</code> measures it against one you give).</div>\n");
      continue;
    }
    out.push_back(svg_line_chart(c));
  }
  return out;
}

constexpr const char* kStyle = R"(
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b;
       background: #fafafa; margin: 24px auto; max-width: 1240px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #555; margin: 0 0 16px; word-break: break-all; }
table { border-collapse: collapse; background: #fff; }
th, td { text-align: left; padding: 4px 12px; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
table.summary th { color: #555; font-weight: 600; width: 150px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(590px, 1fr)); gap: 12px; }
svg.chart, .note { background: #fff; border: 1px solid #e0e0e0; border-radius: 4px; }
.note { padding: 16px; color: #555; width: 546px; }
svg .title { font-weight: 600; font-size: 14px; fill: #1b1b1b; }
svg .tick, svg .legend { font-size: 11px; fill: #444; } svg .axis { font-size: 12px; fill: #333; }
svg .empty { font-size: 13px; fill: #888; text-anchor: middle; }
svg .grid { stroke: #ececec; } svg .frame { fill: none; stroke: #bbb; }
svg .series { fill: none; stroke-width: 1.8; stroke-linejoin: round; }
svg .thin { stroke-width: 1; } svg .marker { stroke-dasharray: 4 3; stroke-width: 1.2; }
pre { background: #fff; border: 1px solid #e0e0e0; padding: 12px; overflow-x: auto; font-size: 12px; }
footer { color: #777; margin-top: 24px; font-size: 12px; }
)";

std::string utc_now() {
  return fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(std::time(nullptr)));
}

}  // namespace

std::string run_report_html(const std::string& run_dir) {
  const fs::path dir(run_dir);
  const RunLog log = read_run_log(dir);
  const json start = last_start(log);
  const bool running = log.events.empty() || text_of(log.events.back(), "event") == "start" ||
                       text_of(log.events.back(), "event") == "resume" ||
                       text_of(log.events.back(), "event") == "checkpoint";
  const std::string name = fs::absolute(dir).lexically_normal().string();
  std::string html = fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n{}"
      "<title>temper run: {}</title>\n<style>{}</style>\n</head>\n<body>\n"
      "<h1>temper run report</h1>\n<p class=\"sub\">{} &middot; {} &middot; written {}{}</p>\n",
      // A run in progress: the browser reloads the page every minute.
      running ? "<meta http-equiv=\"refresh\" content=\"60\">\n" : "", html_escape(name), kStyle,
      html_escape(name), html_escape(status_of(log)), utc_now(),
      running ? " (reloads every minute while the run is going)" : "");
  html += summary_table(log, start);
  html += "<h2>Curves</h2>\n<div class=\"charts\">\n";
  for (const std::string& c : charts(log)) html += c;
  html += "</div>\n<p class=\"sub\">Dashed lines: <span style=\"color:#2e7d32\">checkpoints saved</span>, "
          "<span style=\"color:#ef6c00\">resumes</span> (hover for the file).</p>\n";
  html += "<h2>Starts, resumes, checkpoints</h2>\n" + events_table(log);
  html += "<h2>Effective config (config.yaml)</h2>\n<pre>" + html_escape(log.config_yaml) + "</pre>\n";
  html += "<footer>From metrics.jsonl, events.jsonl and config.yaml in this directory; the same "
          "metrics as columns: metrics.csv. Rewritten by <code>temper train</code> at each "
          "validation and at the end, or by <code>temper report DIR</code>.</footer>\n</body>\n</html>\n";
  return html;
}

std::string write_run_report(const std::string& run_dir) {
  const std::string html = run_report_html(run_dir);
  const fs::path path = fs::path(run_dir) / "report.html", temp = fs::path(run_dir) / "report.html.tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << html;
    out.close();
    if (!out) fail("cannot write '{}': {}", temp.string(), std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(temp, path, ec);
  if (ec) fail("cannot write '{}': {}", path.string(), ec.message());
  return path.string();
}

}  // namespace temper
