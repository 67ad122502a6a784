#include <invp/data/histogram.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <invp/core/atomic_file.h>
#include <invp/core/error.h>

namespace invp::data {
namespace {
std::string fixed3(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}
}  // namespace

void write_histogram(const std::string& title, double lo, double hi, const std::vector<int64_t>& counts,
                     double marker, const std::string& marker_label, const std::string& out_png) {
  if (counts.empty() || !(hi > lo)) throw Error(out_png, "histogram needs bins over a non-empty range");
  const int font = cv::FONT_HERSHEY_SIMPLEX;
  const int left = 60, right = 20, top = 40, plot_h = 260, bottom = 40;
  const int bin_w = std::max(2, 720 / int(counts.size()));
  const int plot_w = bin_w * int(counts.size());
  cv::Mat img(top + plot_h + bottom, left + plot_w + right, CV_8UC3, cv::Scalar(255, 255, 255));
  cv::putText(img, title, cv::Point(8, 24), font, 0.55, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  const int64_t peak = std::max<int64_t>(1, *std::max_element(counts.begin(), counts.end()));
  const double scale = double(plot_h) / std::sqrt(double(peak));
  for (size_t i = 0; i < counts.size(); ++i) {
    const int h = int(std::lround(std::sqrt(double(counts[i])) * scale));
    if (h > 0)
      cv::rectangle(img, cv::Rect(left + int(i) * bin_w, top + plot_h - h, std::max(1, bin_w - 1), h),
                    cv::Scalar(180, 119, 31), cv::FILLED);
  }
  const cv::Scalar black(0, 0, 0), red(40, 40, 220);
  cv::line(img, {left, top + plot_h}, {left + plot_w, top + plot_h}, black, 1);
  cv::line(img, {left, top}, {left, top + plot_h}, black, 1);
  cv::putText(img, std::to_string(peak), cv::Point(4, top + 10), font, 0.4, black, 1, cv::LINE_AA);
  cv::putText(img, "0", cv::Point(left - 14, top + plot_h), font, 0.4, black, 1, cv::LINE_AA);
  cv::putText(img, fixed3(lo), cv::Point(left - 16, top + plot_h + 18), font, 0.4, black, 1, cv::LINE_AA);
  cv::putText(img, fixed3(hi), cv::Point(left + plot_w - 30, top + plot_h + 18), font, 0.4, black, 1, cv::LINE_AA);
  cv::putText(img, "(count, square-root scale)", cv::Point(left + 6, top + plot_h + 34), font, 0.4,
              cv::Scalar(90, 90, 90), 1, cv::LINE_AA);
  if (marker >= lo && marker <= hi) {
    const int x = left + int(std::lround((marker - lo) / (hi - lo) * plot_w));
    cv::line(img, {x, top - 6}, {x, top + plot_h}, red, 2);
    const std::string text = marker_label + " " + fixed3(marker);
    int base = 0;
    const int tw = cv::getTextSize(text, font, 0.45, 1, &base).width;
    const int tx = x + 6 + tw < img.cols ? x + 6 : std::max(0, x - 6 - tw);
    cv::putText(img, text, cv::Point(tx, top + 8), font, 0.45, red, 1, cv::LINE_AA);
  }
  std::vector<uint8_t> png;
  if (!cv::imencode(".png", img, png)) throw Error(out_png, "cannot encode the PNG");
  write_file_atomically(out_png, std::string(png.begin(), png.end()));
}

}  // namespace invp::data
