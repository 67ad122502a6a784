// Where the source tree and the built invp binary are, for tests that read committed files or
// drive the real binary. Defined in a file CMake generates in the build directory (one small
// translation unit), so that these absolute paths are not compile definitions of every test
// file: those would make each one miss the compiler cache in a clone at another path.
#pragma once

namespace invp_test {
const char* source_dir();
const char* cli_path();
}  // namespace invp_test
