#include "invp/data/montage.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <system_error>

#include "invp/core/error.h"

namespace invp::data {

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
      // Trim until it fits under the tile; a caption never bleeds into its neighbour.
      std::string text = captions[t];
      int base = 0;
      while (text.size() > 1 &&
             cv::getTextSize(text, font, font_scale, 1, &base).width > tile_px)
        text.pop_back();
      cv::putText(sheet, text, cv::Point(x0, y0 + tile_px + kMontageCaptionH - 3), font,
                  font_scale, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
    }
  }

  std::vector<uint8_t> png;
  if (!cv::imencode(".png", sheet, png)) throw Error(out_png, "cannot encode the montage");
  const std::string tmp = out_png + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(out_png, "cannot write", "check that the directory exists and is writable");
    f.write(reinterpret_cast<const char*>(png.data()), std::streamsize(png.size()));
    f.close();
    if (!f) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw Error(out_png, "cannot write", "is the disk full?");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, out_png, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw Error(out_png, "cannot write: " + ec.message());
  }
}

}  // namespace invp::data
