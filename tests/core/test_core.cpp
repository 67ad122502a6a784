#include <invp/core/atomic_file.h>
#include <invp/core/background_job.h>
#include <invp/core/error.h>
#include <invp/core/hash.h>
#include <invp/core/lock_file.h>
#include <invp/core/memory.h>
#include <invp/core/threads.h>

#include <gtest/gtest.h>
#include <omp.h>

#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;

namespace {
fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("invp_core_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}
}  // namespace

TEST(Error, FormatsFileProblemAndFix) {
  invp::Error e("a.png", "cannot decode image", "is it an image?");
  EXPECT_STREQ(e.what(), "a.png: cannot decode image (is it an image?)");
  EXPECT_EQ(e.file(), "a.png");
  EXPECT_STREQ(invp::Error("", "bad").what(), "bad");
}

TEST(Hash, Xxh3KnownValueAndFileAgreesWithBytes) {
  // XXH3-128 of the empty input, from the xxHash reference test vectors.
  EXPECT_EQ(invp::hash_string(""), "99aa06d3014798d86001c324468d497f");
  EXPECT_NE(invp::hash_string("a"), invp::hash_string("b"));
  auto d = temp_dir("hash");
  std::string big(3 << 20, 'x');  // spans several read chunks
  big[12345] = 'y';
  std::ofstream(d / "f", std::ios::binary) << big;
  EXPECT_EQ(invp::hash_file((d / "f").string()), invp::hash_string(big));
  EXPECT_THROW(invp::hash_file((d / "missing").string()), invp::Error);
  fs::remove_all(d);
}

TEST(AtomicFile, ReplacesOnlyOnSuccess) {
  auto d = temp_dir("atomic");
  auto p = (d / "out.txt").string();
  invp::write_file_atomically(p, "good");
  EXPECT_EQ(slurp(p), "good");
  EXPECT_THROW(invp::write_atomically(p,
                                      [](const std::string& tmp) {
                                        std::ofstream(tmp) << "partial";
                                        throw invp::Error(tmp, "simulated failure");
                                      }),
               invp::Error);
  EXPECT_EQ(slurp(p), "good");  // the good file survives
  int files = 0;
  for (auto& e : fs::directory_iterator(d)) (void)e, ++files;
  EXPECT_EQ(files, 1);  // no temp file left behind
  // Writing into a missing directory is a clear error, not a crash.
  EXPECT_THROW(invp::write_file_atomically((d / "no/such/x").string(), "x"), invp::Error);
  fs::remove_all(d);
}

// Jobs run one at a time, in order, off the calling thread; a job's error is reported once,
// by the next submit (whose job then does not run) or wait; the destructor waits.
TEST(BackgroundJob, OrderedOneAtATimeWithErrorsReportedOnce) {
  std::vector<int> done;
  std::atomic<int> running{0}, most{0};
  auto job = [&](int i) {
    return [&, i] {
      most = std::max(most.load(), ++running);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      done.push_back(i);  // safe: jobs never overlap (checked through `most`)
      --running;
    };
  };
  {
    invp::BackgroundJob bg;
    auto caller = std::this_thread::get_id();
    std::thread::id ran_on;
    bg.submit([&] { ran_on = std::this_thread::get_id(); });
    bg.wait();
    EXPECT_NE(ran_on, caller);
    for (int i = 0; i < 4; ++i) bg.submit(job(i));
    EXPECT_TRUE(bg.busy());
    bg.wait();
    EXPECT_FALSE(bg.busy());
    EXPECT_EQ(done, (std::vector<int>{0, 1, 2, 3}));
    EXPECT_EQ(most.load(), 1);

    bg.submit([] { throw invp::Error("x.pt", "disk full"); });
    bool ran = false;
    EXPECT_THROW(bg.submit([&] { ran = true; }), invp::Error);
    bg.wait();
    EXPECT_FALSE(ran);       // refused with the error
    EXPECT_NO_THROW(bg.wait());  // reported once
    bg.submit([] { throw std::runtime_error("late"); });
    EXPECT_THROW(bg.wait(), std::runtime_error);
    bg.submit(job(4));
  }  // the destructor waits for job 4
  EXPECT_EQ(done.back(), 4);
}

TEST(AtomicFile, LeftoverTempFilesRemovedForThatFileOnly) {
  auto d = temp_dir("leftover");
  for (auto name : {"a.pt", "a.pt.tmp.1", "a.pt.tmp.22", "a.ptx.tmp.3", "b.pt.tmp.4"}) std::ofstream(d / name) << "x";
  invp::remove_leftover_temp_files((d / "a.pt").string());
  std::set<std::string> left;
  for (auto& e : fs::directory_iterator(d)) left.insert(e.path().filename().string());
  EXPECT_EQ(left, (std::set<std::string>{"a.pt", "a.ptx.tmp.3", "b.pt.tmp.4"}));
  fs::remove_all(d);
}

TEST(Threads, BudgetAppliesToTorchAndOpenMP) {
  invp::apply_thread_budget(1);
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_EQ(omp_get_max_threads(), 1);
  invp::apply_thread_budget(2);
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(omp_get_max_threads(), 2);
  EXPECT_EQ(invp::thread_budget(), 2);
  EXPECT_NE(invp::thread_report().find("budget 2"), std::string::npos);
}

TEST(Threads, ResolveOrder) {
  ::setenv("INVP_THREADS", "3", 1);
  EXPECT_EQ(invp::resolve_thread_budget(5), 5);  // flag wins
  EXPECT_EQ(invp::resolve_thread_budget(0), 3);  // then the env twin
  ::unsetenv("INVP_THREADS");
  EXPECT_GE(invp::resolve_thread_budget(0), 1);  // then the cores
}

// One writer per directory: a second lock on the same directory names the holder; the lock
// is free again once the holder is gone.
TEST(DirLock, SecondHolderRefusedThenTakenOver) {
  auto dir = (std::filesystem::temp_directory_path() / ("invp-lock-" + std::to_string(::getpid()))).string();
  {
    invp::DirLock first(dir);
    try {
      invp::DirLock second(dir);
      FAIL() << "second lock should be refused";
    } catch (const invp::Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(dir), std::string::npos);
      EXPECT_NE(msg.find("pid " + std::to_string(::getpid())), std::string::npos) << msg;
    }
  }
  EXPECT_NO_THROW(invp::DirLock again(dir));
  // A lock held by a process that died (here: a child that exits while holding it) is taken over.
  pid_t child = ::fork();
  if (child == 0) {
    invp::DirLock held(dir);
    std::_Exit(0);  // no destructor: the kernel drops the lock
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_NO_THROW(invp::DirLock after_death(dir));
  std::filesystem::remove_all(dir);
}

// reserve_resident_heap: after it, a large allocation must take almost no page faults, while
// memory beyond the reserve faults on every page as usual. (invp query relies on this for the
// FAISS file, read on a thread started after the call.) ctest runs each test in its own
// process, so the process-wide malloc settings stay inside this test.
TEST(Memory, ReservedHeapIsResidentForLaterAllocations) {
  constexpr size_t kBytes = size_t(48) << 20;
  const size_t made = invp::reserve_resident_heap(kBytes + (size_t(8) << 20));
  if (made == 0) GTEST_SKIP() << "kernel without MADV_POPULATE_WRITE (Linux < 5.14)";
  EXPECT_GE(made, kBytes);
  auto minor_faults = [] {
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    return long(r.ru_minflt);
  };
  auto fill = [&](char** p) {
    const long before = minor_faults();
    *p = static_cast<char*>(std::malloc(kBytes));
    EXPECT_NE(*p, nullptr);
    if (*p) std::memset(*p, 1, kBytes);
    return minor_faults() - before;
  };
  char *a = nullptr, *b = nullptr;
  const long warm = fill(&a);  // inside the reserve
  const long cold = fill(&b);  // beyond it: fresh pages
  std::free(b);
  std::free(a);
  const long pages = long(kBytes / size_t(sysconf(_SC_PAGESIZE)));
  EXPECT_LT(warm, pages / 20) << "cold: " << cold;
  // Where pages fault one by one (no transparent huge pages), the contrast is large.
  if (cold > pages / 2) {
    EXPECT_LT(warm * 10, cold);
  }
}

TEST(Memory, ResidentHeapCanBeTurnedOff) {
  ::setenv("INVP_RESIDENT_HEAP", "0", 1);
  EXPECT_EQ(invp::reserve_resident_heap(size_t(1) << 20), 0u);
  ::unsetenv("INVP_RESIDENT_HEAP");
  EXPECT_EQ(invp::reserve_resident_heap(0), 0u);
}
