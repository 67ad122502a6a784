#include <invp/core/error.h>
#include <invp/store/embedding_store.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace invp::store {
namespace {
constexpr int64_t kJoinBlock = 8192;  // rows read and appended at a time
}  // namespace

StoreMeta join_parts(const std::vector<std::string>& parts, const std::string& out) {
  if (parts.empty()) throw Error(out, "no embeddings files to join");
  struct Part {
    std::string path;
    std::unique_ptr<EmbeddingReader> reader;
    int64_t first = 0, last = -1;
  };
  std::vector<Part> ps;
  for (const auto& path : parts) {
    Part p{path, std::make_unique<EmbeddingReader>(path)};
    const EmbeddingReader& r0 = ps.empty() ? *p.reader : *ps[0].reader;
    const auto &m = p.reader->meta(), &m0 = r0.meta();
    const std::string& first_path = ps.empty() ? path : ps[0].path;
    if (m.model_hash != m0.model_hash)
      throw Error(path, "was embedded with another model than " + first_path, "embed every part with one model");
    if (m.dim != m0.dim || m.precision != m0.precision || m.features != m0.features ||
        p.reader->has_embeddings() != r0.has_embeddings())
      throw Error(path, "differs from " + first_path + " in dimension, precision, features or kind",
                  "embed every part with the same model, --precision and --features");
    if (p.reader->size() > 0) {
      p.first = p.reader->read(0, 1, false).ids[0];
      p.last = p.reader->read(p.reader->size() - 1, 1, false).ids[0];
    }
    ps.push_back(std::move(p));
  }
  std::stable_sort(ps.begin(), ps.end(), [](const Part& a, const Part& b) { return a.first < b.first; });
  for (size_t i = 1; i < ps.size(); ++i)
    if (ps[i].reader->size() > 0 && ps[i - 1].reader->size() > 0 && ps[i].first <= ps[i - 1].last)
      throw Error(ps[i].path, "ids " + std::to_string(ps[i].first) + ".." + std::to_string(ps[i].last) +
                                  " overlap " + ps[i - 1].path + "'s (" + std::to_string(ps[i - 1].first) + ".." +
                                  std::to_string(ps[i - 1].last) + ")",
                  "give each part of the source once");
  StoreMeta meta = ps[0].reader->meta();
  meta.shard.clear();
  meta.created.clear();
  EmbeddingWriter writer(out, meta, kJoinBlock);
  for (auto& p : ps)
    for (int64_t start = 0; start < p.reader->size(); start += kJoinBlock)
      writer.append(p.reader->read(start, std::min(kJoinBlock, p.reader->size() - start)));
  writer.finish();
  return meta;
}

}  // namespace invp::store
