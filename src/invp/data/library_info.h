// Version of the OpenCV this build uses (OpenCV types stay inside data/).
#pragma once
#include <string>
namespace invp::data {
std::string opencv_version();
}
