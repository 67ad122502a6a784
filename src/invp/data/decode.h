// Image decoding shared by the file-based readers. OpenCV stays inside the .cpp so users
// of this header need only std types.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <invp/data/dataset.h>

namespace invp::data {

// Decodes an encoded image (PNG, JPEG, BMP, TIFF, WebP, PNM...) into 8-bit HWC, RGB when
// channels is 3 (or 0), grey when 1, whatever the source: grey, grey+alpha and RGBA
// (composited on white), 16-bit (scaled), palette. Throws invp::Error(path_for_errors,
// "cannot decode image", ...) for empty, non-image or truncated data.
// "PNG", "JPEG", "BMP", "TIFF", "WebP" or "PNM" from the leading bytes, or nullptr: the only
// bytes decode_image hands to OpenCV.
const char* sniff_image_format(const std::vector<uint8_t>& bytes);

Image decode_image(const std::vector<uint8_t>& bytes, int channels,
                   const std::string& path_for_errors);

// Reads PATH and decodes it as decode_image(); an unreadable file throws invp::Error.
Image read_image_file(const std::string& path, int channels);

// Returns IMG with CHANNELS (1 or 3) channels: grey is replicated, RGB goes to luma.
Image convert_channels(Image img, int channels);

// Builds an Image from an interleaved HWC buffer (copied).
Image to_image(const uint8_t* hwc, int height, int width, int channels);

// True when PATH's extension (any case) is one the folder reader picks up.
bool has_image_extension(const std::string& path);

// Whole-file read; "-" is not accepted. Throws invp::Error naming PATH on failure.
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace invp::data
