#include <invp/core/error.h>
#include <invp/data/montage.h>
#include <invp/data/preview.h>

#include <random>

namespace invp::data {
int write_preview(const Dataset& ds, const AugmentConfig& aug, const PreviewOptions& opt,
                  const std::string& out_png) {
  std::vector<Image> tiles;
  std::vector<std::string> captions;
  auto names = ds.class_names();
  std::mt19937_64 rng(opt.seed);
  int rows = 0;
  size_t n = ds.size();
  size_t step = std::max<size_t>(1, n / size_t(std::max(1, opt.samples)));
  for (size_t i = 0; i < n && rows < opt.samples; i += step) {
    Sample s;
    try {
      s = ds.get(i);
    } catch (const Error&) {
      continue;  // bad files are reported by `data info`; the preview just skips them
    }
    std::string name = s.label >= 0 && size_t(s.label) < names.size() ? names[s.label]
                       : s.label >= 0 ? std::to_string(s.label) : "#" + std::to_string(i);
    tiles.push_back(s.image);
    captions.push_back(name);
    for (int v = 0; v < opt.views; ++v) {
      tiles.push_back(augment(s.image, aug, rng));
      captions.push_back("aug " + std::to_string(v + 1));
    }
    ++rows;
  }
  if (rows == 0) throw Error(out_png, "no decodable image to preview");
  write_montage(tiles, captions, opt.views + 1, opt.tile_px, out_png);
  return rows;
}
}  // namespace invp::data
