// Version of the HDF5 library this build uses (HDF5 types stay inside store/).
#pragma once
#include <string>
namespace invp::store {
std::string hdf5_version();
}
