#include <invp/core/error.h>
#include <invp/data/decode.h>
#include <invp/data/distort.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>

namespace invp::data {
namespace {
constexpr const char* kNames[] = {"crop", "scale", "jpeg", "colour", "flip", "mixed"};

double uniform(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

void crop(cv::Mat& m, std::mt19937_64& rng) {
  const double keep = uniform(rng, 0.70, 0.90);
  const int w = std::max(1, int(m.cols * keep)), h = std::max(1, int(m.rows * keep));
  const int x = int(uniform(rng, 0, 1) * (m.cols - w)), y = int(uniform(rng, 0, 1) * (m.rows - h));
  cv::Mat out;
  cv::resize(m(cv::Rect(x, y, w, h)), out, m.size(), 0, 0, cv::INTER_LINEAR);
  m = out;
}

void scale(cv::Mat& m, std::mt19937_64& rng) {
  const double f = uniform(rng, 0.35, 0.50);
  cv::Mat small, out;
  cv::resize(m, small, cv::Size(std::max(1, int(m.cols * f)), std::max(1, int(m.rows * f))), 0, 0, cv::INTER_AREA);
  cv::resize(small, out, m.size(), 0, 0, cv::INTER_LINEAR);
  m = out;
}

void jpeg(cv::Mat& m, std::mt19937_64& rng) {
  const bool rgb = m.channels() == 3;  // OpenCV's codecs take BGR: luma must weigh the right channels
  if (rgb) cv::cvtColor(m, m, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> buf;
  const int quality = int(uniform(rng, 20, 50));
  if (!cv::imencode(".jpg", m, buf, {cv::IMWRITE_JPEG_QUALITY, quality})) throw Error("", "JPEG encoding failed");
  m = cv::imdecode(buf, rgb ? cv::IMREAD_COLOR : cv::IMREAD_GRAYSCALE);
  if (rgb) cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
}

void colour(cv::Mat& m, std::mt19937_64& rng) {
  m.convertTo(m, -1, uniform(rng, 0.7, 1.3), uniform(rng, -30, 30));  // contrast, brightness
  if (m.channels() == 1) return;
  std::vector<cv::Mat> ch;
  cv::split(m, ch);
  for (auto& c : ch) c.convertTo(c, -1, uniform(rng, 0.75, 1.25), 0);
  cv::merge(ch, m);
}

void apply(cv::Mat& m, Distortion d, std::mt19937_64& rng) {
  switch (d) {
    case Distortion::crop: return crop(m, rng);
    case Distortion::scale: return scale(m, rng);
    case Distortion::jpeg: return jpeg(m, rng);
    case Distortion::colour: return colour(m, rng);
    case Distortion::flip: return cv::flip(m.clone(), m, 1);
    case Distortion::mixed: {
      bool use[5];
      int n = 0;
      while (n < 2) {
        n = 0;
        for (bool& b : use) n += (b = uniform(rng, 0, 1) < 0.5);
      }
      for (int k = 0; k < 5; ++k)
        if (use[k]) apply(m, Distortion(k), rng);
      return;
    }
  }
}
}  // namespace

Distortion distortion_named(const std::string& name) {
  for (int k = 0; k < 6; ++k)
    if (name == kNames[k]) return Distortion(k);
  throw Error("", "unknown distortion '" + name + "' (crop, scale, jpeg, colour, flip or mixed)");
}

std::string distortion_name(Distortion d) { return kNames[int(d)]; }

std::vector<Distortion> all_distortions() {
  return {Distortion::crop, Distortion::scale, Distortion::jpeg, Distortion::colour, Distortion::flip, Distortion::mixed};
}

Image distort(const Image& img, Distortion d, std::mt19937_64& rng) {
  if (img.empty()) throw Error("", "cannot distort an empty image");
  cv::Mat m(img.height, img.width, CV_8UC(img.channels), const_cast<uint8_t*>(img.pixels.data()));
  m = m.clone();
  apply(m, d, rng);
  if (!m.isContinuous()) m = m.clone();
  return to_image(m.data, m.rows, m.cols, m.channels());
}

}  // namespace invp::data
