#include <invp/core/cpu_features.h>

#include <fstream>
#include <sstream>

namespace invp {
namespace {
CpuBf16 read_cpu_bf16() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    bool amx_bf16 = false, amx_tile = false, avx512_bf16 = false;
    for (std::string w; words >> w;) {
      amx_bf16 |= w == "amx_bf16";
      amx_tile |= w == "amx_tile";
      avx512_bf16 |= w == "avx512_bf16";
    }
    if (amx_bf16 && amx_tile) return CpuBf16::Amx;
    return avx512_bf16 ? CpuBf16::Avx512 : CpuBf16::None;  // the first CPU speaks for all
  }
  return CpuBf16::None;
}
}  // namespace

CpuBf16 cpu_bf16() {
  static const CpuBf16 found = read_cpu_bf16();
  return found;
}

std::string cpu_bf16_report() {
  switch (cpu_bf16()) {
    case CpuBf16::Amx: return "AMX (amx_bf16)";
    case CpuBf16::Avx512: return "AVX512-BF16 (no AMX)";
    case CpuBf16::None: break;
  }
  return "none";
}

}  // namespace invp
