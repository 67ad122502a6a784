#include <invp/data/montage.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <invp/core/atomic_file.h>
#include <invp/core/error.h>

namespace invp::data {
namespace {
// Encodes and commits a picture atomically (temp file, fsync, rename).
void save_png(const cv::Mat& bgr, const std::string& out_png) {
  std::vector<uint8_t> png;
  if (!cv::imencode(".png", bgr, png)) throw Error(out_png, "cannot encode the PNG");
  write_file_atomically(out_png, std::string(png.begin(), png.end()));
}
}  // namespace

void write_montage(const std::vector<Image>& tiles, const std::vector<std::string>& captions,
                   int cols, int tile_px, const std::string& out_png) {
  if (tiles.empty()) throw Error(out_png, "no images to draw in the montage");
  if (cols <= 0 || tile_px <= 0)
    throw Error(out_png, "montage needs positive columns and tile size");
  const int rows = int((tiles.size() + size_t(cols) - 1) / size_t(cols));
  const int cell_w = tile_px + kMontagePad, cell_h = tile_px + kMontageCaptionH + kMontagePad;
  cv::Mat sheet(rows * cell_h + kMontagePad, cols * cell_w + kMontagePad, CV_8UC3,
                cv::Scalar(255, 255, 255));

  const int font = cv::FONT_HERSHEY_SIMPLEX;
  const double font_scale = 0.35;
  for (size_t t = 0; t < tiles.size(); ++t) {
    const Image& im = tiles[t];
    const int x0 = kMontagePad + int(t % size_t(cols)) * cell_w;
    const int y0 = kMontagePad + int(t / size_t(cols)) * cell_h;
    if (!im.empty() && im.height > 0 && im.width > 0 && (im.channels == 1 || im.channels == 3)) {
      cv::Mat src(im.height, im.width, CV_8UC(im.channels),
                  const_cast<uint8_t*>(im.pixels.data()));
      cv::Mat bgr;
      if (im.channels == 1) cv::cvtColor(src, bgr, cv::COLOR_GRAY2BGR);
      else cv::cvtColor(src, bgr, cv::COLOR_RGB2BGR);
      const double s = double(tile_px) / std::max(im.height, im.width);
      const int w = std::max(1, int(std::lround(im.width * s)));
      const int h = std::max(1, int(std::lround(im.height * s)));
      cv::Mat scaled;
      cv::resize(bgr, scaled, cv::Size(w, h), 0, 0, s >= 1 ? cv::INTER_NEAREST : cv::INTER_AREA);
      scaled.copyTo(sheet(cv::Rect(x0 + (tile_px - w) / 2, y0 + (tile_px - h) / 2, w, h)));
    }
    if (t < captions.size() && !captions[t].empty()) {
      // One line when it fits under the tile, else two (split at the first space: score, then
      // category), each shrunk a little and only then cut, so names like "Ankle boot" stay whole.
      const std::string& c = captions[t];
      const size_t sp = c.find(' ');
      std::vector<std::string> lines = {c};
      int base = 0;
      if (cv::getTextSize(c, font, font_scale, 1, &base).width > tile_px && sp != std::string::npos)
        lines = {c.substr(0, sp), c.substr(sp + 1)};
      for (size_t l = 0; l < lines.size(); ++l) {
        std::string text = lines[l];
        double scale = font_scale;
        while (scale > 0.27 && cv::getTextSize(text, font, scale, 1, &base).width > tile_px) scale -= 0.02;
        while (text.size() > 1 && cv::getTextSize(text, font, scale, 1, &base).width > tile_px) text.pop_back();
        cv::putText(sheet, text, cv::Point(x0, y0 + tile_px + 11 + int(l) * 12), font, scale, cv::Scalar(0, 0, 0),
                    1, cv::LINE_AA);
      }
    }
  }

  save_png(sheet, out_png);
}

void write_image_png(const Image& img, const std::string& out_png) {
  if (img.empty() || (img.channels != 1 && img.channels != 3)) throw Error(out_png, "no image to write");
  cv::Mat src(img.height, img.width, CV_8UC(img.channels), const_cast<uint8_t*>(img.pixels.data()));
  cv::Mat bgr;
  if (img.channels == 3) cv::cvtColor(src, bgr, cv::COLOR_RGB2BGR);
  else bgr = src;
  save_png(bgr, out_png);
}

std::vector<uint8_t> encode_png(const Image& img) {
  if (img.empty() || (img.channels != 1 && img.channels != 3)) throw Error("", "no image to encode");
  cv::Mat src(img.height, img.width, CV_8UC(img.channels), const_cast<uint8_t*>(img.pixels.data()));
  cv::Mat bgr;
  if (img.channels == 3) cv::cvtColor(src, bgr, cv::COLOR_RGB2BGR);
  else bgr = src;
  std::vector<uint8_t> out;
  if (!cv::imencode(".png", bgr, out)) throw Error("", "PNG encoding failed");
  return out;
}

void write_bar_chart(const std::string& title, const std::vector<std::string>& names,
                     const std::vector<double>& values, const std::string& out_png) {
  if (names.empty() || names.size() != values.size())
    throw Error(out_png, "bar chart needs one value per name");
  const int font = cv::FONT_HERSHEY_SIMPLEX;
  const double fs = 0.45;
  int base = 0, label_w = 0;
  for (const auto& n : names) label_w = std::max(label_w, cv::getTextSize(n, font, fs, 1, &base).width);
  label_w = std::min(label_w, 220);
  const int bar_w = 360, row_h = 22, top = 36, left = label_w + 16;
  const int width = left + bar_w + 70, height = top + int(names.size()) * row_h + 12;
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  cv::putText(img, title, cv::Point(8, 22), font, 0.55, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  for (size_t i = 0; i < names.size(); ++i) {
    const int y = top + int(i) * row_h;
    const double v = std::clamp(values[i], 0.0, 1.0);
    cv::putText(img, names[i], cv::Point(8, y + 15), font, fs, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
    cv::rectangle(img, cv::Rect(left, y + 3, bar_w, row_h - 6), cv::Scalar(235, 235, 235), cv::FILLED);
    cv::rectangle(img, cv::Rect(left, y + 3, std::max(1, int(std::lround(v * bar_w))), row_h - 6),
                  cv::Scalar(180, 119, 31), cv::FILLED);
    char txt[32];
    std::snprintf(txt, sizeof txt, "%.1f%%", 100.0 * values[i]);
    cv::putText(img, txt, cv::Point(left + bar_w + 6, y + 15), font, fs, cv::Scalar(0, 0, 0), 1,
                cv::LINE_AA);
  }
  save_png(img, out_png);
}

}  // namespace invp::data
