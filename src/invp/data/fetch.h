// Loading a collection item back from the path recorded for it (/paths in embeddings.h5):
// an image file, or "<file>#<index>" for an item inside an IDX or CIFAR container. Opened
// containers are cached, so drawing many tiles from one file opens it once.
#pragma once
#include <invp/data/dataset.h>

#include <map>
#include <memory>
#include <string>

namespace invp::data {

class ImageFetcher {
 public:
  explicit ImageFetcher(int channels = 3) : channels_(channels) {}
  // Throws invp::Error naming the path when it cannot be found or decoded.
  Image get(const std::string& path);

 private:
  int channels_;
  std::map<std::string, std::shared_ptr<Dataset>> containers_;
};

}  // namespace invp::data
