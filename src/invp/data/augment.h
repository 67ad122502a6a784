// Training/eval image transforms (docs/ALGORITHM.md, "Encoder and augmentation"), on 8-bit
// HWC Images. OpenCV stays inside augment.cpp so users of this header need only std types.
// Every random draw comes from the caller's rng, so a transform is reproducible from it.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include <invp/data/dataset.h>

namespace invp::data {

struct AugmentConfig {
  int size = 32;  // output is size x size
  bool train = true;
  // RandomResizedCrop: area fraction and aspect ratio (w/h) ranges.
  float scale_min = 0.2f, scale_max = 1.f, ratio_min = 3.f / 4, ratio_max = 4.f / 3;
  // ColorJitter strengths (torchvision meaning), applied with probability jitter_p.
  float brightness = 0.4f, contrast = 0.4f, saturation = 0.4f, hue = 0.4f, jitter_p = 1.f;
  float grayscale_p = 0.2f;
  float flip_p = 0.f;
  float blur_p = 0.f, blur_sigma_min = 0.1f, blur_sigma_max = 2.f;
  float resize_ratio = 1.0f;  // eval: resize shorter side to size/resize_ratio then centre crop
  // Per-channel normalisation; empty means mean 0 / std 1, one value applies to all channels.
  std::vector<float> mean, std;
};

// Reference small-image recipe: RRC(0.2-1), jitter 0.4 x4 always, grayscale 0.2, no flip.
AugmentConfig small_image_preset(int size, int channels);
// ImageNet recipe: RRC 224, jitter (0.4,0.4,0.4,0.1) p=0.8, grey 0.2, blur p=0.5, flip 0.5.
AugmentConfig imagenet_preset();
// The same geometry and normalisation with train=false (resize + centre crop only).
AugmentConfig eval_config(const AugmentConfig& train);

struct CropBox {
  int y = 0, x = 0, h = 0, w = 0;
};

// torchvision RandomResizedCrop.get_params: 10 attempts, then a centre crop clamped to the
// ratio range.
CropBox sample_crop(int h, int w, const AugmentConfig& cfg, std::mt19937_64& rng);

// Applies the transform; output is size x size with the input's channel count.
Image augment(const Image& in, const AugmentConfig& cfg, std::mt19937_64& rng);

// Writes img as CHW floats (pixel/255 - mean) / std into out_chw (C*H*W floats).
void normalise_into(const Image& img, const AugmentConfig& cfg, float* out_chw);

}  // namespace invp::data
