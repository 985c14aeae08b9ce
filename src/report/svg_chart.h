// Line charts as inline SVG text, for the run report (report/run_report.h): axes with round
// ticks, one polyline (or dots) per series, a legend, and dashed vertical markers (the
// checkpoints and resumes of a run). No scripts, no external resources.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace temper {

struct ChartSeries {
  std::string name;
  std::string color;                               // CSS colour
  std::vector<std::pair<double, double>> points;   // (x, y), x ascending
  bool dots = false;                               // dots joined by a thin line (few points)
};

struct ChartMarker {
  double x = 0;
  std::string label;  // shown on hover (SVG <title>) and in the legend by colour
  std::string color;
};

struct Chart {
  std::string id;  // data-chart attribute: what the chart shows, for tests and styling
  std::string title, x_label, y_label;
  std::vector<ChartSeries> series;
  std::vector<ChartMarker> markers;
};

// The chart as an <svg> element `width` × `height` pixels; a chart without points says so.
std::string svg_line_chart(const Chart& chart, int width = 580, int height = 300);

// `text` with &, <, >, " and ' escaped for HTML and SVG.
std::string html_escape(const std::string& text);

// A number as a short axis label: 0.0012, 3.5, 12k, 1.2M.
std::string short_number(double v);

}  // namespace temper
