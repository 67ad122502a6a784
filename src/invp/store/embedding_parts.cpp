#include <invp/core/error.h>
#include <invp/store/embedding_store.h>

#include <algorithm>
#include <string>
#include <vector>

namespace invp::store {
namespace {
constexpr int64_t kJoinBlock = 8192;  // rows read and appended at a time
}  // namespace

// Each part is opened twice, one at a time: once to check it and once to copy it. Holding every
// reader open would cost an HDF5 file handle, its caches and a file descriptor per part, which
// grows with the number of parts (a merge of 1,000 slices would run out of descriptors).
StoreMeta join_parts(const std::vector<std::string>& parts, const std::string& out) {
  if (parts.empty()) throw Error(out, "no embeddings files to join");
  struct Part {
    std::string path;
    int64_t size = 0, first = 0, last = -1;
  };
  std::vector<Part> ps;
  StoreMeta m0;
  bool emb0 = false;
  for (const auto& path : parts) {
    EmbeddingReader r(path);
    const auto& m = r.meta();
    if (ps.empty()) m0 = m, emb0 = r.has_embeddings();
    const std::string& first_path = ps.empty() ? path : ps[0].path;
    if (m.model_hash != m0.model_hash)
      throw Error(path, "was embedded with another model than " + first_path, "embed every part with one model");
    if (m.dim != m0.dim || m.precision != m0.precision || m.features != m0.features || r.has_embeddings() != emb0)
      throw Error(path, "differs from " + first_path + " in dimension, precision, features or kind",
                  "embed every part with the same model, --precision and --features");
    Part p{path, r.size()};
    if (p.size > 0) p.first = r.read(0, 1, false).ids[0], p.last = r.read(p.size - 1, 1, false).ids[0];
    ps.push_back(std::move(p));
  }
  std::stable_sort(ps.begin(), ps.end(), [](const Part& a, const Part& b) { return a.first < b.first; });
  for (size_t i = 1; i < ps.size(); ++i)
    if (ps[i].size > 0 && ps[i - 1].size > 0 && ps[i].first <= ps[i - 1].last)
      throw Error(ps[i].path, "ids " + std::to_string(ps[i].first) + ".." + std::to_string(ps[i].last) +
                                  " overlap " + ps[i - 1].path + "'s (" + std::to_string(ps[i - 1].first) + ".." +
                                  std::to_string(ps[i - 1].last) + ")",
                  "give each part of the source once");
  StoreMeta meta = EmbeddingReader(ps[0].path).meta();
  meta.shard.clear();
  meta.created.clear();
  EmbeddingWriter writer(out, meta, kJoinBlock);
  for (const auto& p : ps) {
    EmbeddingReader r(p.path);
    if (r.size() != p.size)
      throw Error(p.path, "changed while the parts were being joined", "join again once it is written");
    for (int64_t start = 0; start < p.size; start += kJoinBlock)
      writer.append(r.read(start, std::min(kJoinBlock, p.size - start)));
  }
  writer.finish();
  return meta;
}

}  // namespace invp::store
