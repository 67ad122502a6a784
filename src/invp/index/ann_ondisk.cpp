// IVF slices merged into one index, in memory or into FAISS's OnDiskInvertedLists (.ivfdata),
// following FAISS's "Indexes that do not fit in RAM" recipe (benchs/distributed_ondisk).
// Nothing here stores lists itself: FAISS's merge_into and OnDiskInvertedLists do.
#include <invp/core/atomic_file.h>
#include <invp/core/error.h>
#include <invp/index/ann_detail.h>
#include <invp/index/ann_index.h>

#include <faiss/IVFlib.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>
#include <faiss/invlists/OnDiskInvertedLists.h>

#include <cstdio>
#include <filesystem>
#include <memory>

#include <fcntl.h>
#include <unistd.h>

namespace invp::index {
namespace {
namespace fs = std::filesystem;

const char* kFix = "fill every slice from the same trained index (invp index build --trained)";


std::unique_ptr<faiss::Index> read_checked(const CheckedFile& f, int flags) {
  check_file(f, kFix);
  try {
    return std::unique_ptr<faiss::Index>(faiss::read_index(f.path.c_str(), flags));
  } catch (const std::exception& e) {
    throw Error(f.path, std::string("not a readable FAISS index: ") + e.what(), kFix);
  }
}

faiss::IndexIVF* ivf_of(faiss::Index* idx, const std::string& path) {
  auto* ivf = faiss::ivflib::try_extract_index_ivf(idx);
  if (!ivf) throw Error(path, "not an IVF index: only IVF indexes are filled in slices and merged", "use ivf-flat or ivf-pq");
  return ivf;
}

// FAISS's own merge check: same transforms, d, nlist, code size and (byte-compared) centroids.
void check_same_training(const faiss::Index* trained, const faiss::Index* slice, const std::string& path,
                         const std::string& trained_path) {
  try {
    faiss::ivflib::check_compatible_for_merge(trained, slice);
  } catch (const std::exception& e) {
    throw Error(path, "was not filled from the trained index " + trained_path + " (" + e.what() + ")", kFix);
  }
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0 || ::fsync(fd) != 0) {
    if (fd >= 0) ::close(fd);
    throw Error(path, "cannot flush to disk", "check free disk space");
  }
  ::close(fd);
}

void write_index_file(const faiss::Index* idx, const std::string& path) {
  write_atomically(path, [&](const std::string& tmp) {
    try {
      faiss::write_index(idx, tmp.c_str());
    } catch (const std::exception& e) {
      throw Error(path, std::string("cannot write index: ") + e.what(), "check free disk space and permissions");
    }
  });
}
}  // namespace

int64_t merge_ivf_slices(const CheckedFile& trained, const std::vector<CheckedFile>& slices,
                         const std::string& out_path, const std::string& ivfdata) {
  if (slices.empty()) throw Error(out_path, "no slices to merge");
  auto target = read_checked(trained, 0);
  faiss::IndexIVF* tivf = ivf_of(target.get(), trained.path);
  if (tivf->ntotal != 0) throw Error(trained.path, "a trained index must be empty", "give the output of invp index train");

  if (ivfdata.empty()) {
    // One slice in memory at a time besides the growing result.
    for (const auto& s : slices) {
      auto idx = read_checked(s, 0);
      ivf_of(idx.get(), s.path);
      check_same_training(target.get(), idx.get(), s.path, trained.path);
      try {
        faiss::ivflib::merge_into(target.get(), idx.get(), false);
      } catch (const std::exception& e) {
        throw Error(s.path, std::string("cannot merge: ") + e.what(), kFix);
      }
    }
    write_index_file(target.get(), out_path);
    return int64_t(target->ntotal);
  }

  // The slices' lists stay in their files, mapped (IO_FLAG_MMAP); merge_from copies them list
  // by list into the mapped .ivfdata, so memory holds the page cache's share, not the codes.
  // merge_from wants every slice at once: only their lists are kept, each slice's copy of the
  // quantizer and codebooks is freed as soon as it is checked (at nlist 126k the quantizer alone
  // is 65 MB a slice).
  std::vector<std::unique_ptr<faiss::InvertedLists>> held;
  std::vector<const faiss::InvertedLists*> lists;
  for (const auto& s : slices) {
    auto idx = read_checked(s, faiss::IO_FLAG_MMAP);
    faiss::IndexIVF* ivf = ivf_of(idx.get(), s.path);
    check_same_training(target.get(), idx.get(), s.path, trained.path);
    held.emplace_back(ivf->invlists);
    ivf->own_invlists = false;
    lists.push_back(held.back().get());
  }
  const std::string tmp = ivfdata + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove(tmp, ec);
  try {
    auto* od = new faiss::OnDiskInvertedLists(tivf->nlist, tivf->code_size, tmp.c_str());
    tivf->replace_invlists(od, true);
    const size_t n = detail::with_quiet_stdout([&] { return od->merge_from(lists.data(), int(lists.size())); });
    tivf->ntotal = faiss::Index::idx_t(n);
    target->ntotal = faiss::Index::idx_t(n);
    held.clear();
    // The index file names its lists file; read() looks that name up beside the index file.
    od->filename = ivfdata;
    write_index_file(target.get(), out_path);
    target.reset();  // unmaps the lists
    fsync_path(tmp);
    fs::rename(tmp, ivfdata);
    return int64_t(n);
  } catch (const Error&) {
    fs::remove(tmp, ec);
    throw;
  } catch (const std::exception& e) {
    fs::remove(tmp, ec);
    throw Error(ivfdata, std::string("cannot write the on-disk inverted lists: ") + e.what(), "check free disk space");
  }
}

}  // namespace invp::index
