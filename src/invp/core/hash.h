// Content hashes: xxHash XXH3-128, printed as 32 hex digits (never std::hash).
#pragma once
#include <cstddef>
#include <string>

namespace invp {
std::string hash_bytes(const void* data, size_t size);
std::string hash_string(const std::string& s);
// Hashes a file's bytes; throws invp::Error if it cannot be read.
std::string hash_file(const std::string& path);
}  // namespace invp
