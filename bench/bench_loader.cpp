// Loader throughput with the small-image train augmentation.
// Usage: bench_loader [source] [image_folder] [--threads 1,2] [--images N]
//        bench_loader --make-folder DIR [N]   writes N Fashion-MNIST test images (RGB, 64 px;
//        half PNG, half JPEG q90) into DIR/<class>/ for the image-folder row
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <invp/data/dataset.h>
#include <invp/data/loader.h>

using namespace invp::data;

namespace {

struct Row {
  std::string source;
  int workers;
  size_t images;
  double seconds;
};

// Times up to max_images through one epoch (a full Fashion-MNIST epoch takes too long at
// one worker to be worth waiting for).
Row measure(const std::string& source, int workers, size_t max_images) {
  auto ds = open_dataset(source);
  LoaderOptions o;
  o.batch_size = 256;
  o.workers = workers;
  o.seed = 1;
  o.augment = small_image_preset(32, ds->channels());
  Loader loader(ds, o);
  auto t0 = std::chrono::steady_clock::now();
  loader.start_epoch(1);
  size_t n = 0;
  while (n < max_images) {
    auto b = loader.next();
    if (!b) break;
    n += size_t(b->images.size(0));
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {source, workers, n, s};
}

int make_folder(const std::string& dir, size_t n) {
  auto ds = open_dataset("/usr/share/datasets/fashion-mnist:test");
  auto names = ds->class_names();
  for (size_t i = 0; i < n && i < ds->size(); ++i) {
    auto s = ds->get(i);
    cv::Mat grey(s.image.height, s.image.width, CV_8UC1, s.image.pixels.data()), big, bgr;
    cv::resize(grey, big, cv::Size(64, 64), 0, 0, cv::INTER_LINEAR);
    cv::cvtColor(big, bgr, cv::COLOR_GRAY2BGR);
    auto sub = std::filesystem::path(dir) / names.at(size_t(s.label));
    std::filesystem::create_directories(sub);
    auto file = (sub / (std::to_string(i) + (i % 2 ? ".jpg" : ".png"))).string();
    if (!cv::imwrite(file, bgr, {cv::IMWRITE_JPEG_QUALITY, 90})) return 1;
  }
  std::printf("wrote %zu images under %s\n", std::min(n, ds->size()), dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> sources;
  std::vector<int> threads = {1, 2};
  size_t max_images = 30000;
  if (argc >= 3 && std::string(argv[1]) == "--make-folder")
    return make_folder(argv[2], argc >= 4 ? size_t(std::atoll(argv[3])) : 5000);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads.clear();
      std::stringstream ss(argv[++i]);
      for (std::string t; std::getline(ss, t, ',');) threads.push_back(std::max(1, std::atoi(t.c_str())));
    } else if (a == "--images" && i + 1 < argc) {
      max_images = size_t(std::atoll(argv[++i]));
    } else {
      sources.push_back(a);
    }
  }
  if (sources.empty()) sources.push_back("/usr/share/datasets/fashion-mnist");

  std::printf("%-48s %8s %9s %9s %10s\n", "source", "workers", "images", "seconds", "img/s");
  int rc = 0;
  for (const auto& src : sources) {
    for (int w : threads) {
      try {
        Row r = measure(src, w, max_images);
        std::printf("%-48s %8d %9zu %9.3f %10.0f\n", r.source.c_str(), r.workers, r.images,
                    r.seconds, r.seconds > 0 ? double(r.images) / r.seconds : 0.0);
        std::fflush(stdout);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_loader: %s: %s\n", src.c_str(), e.what());
        rc = 1;
      }
    }
  }
  return rc;
}
