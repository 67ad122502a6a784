#include <invp/data/decode.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <invp/core/error.h>

namespace invp::data {
namespace {

// Composites an 8-bit image with alpha in its last channel over white, so transparent
// pixels become white (the usual viewer rendering) rather than whatever colour they hide.
cv::Mat over_white(const cv::Mat& src) {
  const int c = src.channels() - 1;  // colour channels: 1 (grey+alpha) or 3 (BGRA)
  cv::Mat out(src.rows, src.cols, CV_8UC(c));
  for (int y = 0; y < src.rows; ++y) {
    const uint8_t* s = src.ptr<uint8_t>(y);
    uint8_t* d = out.ptr<uint8_t>(y);
    for (int x = 0; x < src.cols; ++x, s += c + 1, d += c) {
      const int a = s[c];
      for (int k = 0; k < c; ++k) d[k] = static_cast<uint8_t>((s[k] * a + 255 * (255 - a) + 127) / 255);
    }
  }
  return out;
}

Image from_mat(const cv::Mat& m) {
  cv::Mat c = m.isContinuous() ? m : m.clone();
  return to_image(c.ptr<uint8_t>(), c.rows, c.cols, c.channels());
}

}  // namespace

Image to_image(const uint8_t* hwc, int height, int width, int channels) {
  Image img;
  img.height = height;
  img.width = width;
  img.channels = channels;
  img.pixels.assign(hwc, hwc + static_cast<size_t>(height) * width * channels);
  return img;
}

Image convert_channels(Image img, int channels) {
  if (channels <= 0 || img.channels == channels || img.empty()) return img;
  cv::Mat src(img.height, img.width, CV_8UC(img.channels), img.pixels.data());
  cv::Mat dst;
  if (img.channels == 1 && channels == 3) cv::cvtColor(src, dst, cv::COLOR_GRAY2RGB);
  else if (img.channels == 3 && channels == 1) cv::cvtColor(src, dst, cv::COLOR_RGB2GRAY);
  else throw Error("", "unsupported channel conversion " + std::to_string(img.channels) +
                           " -> " + std::to_string(channels));
  return from_mat(dst);
}

// The formats invp reads, recognised by their leading bytes exactly as OpenCV's own
// decoders check them. OpenCV picks the first decoder whose signature matches, and every
// format accepted here belongs to a decoder registered before the ones invp does not want
// to run on outside bytes (GDCM aborts the process on some damaged DICOM headers; it was
// reached by fuzzing with "P4…DICM" bytes), so anything else is refused before imdecode.
const char* sniff_image_format(const std::vector<uint8_t>& b) {
  auto starts = [&](const char* sig, size_t n, size_t at = 0) {
    return b.size() >= at + n && std::equal(sig, sig + n, b.begin() + std::ptrdiff_t(at),
                                            [](char c, uint8_t x) { return uint8_t(c) == x; });
  };
  if (starts("\x89PNG\r\n\x1a\n", 8)) return "PNG";
  if (starts("\xff\xd8\xff", 3)) return "JPEG";
  if (starts("BM", 2)) return "BMP";
  if (starts("II\x2a\x00", 4) || starts("MM\x00\x2a", 4)) return "TIFF";
  if (starts("II\x2b\x00", 4) || starts("MM\x00\x2b", 4)) return "TIFF";  // BigTIFF
  if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return "WebP";
  if (b.size() >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6' && std::isspace(b[2])) return "PNM";
  return nullptr;
}

Image decode_image(const std::vector<uint8_t>& bytes, int channels,
                   const std::string& path_for_errors) {
  const std::string problem = "cannot decode image";
  if (bytes.empty()) throw Error(path_for_errors, problem, "the file is empty");
  if (!sniff_image_format(bytes))
    throw Error(path_for_errors, problem,
                "not a JPEG, PNG, BMP, TIFF, WebP or PGM/PPM/PBM file (by its first bytes)");
  cv::Mat m;
  try {
    const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8U,
                      const_cast<uint8_t*>(bytes.data()));
    m = cv::imdecode(buf, cv::IMREAD_UNCHANGED);  // keep alpha and 16-bit to handle below
  } catch (const cv::Exception& e) {
    throw Error(path_for_errors, problem, e.what());
  }
  if (m.empty() || m.dims != 2)
    throw Error(path_for_errors, problem, "not a supported image, or the file is truncated");
  try {
    if (m.depth() == CV_16U) {
      m.convertTo(m, CV_8U, 255.0 / 65535.0);
    } else if (m.depth() == CV_32F || m.depth() == CV_64F) {
      m.convertTo(m, CV_8U, 255.0);  // float TIFFs are conventionally 0..1
    } else if (m.depth() != CV_8U) {
      cv::normalize(m, m, 0, 255, cv::NORM_MINMAX, CV_8U);  // signed: no common convention
    }
    cv::Mat rgb;
    switch (m.channels()) {
      case 1: rgb = m; break;
      case 2: rgb = over_white(m); break;
      case 3: cv::cvtColor(m, rgb, cv::COLOR_BGR2RGB); break;
      case 4: cv::cvtColor(over_white(m), rgb, cv::COLOR_BGR2RGB); break;
      default:
        throw Error(path_for_errors, problem,
                    "unsupported channel count " + std::to_string(m.channels()));
    }
    return convert_channels(from_mat(rgb), channels <= 0 ? 3 : channels);
  } catch (const cv::Exception& e) {
    throw Error(path_for_errors, problem, e.what());
  }
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(path, "cannot read file", "it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot read file", "check that it exists and is readable");
  try {
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw Error(path, "cannot read file", "I/O error");
    return bytes;
  } catch (const std::ios_base::failure& e) {  // libstdc++ reports read errors this way
    throw Error(path, "cannot read file", e.what());
  }
}

Image read_image_file(const std::string& path, int channels) {
  return decode_image(read_file_bytes(path), channels, path);
}

bool has_image_extension(const std::string& path) {
  const auto dot = path.find_last_of('.');
  if (dot == std::string::npos || path.find_first_of('/', dot) != std::string::npos)
    return false;
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const char* kExts[] = {"jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp",
                                "pgm", "ppm", "pbm"};
  return std::any_of(std::begin(kExts), std::end(kExts),
                     [&](const char* e) { return ext == e; });
}

}  // namespace invp::data
