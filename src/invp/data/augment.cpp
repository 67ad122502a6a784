#include <invp/data/augment.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <opencv2/imgproc.hpp>

#include <invp/core/error.h>

namespace invp::data {
namespace {

// Own uniform draws: std::uniform_real_distribution is implementation-defined, and
// augmentations must be reproducible across standard libraries.
double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }
double uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * uniform01(rng);
}
int randint(std::mt19937_64& rng, int lo, int hi) {  // inclusive
  return lo + int(uniform01(rng) * double(hi - lo + 1));
}
bool coin(std::mt19937_64& rng, float p) {
  // Skip the draw for p 0 or 1 so disabled ops do not shift the stream.
  if (p <= 0.f) return false;
  if (p >= 1.f) return true;
  return uniform01(rng) < p;
}

cv::Mat as_mat(const Image& img) {
  return cv::Mat(img.height, img.width, CV_8UC(img.channels),
                 const_cast<uint8_t*>(img.pixels.data()));
}

Image from_mat(const cv::Mat& m) {
  Image out;
  out.height = m.rows;
  out.width = m.cols;
  out.channels = m.channels();
  out.pixels.resize(size_t(m.rows) * m.cols * m.channels());
  cv::Mat dst(m.rows, m.cols, m.type(), out.pixels.data());
  m.copyTo(dst);
  return out;
}

inline float luma(const float* p) { return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]; }
inline float clamp255(float v) { return std::min(255.f, std::max(0.f, v)); }

// ColorJitter on a float HWC buffer in [0,255]; clamps after each op like torchvision.
void adjust_brightness(std::vector<float>& px, float f) {
  for (float& v : px) v = clamp255(v * f);
}

void adjust_contrast(std::vector<float>& px, int c, float f) {
  size_t n = px.size() / c;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += c == 3 ? luma(&px[i * 3]) : px[i];
  float mean = float(sum / double(n));
  for (float& v : px) v = clamp255(f * v + (1 - f) * mean);
}

void adjust_saturation(std::vector<float>& px, float f) {  // 3 channels only
  for (size_t i = 0; i < px.size(); i += 3) {
    float g = luma(&px[i]);
    for (int k = 0; k < 3; ++k) px[i + k] = clamp255(f * px[i + k] + (1 - f) * g);
  }
}

// Hue shift through HSV, as torchvision's _rgb2hsv/_hsv2rgb (h in [0,1)).
void adjust_hue(std::vector<float>& px, float shift) {  // 3 channels only
  for (size_t i = 0; i < px.size(); i += 3) {
    float r = px[i] / 255.f, g = px[i + 1] / 255.f, b = px[i + 2] / 255.f;
    float mx = std::max({r, g, b}), mn = std::min({r, g, b}), cr = mx - mn;
    if (cr <= 0.f) continue;  // grey pixels have no hue to rotate
    float h;
    if (mx == r) h = (g - b) / cr;
    else if (mx == g) h = 2.f + (b - r) / cr;
    else h = 4.f + (r - g) / cr;
    h = h / 6.f + shift;
    h -= std::floor(h);
    float s = cr / mx, v = mx;
    float h6 = h * 6.f;
    int sector = int(h6) % 6;
    float fr = h6 - std::floor(h6);
    float p = v * (1 - s), q = v * (1 - s * fr), t = v * (1 - s * (1 - fr));
    float rgb[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    for (int k = 0; k < 3; ++k) px[i + k] = clamp255(rgb[sector][k] * 255.f);
  }
}

void color_jitter(cv::Mat& m, const AugmentConfig& cfg, std::mt19937_64& rng) {
  const int c = m.channels();
  // torchvision draws the order first, then each factor in fixed order.
  std::array<int, 4> order = {0, 1, 2, 3};
  for (int i = 3; i > 0; --i) std::swap(order[i], order[randint(rng, 0, i)]);
  auto factor = [&](float s) {
    return s > 0 ? float(uniform(rng, std::max(0.f, 1 - s), 1 + s)) : 1.f;
  };
  float fb = factor(cfg.brightness), fc = factor(cfg.contrast), fs = factor(cfg.saturation);
  float fh = cfg.hue > 0 ? float(uniform(rng, -cfg.hue, cfg.hue)) : 0.f;

  std::vector<float> px(m.total() * c);
  const uint8_t* src = m.ptr<uint8_t>();  // m is continuous: it comes from cv::resize
  for (size_t i = 0; i < px.size(); ++i) px[i] = src[i];
  for (int op : order) {
    if (op == 0 && fb != 1.f) adjust_brightness(px, fb);
    if (op == 1 && fc != 1.f) adjust_contrast(px, c, fc);
    if (op == 2 && fs != 1.f && c == 3) adjust_saturation(px, fs);
    if (op == 3 && fh != 0.f && c == 3) adjust_hue(px, fh);
  }
  uint8_t* dst = m.ptr<uint8_t>();
  for (size_t i = 0; i < px.size(); ++i) dst[i] = uint8_t(px[i] + 0.5f);
}

void to_grayscale(cv::Mat& m) {  // replicates luma into all three channels
  uint8_t* p = m.ptr<uint8_t>();
  for (size_t i = 0; i < m.total() * 3; i += 3) {
    uint8_t g = uint8_t(std::lround(0.299f * p[i] + 0.587f * p[i + 1] + 0.114f * p[i + 2]));
    p[i] = p[i + 1] = p[i + 2] = g;
  }
}

cv::Mat eval_transform(const cv::Mat& src, const AugmentConfig& cfg) {
  int shorter = std::max(1, int(std::lround(cfg.size / cfg.resize_ratio)));
  int h = src.rows, w = src.cols, nh, nw;
  if (h <= w) {
    nh = shorter;
    nw = std::max(1, int(std::lround(double(w) * shorter / h)));
  } else {
    nw = shorter;
    nh = std::max(1, int(std::lround(double(h) * shorter / w)));
  }
  cv::Mat resized;
  if (nh == h && nw == w) resized = src;
  else cv::resize(src, resized, cv::Size(nw, nh), 0, 0, cv::INTER_LINEAR);
  // Centre crop; pad with black when the crop is larger than the image (torchvision).
  int s = cfg.size;
  cv::Mat out = cv::Mat::zeros(s, s, src.type());
  int top = int(std::lround((nh - s) / 2.0)), left = int(std::lround((nw - s) / 2.0));
  int sy = std::max(0, top), sx = std::max(0, left), dy = std::max(0, -top),
      dx = std::max(0, -left);
  int ch = std::min(nh - sy, s - dy), cw = std::min(nw - sx, s - dx);
  resized(cv::Rect(sx, sy, cw, ch)).copyTo(out(cv::Rect(dx, dy, cw, ch)));
  return out;
}

}  // namespace

AugmentConfig small_image_preset(int size, int channels) {
  AugmentConfig c;
  c.size = size;
  if (channels == 3) {  // CIFAR-10 statistics, as the reference code
    c.mean = {0.4914f, 0.4822f, 0.4465f};
    c.std = {0.2023f, 0.1994f, 0.2010f};
  } else {  // no universal grey statistics: centre [0,1] on 0.5
    c.mean = {0.5f};
    c.std = {0.5f};
  }
  return c;
}

AugmentConfig imagenet_preset() {
  AugmentConfig c;
  c.size = 224;
  c.hue = 0.1f;
  c.jitter_p = 0.8f;
  c.blur_p = 0.5f;
  c.flip_p = 0.5f;
  c.resize_ratio = 224.f / 256.f;  // the usual resize-256, crop-224 evaluation
  c.mean = {0.485f, 0.456f, 0.406f};
  c.std = {0.229f, 0.224f, 0.225f};
  return c;
}

AugmentConfig eval_config(const AugmentConfig& train) {
  AugmentConfig c = train;
  c.train = false;
  return c;
}

CropBox sample_crop(int h, int w, const AugmentConfig& cfg, std::mt19937_64& rng) {
  const double area = double(h) * w;
  const double log_lo = std::log(cfg.ratio_min), log_hi = std::log(cfg.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target = area * uniform(rng, cfg.scale_min, cfg.scale_max);
    double ratio = std::exp(uniform(rng, log_lo, log_hi));
    int cw = int(std::lround(std::sqrt(target * ratio)));
    int ch = int(std::lround(std::sqrt(target / ratio)));
    if (cw > 0 && ch > 0 && cw <= w && ch <= h) {
      return {randint(rng, 0, h - ch), randint(rng, 0, w - cw), ch, cw};
    }
  }
  double in_ratio = double(w) / h;
  int cw = w, ch = h;
  if (in_ratio < cfg.ratio_min) {
    ch = std::max(1, int(std::lround(w / cfg.ratio_min)));
  } else if (in_ratio > cfg.ratio_max) {
    cw = std::max(1, int(std::lround(h * cfg.ratio_max)));
  }
  return {(h - ch) / 2, (w - cw) / 2, ch, cw};
}

Image augment(const Image& in, const AugmentConfig& cfg, std::mt19937_64& rng) {
  if (in.empty() || in.height <= 0 || in.width <= 0 || (in.channels != 1 && in.channels != 3))
    throw Error("", "augment: expected a non-empty 1- or 3-channel image");
  if (cfg.size <= 0) throw Error("", "augment: size must be positive");
  cv::Mat src = as_mat(in);
  if (!cfg.train) return from_mat(eval_transform(src, cfg));

  CropBox b = sample_crop(in.height, in.width, cfg, rng);
  cv::Mat m;
  cv::resize(src(cv::Rect(b.x, b.y, b.w, b.h)), m, cv::Size(cfg.size, cfg.size), 0, 0,
             cv::INTER_LINEAR);
  if (coin(rng, cfg.jitter_p)) color_jitter(m, cfg, rng);
  if (coin(rng, cfg.grayscale_p) && m.channels() == 3) to_grayscale(m);
  if (coin(rng, cfg.blur_p)) {
    double sigma = uniform(rng, cfg.blur_sigma_min, cfg.blur_sigma_max);
    cv::GaussianBlur(m, m, cv::Size(0, 0), sigma, sigma, cv::BORDER_REFLECT_101);
  }
  if (coin(rng, cfg.flip_p)) cv::flip(m, m, 1);
  return from_mat(m);
}

void normalise_into(const Image& img, const AugmentConfig& cfg, float* out_chw) {
  const int c = img.channels;
  const size_t hw = size_t(img.height) * img.width;
  auto fits = [c](const std::vector<float>& v) { return v.size() <= 1 || int(v.size()) == c; };
  if (!fits(cfg.mean) || !fits(cfg.std))
    throw Error("", "normalise: mean/std have " + std::to_string(cfg.mean.size()) + "/" +
                        std::to_string(cfg.std.size()) + " values for a " +
                        std::to_string(c) + "-channel image");
  for (int k = 0; k < c; ++k) {
    float mean = cfg.mean.empty() ? 0.f : cfg.mean[cfg.mean.size() == 1 ? 0 : k];
    float sd = cfg.std.empty() ? 1.f : cfg.std[cfg.std.size() == 1 ? 0 : k];
    const float scale = 1.f / (255.f * sd), shift = mean / sd;
    const uint8_t* p = img.pixels.data() + k;
    float* o = out_chw + k * hw;
    for (size_t i = 0; i < hw; ++i) o[i] = float(p[i * c]) * scale - shift;
  }
}

}  // namespace invp::data
