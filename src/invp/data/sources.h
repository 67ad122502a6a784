// Internal: the concrete readers behind open_dataset() (dataset.cpp picks one).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <invp/data/dataset.h>

namespace invp::data::detail {

enum class Split { Train, Test };

// IDX (MNIST layout): IMAGES is an images file, or a directory holding the split's pair.
std::shared_ptr<Dataset> open_idx(const std::string& images, Split split, const OpenOptions& o);
// True if PATH starts with an unsigned-byte IDX magic (gzip or raw).
bool looks_like_idx(const std::string& path);
// True if directory DIR holds a train-/t10k-images-idx3-ubyte[.gz] file.
bool dir_has_idx(const std::string& dir);

// CIFAR-10/100 binary batches: a .bin file or a directory of them.
std::shared_ptr<Dataset> open_cifar(const std::string& path, Split split, const OpenOptions& o);
bool dir_has_cifar(const std::string& dir);

// Image folder, labelled by immediate subdirectory when every image sits in one.
std::shared_ptr<Dataset> open_folder(const std::string& root, const OpenOptions& o);

// List file ("-" = stdin): `path[,label]` per line.
std::shared_ptr<Dataset> open_list(const std::string& list, const OpenOptions& o);
// Images in separate files, decoded lazily in get(); LABELS empty or one per path.
std::shared_ptr<Dataset> make_files_dataset(std::vector<std::string> paths,
                                            std::vector<int32_t> labels,
                                            std::vector<std::string> classes, std::string kind,
                                            const OpenOptions& o);
// A single image file as a one-item data set.
std::shared_ptr<Dataset> open_single_image(const std::string& path, const OpenOptions& o);

}  // namespace invp::data::detail
