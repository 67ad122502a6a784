// Atomic outputs: write to "<path>.tmp.<pid>", flush + fsync, then rename over <path>, so a
// failure never leaves a half-written file where a good one was.
#pragma once
#include <functional>
#include <string>

namespace invp {
// Calls write(tmp_path) and commits tmp_path onto path; removes the temp file on failure.
void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write);
// Convenience for text/binary contents held in memory.
void write_file_atomically(const std::string& path, const std::string& contents);
// Removes "<path>.tmp.*" files that a killed writer left behind. Only for a path no other
// process writes at the time (e.g. under a DirLock).
void remove_leftover_temp_files(const std::string& path);
}  // namespace invp
