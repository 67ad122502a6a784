// Embeds one image with a trained model through the installed invp library and prints the
// embedding's size and its first values. Usage: embed_one MODEL.pt IMAGE
#include <invp/data/decode.h>
#include <invp/search/embedder.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 3) return std::fprintf(stderr, "usage: embed_one MODEL.pt IMAGE\n"), 2;
  invp::search::Embedder embedder(argv[1]);                 // model.pt + model.json beside it
  auto image = invp::data::read_image_file(argv[2], embedder.channels());
  auto z = embedder.embed_images({image});                  // 1 x D, L2-normalised
  std::printf("%lld %.6f %.6f\n", static_cast<long long>(z.size(1)), z[0][0].item<float>(), z.norm().item<float>());
}
