// Tests of the workers that run plugin calls off the isolator's actor
// (item 8): bounded, and nothing that goes wrong in or around a job takes
// the agent down.
#include <errno.h>
#include <signal.h>
#include <stdexcept>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "../workers.hpp"
#include "harness.hpp"
#include "suites.hpp"

using namespace calico_mesos;
using harness::check;
using harness::contains;

namespace {

void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

// Collects the results handed to `done`.
class Results {
public:
  Done done() {
    return [this](const std::string& error) {
      std::lock_guard<std::mutex> lock(mutex_);
      errors_.push_back(error);
      changed_.notify_all();
    };
  }
  // Waits (10 s at most) for `n` results.
  std::vector<std::string> wait_for(size_t n) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait_for(lock, std::chrono::seconds(10), [this, n]() { return errors_.size() >= n; });
    return errors_;
  }

private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> errors_;
};

void bounded() {
  Workers workers(3);
  Results results;
  std::atomic<int> running(0), most(0);
  for (int i = 0; i < 20; ++i) {
    workers.submit(
        [&running, &most]() {
          int now = ++running;
          for (int seen = most; now > seen && !most.compare_exchange_weak(seen, now);) {}
          sleep_ms(30);
          --running;
          return std::string();
        },
        results.done());
  }
  std::vector<std::string> errors = results.wait_for(20);
  std::ostringstream d;
  d << errors.size() << " of 20 done, at most " << most << " at once";
  check(errors.size() == 20 && most <= 3 && most >= 1, "at most 3 jobs run at once, all run",
        d.str());
}

void exceptions_become_failures() {
  Workers workers(2);
  Results results;
  workers.submit([]() -> std::string { throw std::runtime_error("boom"); }, results.done());
  workers.submit([]() -> std::string { throw 42; }, results.done());
  workers.submit([]() { return std::string(); },
                 [](const std::string&) { throw std::logic_error("done failed"); });
  workers.submit([]() { return std::string("plain failure"); }, results.done());
  std::vector<std::string> errors = results.wait_for(3);
  bool boom = false, unknown = false, plain = false;
  for (size_t i = 0; i < errors.size(); ++i) {
    boom = boom || contains(errors[i], "boom");
    unknown = unknown || contains(errors[i], "unknown exception");
    plain = plain || errors[i] == "plain failure";
  }
  check(errors.size() == 3 && boom && unknown && plain,
        "exceptions in jobs become failures; one in done is contained", "");
}

}  // namespace

// In a child process (see main) that cannot map another thread's stack.
int workers_without_threads_main() {
  long pages = 0, page = sysconf(_SC_PAGESIZE);
  std::istringstream statm(harness::read_file("/proc/self/statm"));
  statm >> pages;
  struct rlimit limit;
  limit.rlim_cur = limit.rlim_max = static_cast<rlim_t>(pages * page + 4 * 1024 * 1024);
  if (pages <= 0 || setrlimit(RLIMIT_AS, &limit) != 0) return 3;
  Workers workers(2);
  Results results;
  workers.submit([]() { return std::string(); }, results.done());
  std::vector<std::string> errors = results.wait_for(1);
  if (errors.size() == 1 && contains(errors[0], "worker thread")) return 0;
  return 1;
}

void workers_tests(const std::string& self) {
  bounded();
  exceptions_become_failures();
  pid_t pid = fork();
  if (pid == 0) {
    execl(self.c_str(), self.c_str(), "--workers-without-threads", static_cast<char*>(NULL));
    _exit(126);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  std::ostringstream how;
  if (WIFSIGNALED(status)) how << "killed by signal " << WTERMSIG(status);
  if (WIFEXITED(status)) how << "exit status " << WEXITSTATUS(status);
  check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "a thread that cannot be started fails the job, not the process", how.str());
}
