#include <invp/model/precision.h>

#include <invp/core/cpu_features.h>
#include <invp/core/error.h>

#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>
#include <torch/version.h>

namespace invp::model {
namespace {
// LibTorch 2.4 replaced the per-backend autocast switches by ones taking a device type.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool cpu_enabled() { return at::autocast::is_autocast_enabled(at::kCPU); }
void set_cpu_enabled(bool on) { at::autocast::set_autocast_enabled(at::kCPU, on); }
c10::ScalarType cpu_dtype() { return at::autocast::get_autocast_dtype(at::kCPU); }
void set_cpu_dtype(c10::ScalarType t) { at::autocast::set_autocast_dtype(at::kCPU, t); }
#else
bool cpu_enabled() { return at::autocast::is_cpu_enabled(); }
void set_cpu_enabled(bool on) { at::autocast::set_cpu_enabled(on); }
c10::ScalarType cpu_dtype() { return at::autocast::get_autocast_cpu_dtype(); }
void set_cpu_dtype(c10::ScalarType t) { at::autocast::set_autocast_cpu_dtype(t); }
#endif
}  // namespace

CpuBf16Autocast::CpuBf16Autocast() : was_enabled_(cpu_enabled()), was_dtype_(cpu_dtype()) {
  set_cpu_enabled(true);
  set_cpu_dtype(c10::kBFloat16);
  at::autocast::increment_nesting();
}

CpuBf16Autocast::~CpuBf16Autocast() {
  // The bf16 copies of the weights autocast made for this forward pass go with the
  // outermost scope (they would be stale after the next optimiser step).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_cpu_enabled(was_enabled_);
  set_cpu_dtype(was_dtype_);
}

std::string resolve_cpu_precision(const std::string& requested, bool auto_bf16_pays,
                                  const std::string& flag) {
  if (requested == "auto") return cpu_bf16() == CpuBf16::Amx && auto_bf16_pays ? "bf16" : "fp32";
  if (requested != "bf16") return "fp32";
  if (cpu_bf16() == CpuBf16::None)
    throw Error("", flag + " bf16: this CPU has no bfloat16 instructions (AMX or AVX512-BF16)",
                "use " + flag + " fp32 or auto");
  return "bf16";
}

void to_channels_last(torch::nn::Module& net) {
  c10::NoGradGuard no_grad;
  for (auto& p : net.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(c10::MemoryFormat::ChannelsLast));
}

bool channels_last_pays_in_cpu_training(bool bf16, int width) { return bf16 || width >= 16; }

torch::Tensor features(EncoderImpl& net, const torch::Tensor& images, bool bf16) {
  // In float32 the convolutions follow the weights' memory format by themselves.
  if (!bf16) return net.features(images);
  CpuBf16Autocast autocast;
  return net.features(images.contiguous(c10::MemoryFormat::ChannelsLast)).to(torch::kFloat);
}

torch::Tensor forward(EncoderImpl& net, const torch::Tensor& images, bool bf16) {
  // The head in float32: it is cheap, and the embedding the loss, the bank and the graph use
  // then carries no bf16 rounding of its own (a bf16 head ended with lower kNN accuracy;
  // BENCHMARKS.md, "Session 12").
  return net.head(features(net, images, bf16));
}

}  // namespace invp::model
