#include <invp/core/background_job.h>

#include <utility>

namespace invp {
BackgroundJob::~BackgroundJob() {
  if (thread_.joinable()) thread_.join();
}

void BackgroundJob::wait() {
  if (thread_.joinable()) thread_.join();  // join orders the job's writes before what follows
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void BackgroundJob::submit(std::function<void()> job) {
  wait();
  thread_ = std::thread([this, job = std::move(job)] {
    try {
      job();
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}
}  // namespace invp
