#include "report/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace temper {
namespace {

constexpr int kLeft = 64, kRight = 16, kTop = 34, kBottom = 58;  // plot margins (px)
constexpr size_t kMaxPoints = 2000;  // more points than pixels: thinned, keeping the last

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
  // Widened to round tick values, never zero-width.
  std::vector<double> ticks(int wanted) {
    if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
      const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
      lo -= pad;
      hi += pad;
    }
    const double raw = (hi - lo) / wanted, mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
      if (m * mag >= raw) {
        step = m * mag;
        break;
      }
    lo = std::floor(lo / step) * step;
    hi = std::ceil(hi / step) * step;
    std::vector<double> out;
    for (double t = lo; t <= hi + step * 1e-6; t += step) out.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
    return out;
  }
};

std::vector<std::pair<double, double>> thinned(const std::vector<std::pair<double, double>>& p) {
  if (p.size() <= kMaxPoints) return p;
  std::vector<std::pair<double, double>> out;
  const double stride = double(p.size() - 1) / double(kMaxPoints - 1);
  for (size_t i = 0; i < kMaxPoints; ++i) out.push_back(p[size_t(std::llround(double(i) * stride))]);
  return out;
}

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string short_number(double v) {
  const double a = std::abs(v);
  if (a >= 1e9) return fmt::format("{:g}G", v / 1e9);
  if (a >= 1e6) return fmt::format("{:g}M", v / 1e6);
  if (a >= 1e4) return fmt::format("{:g}k", v / 1e3);
  return fmt::format("{:.4g}", v);
}

std::string svg_line_chart(const Chart& chart, int width, int height) {
  Range xr, yr;
  for (const auto& s : chart.series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      xr.add(x);
      yr.add(y);
    }
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" data-chart=\"{}\" width=\"{}\" "
      "height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{}\">\n"
      "<text x=\"{}\" y=\"20\" class=\"title\">{}</text>\n",
      html_escape(chart.id), width, height, width, height, html_escape(chart.title), kLeft,
      html_escape(chart.title));
  if (xr.empty()) {
    return svg + fmt::format("<text x=\"{}\" y=\"{}\" class=\"empty\">no values logged yet</text>\n</svg>\n",
                             width / 2, height / 2);
  }
  const std::vector<double> xt = xr.ticks(6), yt = yr.ticks(5);
  const double pw = width - kLeft - kRight, ph = height - kTop - kBottom;
  auto px = [&](double x) { return kLeft + (x - xr.lo) / (xr.hi - xr.lo) * pw; };
  auto py = [&](double y) { return kTop + (yr.hi - y) / (yr.hi - yr.lo) * ph; };

  for (double t : yt)
    svg += fmt::format("<line class=\"grid\" x1=\"{}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\"/>"
                       "<text class=\"tick\" x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n",
                       kLeft, kLeft + pw, py(t), py(t), kLeft - 6, py(t) + 4, short_number(t));
  for (double t : xt)
    svg += fmt::format("<line class=\"grid\" x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{}\" y2=\"{:.1f}\"/>"
                       "<text class=\"tick\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                       px(t), px(t), kTop, kTop + ph, px(t), kTop + ph + 16, short_number(t));
  svg += fmt::format("<rect class=\"frame\" x=\"{}\" y=\"{}\" width=\"{:.1f}\" height=\"{:.1f}\"/>\n",
                     kLeft, kTop, pw, ph);
  svg += fmt::format("<text class=\"axis\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                     kLeft + pw / 2, kTop + ph + 34, html_escape(chart.x_label));
  svg += fmt::format("<text class=\"axis\" transform=\"translate(14,{:.1f}) rotate(-90)\" "
                     "text-anchor=\"middle\">{}</text>\n", kTop + ph / 2, html_escape(chart.y_label));

  for (const auto& m : chart.markers) {
    if (m.x < xr.lo || m.x > xr.hi) continue;
    svg += fmt::format("<line class=\"marker\" stroke=\"{}\" x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{}\" "
                       "y2=\"{:.1f}\"><title>{}</title></line>\n",
                       m.color, px(m.x), px(m.x), kTop, kTop + ph, html_escape(m.label));
  }
  double legend_x = kLeft;
  for (const auto& s : chart.series) {
    const auto points = thinned(s.points);
    std::string coords;
    double first = NAN, last = NAN;
    for (const auto& [x, y] : points) {
      if (!std::isfinite(y)) continue;
      coords += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
      if (std::isnan(first)) first = y;
      last = y;
    }
    svg += fmt::format("<polyline class=\"{}\" data-series=\"{}\" data-first=\"{}\" data-last=\"{}\" "
                       "stroke=\"{}\" points=\"{}\"/>\n",
                       s.dots ? "series thin" : "series", html_escape(s.name), first, last, s.color,
                       coords);
    if (s.dots)
      for (const auto& [x, y] : points)
        if (std::isfinite(y))
          svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"><title>{}: {:.5g} "
                             "at {}</title></circle>\n", px(x), py(y), s.color, html_escape(s.name), y,
                             short_number(x));
    svg += fmt::format("<rect x=\"{:.0f}\" y=\"{}\" width=\"12\" height=\"4\" fill=\"{}\"/>"
                       "<text class=\"legend\" x=\"{:.0f}\" y=\"{}\">{}</text>\n",
                       legend_x, height - 12, s.color, legend_x + 16, height - 7, html_escape(s.name));
    legend_x += 30 + 7.0 * double(s.name.size());
  }
  std::vector<std::pair<std::string, std::string>> kinds;  // marker legend, one per colour
  for (const auto& m : chart.markers) {
    const std::string kind = m.label.substr(0, m.label.find(' '));
    if (std::none_of(kinds.begin(), kinds.end(), [&](const auto& k) { return k.second == m.color; }))
      kinds.emplace_back(kind, m.color);
  }
  for (const auto& [kind, color] : kinds) {
    svg += fmt::format("<line class=\"marker\" stroke=\"{}\" x1=\"{:.0f}\" x2=\"{:.0f}\" y1=\"{}\" "
                       "y2=\"{}\"/><text class=\"legend\" x=\"{:.0f}\" y=\"{}\">{}</text>\n",
                       color, legend_x + 4, legend_x + 4, height - 16, height - 4, legend_x + 10,
                       height - 7, html_escape(kind));
    legend_x += 24 + 7.0 * double(kind.size());
  }
  return svg + "</svg>\n";
}

}  // namespace temper
