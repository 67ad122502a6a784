#include <invp/core/cpu_features.h>
#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/model/precision.h>
#include <invp/train/schedule.h>
#include <invp/train/train_config.h>

#include <nlohmann/json.hpp>

#include <cmath>

namespace invp::train {
using nlohmann::json;

#define INVP_TRAIN_DEFINING(X)                                                                 \
  X(data) X(limit) X(input_size) X(channels) X(arch_depth) X(stem) X(width) X(head) X(dim) X(tau)       \
  X(background) X(knn) X(hops) X(hard_positives) X(lambda) X(warmup) X(bank_momentum) X(ramp)  \
  X(denominator) X(propagation) X(graph) X(loss) X(lr) X(momentum) X(weight_decay)            \
  X(schedule) X(batch_size) X(seed)
#define INVP_TRAIN_RUN(X) X(test_data) X(epochs) X(knn_every) X(workers) X(device) X(precision) X(profile) X(cuda_graph) \
  X(sync_bn) X(dist_timeout) X(grad_overlap) X(world_size) X(embed_features)

// Keys added after configs were first hashed: they join the hash only when they differ from
// their default, so checkpoints written before they existed still resume.
#define INVP_TRAIN_DEFINING_LATER(X) X(crop_scale) X(flip) X(graph_search) X(graph_probes) X(positives) X(graph_features) \
  X(milestones) X(gamma) X(lr_curve) \
  X(positive_selection) X(keep_last_batch) X(augment) X(brightness) X(contrast) X(saturation) X(hue) X(jitter) X(grayscale) X(blur)

namespace {
// Strengths are hashed and recorded as resolved values, so that -1 and the recipe's own value
// are one config, and a config.json written before a key existed reads as today's default.
json defining_json(const TrainConfig& config, bool for_hash) {
  const TrainConfig c = config.with_augment_resolved();
  json j;
#define X(f) j[#f] = c.f;
  INVP_TRAIN_DEFINING(X)
#undef X
  const TrainConfig d = TrainConfig{}.with_augment_resolved();
#define X(f) if (!for_hash || c.f != d.f) j[#f] = c.f;
  INVP_TRAIN_DEFINING_LATER(X)
#undef X
  return j;
}
void one_of(const std::string& key, const std::string& v, std::initializer_list<const char*> ok) {
  for (auto* o : ok)
    if (v == o) return;
  std::string list;
  for (auto* o : ok) list += (list.empty() ? "" : "|") + std::string(o);
  throw Error("", "--" + key + " '" + v + "' is not one of " + list);
}
}  // namespace

void TrainConfig::validate() const {
  one_of("head", head, {"mlp-bn", "mlp", "linear"});
  one_of("ramp", ramp, {"binary", "gaussian"});
  one_of("denominator", denominator, {"reference", "paper", "plain"});
  one_of("positive-selection", positive_selection, {"hardest", "easiest"});
  one_of("propagation", propagation, {"bfs", "concat"});
  one_of("graph", graph, {"epoch", "online"});
  one_of("graph-search", graph_search, {"exact", "ivf"});
  if (graph_probes < 1) throw Error("", "--graph-probes must be >= 1");
  one_of("graph-features", graph_features, {"bank", "recomputed"});
  if (graph_features == "recomputed" && graph != "epoch")
    throw Error("", "--graph-features recomputed needs --graph epoch (the online graph comes from each step's top-k)");
  one_of("loss", loss, {"invp", "instance"});
  one_of("positives", positives, {"graph", "oracle"});
  one_of("schedule", schedule, {"cosine", "step"});
  if (schedule == "step" && milestones.empty())
    throw Error("", "--schedule step needs --milestones (the reference's: 400,600,700 of 800 epochs)",
                "add --milestones E1,E2,... or use --schedule cosine");
  if (schedule != "step" && !milestones.empty())
    throw Error("", "--milestones is for --schedule step", "add --schedule step or drop --milestones");
  for (size_t i = 0; i < milestones.size(); ++i)
    if (milestones[i] < 1 || (i > 0 && milestones[i] <= milestones[i - 1]))
      throw Error("", "--milestones must be increasing epochs >= 1");
  if (!(gamma > 0 && gamma <= 1)) throw Error("", "--gamma must be in (0, 1]");
  if (lr_curve != 1 && lr_curve != 2) throw Error("", "lr_curve must be 1 or 2");
  one_of("device", device, {"cpu", "cuda"});
  one_of("precision", precision, {"auto", "tf32", "fp32", "bf16"});
  one_of("embed-features", embed_features, {"head", "backbone"});
  if (precision == "bf16" && device == "cuda")
    throw Error("", "--precision bf16 is for --device cpu in this version (not yet measured on a GPU)",
                "use --precision tf32 (the cuda default)");
  one_of("cuda-graph", cuda_graph, {"on", "off"});
  if (epochs < 1 || batch_size < 1 || knn < 1 || hops < 1 || hard_positives < 1 || background < 1)
    throw Error("", "epochs, batch-size, knn, hops, hard-positives and background must be >= 1");
  if (tau <= 0) throw Error("", "--tau must be positive");
  if (limit < 0) throw Error("", "--limit must be >= 0");
  if (input_size < 8) throw Error("", "--input-size must be at least 8");
  if (!(crop_scale > 0 && crop_scale <= 1)) throw Error("", "--crop-scale must be in (0, 1]");
  one_of("augment", augment, {"small", "imagenet"});
  auto strength = [](const char* key, float v, float hi) {
    if (v != -1 && !(v >= 0 && v <= hi))
      throw Error("", std::string("--") + key + " must be in [0, " + std::to_string(hi).substr(0, 3) +
                          "] (or -1 for the recipe's)");
  };
  strength("flip", flip, 1);
  strength("brightness", brightness, 1);
  strength("contrast", contrast, 1);
  strength("saturation", saturation, 1);
  strength("hue", hue, 0.5f);
  strength("jitter", jitter, 1);
  strength("grayscale", grayscale, 1);
  strength("blur", blur, 1);
  if (dist_timeout < 1) throw Error("", "--dist-timeout must be at least 1 second");
}

TrainModes TrainConfig::modes() const {
  validate();
  TrainModes m;
  m.graph = graph == "online" ? GraphMode::Online : GraphMode::Epoch;
  m.graph_search = graph_search == "ivf" ? GraphSearch::Ivf : GraphSearch::Exact;
  m.graph_features = graph_features == "recomputed" ? GraphFeatures::Recomputed : GraphFeatures::Bank;
  m.loss = loss == "instance" ? LossKind::Instance : LossKind::Invp;
  m.positives = positives == "oracle" ? Positives::Oracle : Positives::Graph;
  m.ramp = ramp == "gaussian" ? Ramp::Gaussian : Ramp::Binary;
  m.schedule = schedule == "step" ? Schedule::Step : Schedule::Cosine;
  m.propagation = propagation == "concat" ? Propagation::Concat : Propagation::Bfs;
  m.paper_denominator = denominator == "paper";
  m.plain_denominator = denominator == "plain";
  m.easiest_positives = positive_selection == "easiest";
  m.cuda = device == "cuda";
  m.cuda_graph = cuda_graph == "on";
  return m;
}

std::string TrainConfig::to_json() const {
  json j = defining_json(*this, false);
#define X(f) j[#f] = f;
  INVP_TRAIN_RUN(X)
#undef X
  return j.dump(2);
}

TrainConfig TrainConfig::from_json(const std::string& text, const std::string& file) {
  TrainConfig c;
  try {
    json j = json::parse(text);
    if (!j.contains("lr_curve")) c.lr_curve = kLrCurveFirst;  // written before the reference's curve
#define X(f) if (j.contains(#f)) j.at(#f).get_to(c.f);
    INVP_TRAIN_DEFINING(X)
    INVP_TRAIN_DEFINING_LATER(X)
    INVP_TRAIN_RUN(X)
#undef X
  } catch (const json::exception& e) {
    throw Error(file, std::string("invalid training config: ") + e.what());
  }
  return c;
}

std::string TrainConfig::resolved_precision() const {
  if (device == "cuda") return precision == "fp32" ? "fp32" : "tf32";
  // auto: bf16 wherever the CPU runs bf16 natively (AMX, or AVX512-BF16 without AMX: issue 27
  // measured the latter faster than float32 in training) from width 16; at width 8 it is slower
  // (LibTorch 1.13's bf16 BatchNorm backward takes a slow path at 8 channels; BENCHMARKS.md,
  // "Session 12"). A CPU with neither keeps float32.
  if (precision == "auto") return cpu_bf16() != CpuBf16::None && width >= 16 ? "bf16" : "fp32";
  return model::resolve_cpu_precision(precision, width >= 16);
}

TrainConfig TrainConfig::with_augment_resolved() const {
  TrainConfig c = *this;
  const bool in = augment == "imagenet";
  auto fill = [](float& v, float recipe) { if (v == -1) v = recipe; };
  fill(c.flip, in ? 0.5f : 0.f);
  fill(c.brightness, 0.4f);
  fill(c.contrast, 0.4f);
  fill(c.saturation, 0.4f);
  fill(c.hue, in ? 0.1f : 0.4f);
  fill(c.jitter, in ? 0.8f : 1.f);
  fill(c.grayscale, 0.2f);
  fill(c.blur, in ? 0.5f : 0.f);
  return c;
}

data::AugmentConfig TrainConfig::augment_config(int channels) const {
  const TrainConfig r = with_augment_resolved();
  data::AugmentConfig a = data::small_image_preset(input_size, channels);
  if (augment == "imagenet") {
    a = data::imagenet_preset();
    a.size = input_size;
    // The reference's σ range (0.1-2 px) is for 224-px crops; it scales with the crop, so that a
    // blur at another input size hides the same share of the image.
    a.blur_sigma_min *= input_size / 224.f;
    a.blur_sigma_max *= input_size / 224.f;
    if (channels == 1) {  // one channel: the mean of ImageNet's three statistics
      a.mean = {(0.485f + 0.456f + 0.406f) / 3};
      a.std = {(0.229f + 0.224f + 0.225f) / 3};
    }
  }
  a.scale_min = r.crop_scale;
  a.flip_p = r.flip;
  a.brightness = r.brightness;
  a.contrast = r.contrast;
  a.saturation = r.saturation;
  a.hue = r.hue;
  a.jitter_p = r.jitter;
  a.grayscale_p = r.grayscale;
  a.blur_p = r.blur;
  return a;
}

std::string TrainConfig::augment_json(int channels) const {
  const auto a = augment_config(channels);
  // Strengths are floats: written as the decimals they were given (0.1, not 0.10000000149).
  auto d = [](float v) { return std::round(double(v) * 1e6) / 1e6; };
  return json{{"name", augment},
              {"crop_scale", {d(a.scale_min), d(a.scale_max)}},
              {"flip", d(a.flip_p)},
              {"jitter", {{"p", d(a.jitter_p)}, {"brightness", d(a.brightness)}, {"contrast", d(a.contrast)},
                          {"saturation", d(a.saturation)}, {"hue", d(a.hue)}}},
              {"grayscale", d(a.grayscale_p)},
              {"blur", {{"p", d(a.blur_p)}, {"sigma", {d(a.blur_sigma_min), d(a.blur_sigma_max)}}}},
              {"eval_resize_ratio", d(a.resize_ratio)}}
      .dump();
}

double TrainConfig::lr_at(int epoch) const {
  return learning_rate(lr, epoch, epochs, schedule, milestones, gamma, lr_curve);
}

std::string TrainConfig::config_hash() const { return hash_string(defining_json(*this, true).dump()); }

}  // namespace invp::train
