// EmbeddingWriter: chunking, resume after a kill, damaged chunks, manifests, atomic finish.
#include <invp/core/error.h>
#include <invp/store/embedding_store.h>

#include <fstream>

#include "store_test_util.h"

using namespace invp::store;
using namespace invp::store::test;

namespace {

constexpr int64_t kDim = 5;

// The reference: all rows written in one go.
std::string reference(const fs::path& dir, int64_t n, const StoreMeta& meta = make_meta(kDim)) {
  auto p = (dir / "reference.h5").string();
  write_store(p, meta, make_rows(0, n, kDim));
  return p;
}

// Appends rows [from, to) in pieces of the given sizes (cycled).
void append_pieces(EmbeddingWriter& w, int64_t from, int64_t to, std::vector<int64_t> sizes) {
  for (size_t k = 0; from < to; ++k) {
    const int64_t n = std::min(sizes[k % sizes.size()], to - from);
    w.append(make_rows(from, n, kDim));
    from += n;
  }
}

std::string chunk(const std::string& out, int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "chunk-%06d.bin", i);
  return (fs::path(out + ".partial") / buf).string();
}

// A run killed after appending rows [0, n): the writer is destroyed without finish().
void killed_run(const std::string& out, int64_t n, int64_t chunk_rows, const StoreMeta& meta = make_meta(kDim)) {
  EmbeddingWriter w(out, meta, chunk_rows);
  append_pieces(w, 0, n, {3, 8});
}

std::vector<std::string> tmp_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path().string());
  return out;
}

}  // namespace

TEST(Writer, AppendsOfOddSizesEqualOneWrite) {
  auto dir = temp_dir("odd");
  auto ref = reference(dir, 61);
  auto out = (dir / "out.h5").string();
  EmbeddingWriter w(out, make_meta(kDim), 7);
  EXPECT_EQ(w.resume_rows(), 0);
  EXPECT_EQ(w.next_id(), 0);
  w.append(make_rows(0, 0, kDim));
  append_pieces(w, 0, 61, {1, 13, 6, 7, 2});
  EXPECT_EQ(w.next_id(), 61);
  EXPECT_TRUE(fs::exists(chunk(out, 7)));  // 8 full chunks of 7 on disk, 5 rows buffered
  EXPECT_FALSE(fs::exists(chunk(out, 8)));
  EXPECT_FALSE(fs::exists(out));
  w.finish();
  EXPECT_FALSE(fs::exists(out + ".partial"));
  expect_same_file(out, ref);
  EXPECT_THROW(w.append(make_rows(61, 1, kDim)), invp::Error);
  EXPECT_THROW(w.finish(), invp::Error);

  // One chunk larger than everything, and chunks of one row, give the same file.
  for (int64_t c : {1, 1000}) {
    EmbeddingWriter w2(out, make_meta(kDim), c);
    w2.append(make_rows(0, 61, kDim));
    w2.finish();
    expect_same_file(out, ref);
  }
  EXPECT_TRUE(tmp_files(dir).empty());
  fs::remove_all(dir);
}

TEST(Writer, ResumesFromTheLastCompleteChunkAfterAKill) {
  auto dir = temp_dir("resume");
  auto ref = reference(dir, 57);
  auto out = (dir / "out.h5").string();
  killed_run(out, 34, 10);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::exists(out + ".partial"));
  // What a kill during finish() leaves: a temp file of a process that is gone.
  std::ofstream(out + ".tmp.999999999") << "half an HDF5 file";

  EmbeddingWriter w(out, make_meta(kDim), 10);
  EXPECT_FALSE(fs::exists(out + ".tmp.999999999"));
  EXPECT_EQ(w.resume_rows(), 30);  // 4 buffered rows were lost with the killed writer
  EXPECT_EQ(w.next_id(), 30);
  append_pieces(w, w.next_id(), 57, {9});
  w.finish();
  expect_same_file(out, ref);
  EXPECT_FALSE(fs::exists(out + ".partial"));

  // Resuming with everything already stored just assembles the file.
  killed_run(out, 40, 10);
  EmbeddingWriter all(out, make_meta(kDim), 10);
  EXPECT_EQ(all.resume_rows(), 40);
  all.finish();
  expect_same_file(out, reference(dir, 40));
  fs::remove_all(dir);
}

TEST(Writer, DamagedChunksAreDroppedAndRedone) {
  auto dir = temp_dir("damaged");
  auto ref = reference(dir, 50);
  auto out = (dir / "out.h5").string();

  // Truncated last chunk (a kill during a non-atomic copy, a full disk…).
  killed_run(out, 45, 10);
  fs::resize_file(chunk(out, 3), fs::file_size(chunk(out, 3)) - 9);
  std::ofstream(out + ".partial/chunk-000003.bin.tmp.12345") << "half a chunk";  // leftover temp
  {
    EmbeddingWriter w(out, make_meta(kDim), 10);
    EXPECT_EQ(w.resume_rows(), 30);
    EXPECT_FALSE(fs::exists(chunk(out, 3)));
    EXPECT_TRUE(tmp_files(dir).empty());
    append_pieces(w, 30, 50, {4});
    w.finish();
  }
  expect_same_file(out, ref);

  // A flipped byte in the middle: that chunk and every later one are redone.
  killed_run(out, 45, 10);
  {
    std::fstream f(chunk(out, 1), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x7f');
  }
  {
    EmbeddingWriter w(out, make_meta(kDim), 10);
    EXPECT_EQ(w.resume_rows(), 10);
    EXPECT_FALSE(fs::exists(chunk(out, 2)));
    append_pieces(w, 10, 50, {11});
    w.finish();
  }
  expect_same_file(out, ref);

  // A chunk that is not a chunk at all.
  killed_run(out, 25, 10);
  std::ofstream(chunk(out, 0), std::ios::trunc) << "garbage";
  EmbeddingWriter w(out, make_meta(kDim), 10);
  EXPECT_EQ(w.resume_rows(), 0);
  fs::remove_all(dir);
}

TEST(Writer, MismatchedManifestStartsAfresh) {
  auto dir = temp_dir("manifest");
  auto out = (dir / "out.h5").string();
  auto other = make_meta(kDim, "another-model");
  killed_run(out, 30, 10, other);
  {
    EmbeddingWriter w(out, make_meta(kDim), 10);
    EXPECT_EQ(w.resume_rows(), 0);
    EXPECT_EQ(w.next_id(), 0);
    EXPECT_FALSE(fs::exists(chunk(out, 0)));
  }
  killed_run(out, 30, 10);
  EXPECT_EQ(EmbeddingWriter(out, make_meta(kDim), 12).resume_rows(), 0);  // other chunk size
  killed_run(out, 30, 10);
  auto moved = make_meta(kDim);
  moved.source = "/elsewhere";
  EXPECT_EQ(EmbeddingWriter(out, moved, 10).resume_rows(), 0);
  killed_run(out, 30, 10);
  auto bf16 = make_meta(kDim);  // rows computed in another precision are not continued
  bf16.precision = "bf16";
  EXPECT_EQ(EmbeddingWriter(out, bf16, 10).resume_rows(), 0);
  killed_run(out, 30, 10);
  std::ofstream(out + ".partial/manifest.json", std::ios::trunc) << "{ not json";
  EXPECT_EQ(EmbeddingWriter(out, make_meta(kDim), 10).resume_rows(), 0);

  // Categories and model_path are not part of the identity: they are taken from the new meta.
  killed_run(out, 30, 10);
  auto renamed = make_meta(kDim);
  renamed.categories = {"a", "b"};
  EmbeddingWriter w(out, renamed, 10);
  EXPECT_EQ(w.resume_rows(), 30);
  append_pieces(w, 30, 44, {5});
  w.finish();
  expect_same_file(out, reference(dir, 44, renamed));
  fs::remove_all(dir);
}

TEST(Writer, ExistingOutputIsKeptUntilFinishRenames) {
  auto dir = temp_dir("keep");
  auto out = (dir / "out.h5").string();
  auto old_copy = (dir / "old.h5").string();
  auto old_meta = make_meta(kDim, "old-model");
  write_store(out, old_meta, make_rows(0, 12, kDim));
  write_store(old_copy, old_meta, make_rows(0, 12, kDim));

  // A new writer over an existing OUT (no partial dir) starts fresh and leaves OUT alone.
  {
    EmbeddingWriter w(out, make_meta(kDim), 10);
    EXPECT_EQ(w.resume_rows(), 0);
    append_pieces(w, 0, 35, {6});
    expect_same_file(out, old_copy);
    // Damage a stored chunk behind the writer's back: finish must fail without touching OUT.
    fs::resize_file(chunk(out, 2), 100);
    try {
      w.finish();
      ADD_FAILURE() << "finish accepted a damaged chunk";
    } catch (const invp::Error& e) {
      EXPECT_NE(std::string(e.what()).find("chunk-000002.bin"), std::string::npos) << e.what();
    }
  }
  expect_same_file(out, old_copy);
  EXPECT_TRUE(tmp_files(dir).empty());

  // The next run redoes the damaged chunk and replaces OUT.
  EmbeddingWriter w(out, make_meta(kDim), 10);
  EXPECT_EQ(w.resume_rows(), 20);
  append_pieces(w, 20, 35, {7});
  w.finish();
  expect_same_file(out, reference(dir, 35));
  fs::remove_all(dir);
}

TEST(Writer, RejectsBadRowsAndSettings) {
  auto dir = temp_dir("bad");
  auto out = (dir / "out.h5").string();
  EXPECT_THROW(EmbeddingWriter(out, make_meta(kDim), 0), invp::Error);
  EXPECT_THROW(EmbeddingWriter(out, make_meta(0), 10), invp::Error);
  EmbeddingWriter w(out, make_meta(kDim), 10);
  EXPECT_THROW(w.append(make_rows(0, 3, kDim + 1)), invp::Error);
  auto no_emb = make_rows(0, 3, kDim);
  no_emb.embeddings = at::Tensor();
  EXPECT_THROW(w.append(no_emb), invp::Error);
  auto short_paths = make_rows(0, 3, kDim);
  short_paths.paths.pop_back();
  EXPECT_THROW(w.append(short_paths), invp::Error);
  // float64 input is stored as float32.
  auto wide = make_rows(0, 4, kDim);
  wide.embeddings = wide.embeddings.to(at::kDouble);
  w.append(wide);
  w.finish();
  expect_same_file(out, reference(dir, 4));
  fs::remove_all(dir);
}

// One writer per output file: a second writer on the same OUT is refused with the holder's
// pid while the first is alive, and works once it is gone; other outputs beside it are free.
TEST(Writer, SecondWriterOnTheSameOutputIsRefused) {
  auto dir = temp_dir("lock");
  auto out = (dir / "out.h5").string();
  {
    EmbeddingWriter first(out, make_meta(kDim), 10);
    try {
      EmbeddingWriter second(out, make_meta(kDim), 10);
      ADD_FAILURE() << "a second writer on the same output was accepted";
    } catch (const invp::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(out), std::string::npos) << msg;
      EXPECT_NE(msg.find("pid " + std::to_string(::getpid())), std::string::npos) << msg;
    }
    EXPECT_NO_THROW(EmbeddingWriter other((dir / "other.h5").string(), make_meta(kDim), 10));
    append_pieces(first, 0, 12, {5});
    first.finish();
  }
  EmbeddingWriter again(out, make_meta(kDim), 10);
  EXPECT_EQ(again.resume_rows(), 0);
  fs::remove_all(dir);
}
