#include <invp/core/error.h>
#include <invp/core/hash.h>

#include <xxhash.h>

#include <cstdio>
#include <memory>
#include <vector>

namespace invp {
namespace {
std::string to_hex(XXH128_hash_t h) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", (unsigned long long)h.high64,
                (unsigned long long)h.low64);
  return buf;
}
}  // namespace

std::string hash_bytes(const void* data, size_t size) { return to_hex(XXH3_128bits(data, size)); }
std::string hash_string(const std::string& s) { return hash_bytes(s.data(), s.size()); }

std::string hash_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw Error(path, "cannot open for reading");
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> st(XXH3_createState(),
                                                                     &XXH3_freeState);
  XXH3_128bits_reset(st.get());
  std::vector<char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0)
    XXH3_128bits_update(st.get(), buf.data(), n);
  if (std::ferror(f.get())) throw Error(path, "read error");
  return to_hex(XXH3_128bits_digest(st.get()));
}
}  // namespace invp
