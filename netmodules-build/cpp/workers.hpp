// Where plugin calls run, off the isolator's actor. Plain C++11.
#ifndef CALICO_MESOS_WORKERS_HPP
#define CALICO_MESOS_WORKERS_HPP

#include <functional>
#include <string>

namespace calico_mesos {

// A job returns "" on success, else what failed.
typedef std::function<std::string()> Job;
// Receives the job's result; this is where a future gets completed.
typedef std::function<void(const std::string& error)> Done;

class Workers {
public:
  explicit Workers(size_t max_threads) : max_threads_(max_threads) {}
  // Runs `job` on another thread, then `done` with its result.
  void submit(const Job& job, const Done& done);

private:
  size_t max_threads_;
};

}  // namespace calico_mesos

#endif
