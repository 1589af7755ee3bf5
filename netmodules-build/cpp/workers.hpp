// Where plugin calls run, off the isolator's actor: a small pool with a
// queue, so a burst of calls never means a burst of threads, and nothing
// thrown in or around a job reaches the agent (an exception escaping a
// thread, or a failed thread start, would terminate it). Plain C++11.
#ifndef CALICO_MESOS_WORKERS_HPP
#define CALICO_MESOS_WORKERS_HPP

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace calico_mesos {

// A job returns "" on success, else what failed.
typedef std::function<std::string()> Job;
// Receives the job's result; this is where a future gets completed.
typedef std::function<void(const std::string& error)> Done;

class Workers {
public:
  // Threads start when work needs them, `max_threads` at most.
  explicit Workers(size_t max_threads);
  // Runs what is queued, then joins the threads.
  ~Workers();

  // Queues `job`; `done` gets its result, or the exception it threw as a
  // failure. Never throws: when no thread can run the job, `done` gets
  // that failure here and now.
  void submit(const Job& job, const Done& done);

private:
  Workers(const Workers&);
  Workers& operator=(const Workers&);
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::pair<Job, Done> > queue_;
  std::vector<std::thread> threads_;
  size_t max_threads_;
  size_t idle_;
  bool stopping_;
};

}  // namespace calico_mesos

#endif
