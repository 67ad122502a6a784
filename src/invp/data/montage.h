// Contact sheets for looking at data (augmentations, neighbours): a grid of tiles with a
// caption under each, written as a PNG.
#pragma once
#include <string>
#include <vector>

#include <invp/data/dataset.h>

namespace invp::data {

// Layout, exposed so callers and tests can predict the output size.
constexpr int kMontagePad = 4;       // gap around and between tiles
constexpr int kMontageCaptionH = 26;  // caption strip under each tile: up to two lines

// Draws TILES (1- or 3-channel) in a grid COLS wide, each scaled to fit tile_px x tile_px
// (nearest-neighbour when enlarging, so small images stay crisp), with captions[i] under
// tile i (missing captions are blank) on white. The PNG is
// (cols*(tile_px+pad)+pad) wide and (rows*(tile_px+caption+pad)+pad) high, written to
// atomically (temp file + rename). Throws invp::Error(out_png, ...) on failure.
void write_montage(const std::vector<Image>& tiles, const std::vector<std::string>& captions,
                   int cols, int tile_px, const std::string& out_png);

// Writes one image (1 or 3 channels, RGB order) as a PNG, atomically.
void write_image_png(const Image& img, const std::string& out_png);
// The same PNG in memory (what `invp serve` sends for an item).
std::vector<uint8_t> encode_png(const Image& img);

// A horizontal bar chart of VALUES (shares in [0,1], drawn as percentages), one labelled
// bar per name, with TITLE on top; written atomically as a PNG.
void write_bar_chart(const std::string& title, const std::vector<std::string>& names,
                     const std::vector<double>& values, const std::string& out_png);

}  // namespace invp::data
