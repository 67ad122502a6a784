#include <invp/data/library_info.h>

#include <opencv2/core/utility.hpp>

namespace invp::data {
std::string opencv_version() { return cv::getVersionString(); }
}  // namespace invp::data
