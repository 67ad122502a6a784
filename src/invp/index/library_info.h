// Version of the FAISS this build uses (FAISS types stay inside index/).
#pragma once
#include <string>
namespace invp::index {
std::string faiss_version();
}
