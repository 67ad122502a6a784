// One job at a time on a background thread, in submission order. The trainer hands it the
// serialising and writing of each epoch's checkpoint (from a snapshot taken on the training
// thread), so the next epoch starts while that work is done. A job's exception is kept and rethrown by the
// next submit() or wait(): a failed write stops the run at the next epoch's end at the
// latest, with the write's own message, and the previous file is still in place (writes go
// through write_file_atomically).
#pragma once
#include <exception>
#include <functional>
#include <thread>

namespace invp {
class BackgroundJob {
 public:
  BackgroundJob() = default;
  BackgroundJob(const BackgroundJob&) = delete;
  BackgroundJob& operator=(const BackgroundJob&) = delete;
  ~BackgroundJob();  // waits for a running job; an error it left is dropped (wait() reports it)

  // Waits for the previous job (rethrowing its error, in which case job does not start),
  // then starts job.
  void submit(std::function<void()> job);
  // Waits for the running job, if any; rethrows its exception once.
  void wait();
  bool busy() const { return thread_.joinable(); }

 private:
  std::thread thread_;
  std::exception_ptr error_;
};
}  // namespace invp
