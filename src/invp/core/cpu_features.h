// What this CPU offers for bfloat16 arithmetic. LibTorch's oneDNN runs bf16 convolutions on
// AMX tiles faster than float32; with AVX512-BF16 alone they are no faster than
// float32, and without either oneDNN has no bf16 convolution at all (BENCHMARKS.md, "bf16 on
// the CPU").
#pragma once
#include <string>

namespace invp {

enum class CpuBf16 { None, Avx512, Amx };

// From the kernel's CPU flags (/proc/cpuinfo): it lists amx_bf16 only where the kernel can
// also save the AMX state, so a CPU with AMX under an old kernel reads as Avx512 or None.
CpuBf16 cpu_bf16();
// "AMX (amx_bf16)", "AVX512-BF16 (no AMX)" or "none".
std::string cpu_bf16_report();

}  // namespace invp
