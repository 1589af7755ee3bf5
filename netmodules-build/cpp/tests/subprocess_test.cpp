// Tests of how the plugin process is run inside a busy, multithreaded
// agent: SIGPIPE from several threads (item 5), other threads starting
// processes beside the calls (item 6), what the plugin inherits and what
// a timeout kills (item 7).
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../plugin_client.hpp"
#include "../subprocess.hpp"
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

// 4 threads x 300 runs writing 4 MiB into /bin/true, which exits without
// reading: every run's write fails with EPIPE. Run in a child process
// (see main) whose main thread, like any code of the host process may,
// keeps (re)setting its own SIGPIPE disposition, the default: a SIGPIPE
// that gets through kills it.
void sigpipe_storm() {
  std::vector<std::thread> threads;
  std::atomic<int> running(4);
  const std::string input(4 * 1024 * 1024, 'x');
  for (int t = 0; t < 4; ++t) {
    threads.push_back(std::thread([&input, &running]() {
      for (int i = 0; i < 300; ++i) run_command("/bin/true", input, 10000, 1024);
      --running;
    }));
  }
  while (running > 0) {
    signal(SIGPIPE, SIG_DFL);
    sleep_ms(1);
  }
  for (size_t t = 0; t < threads.size(); ++t) threads[t].join();
}

std::atomic<int> handled(0);
void count_sigpipe(int) { ++handled; }

bool is_our_handler() {
  struct sigaction now;
  sigaction(SIGPIPE, NULL, &now);
  return !(now.sa_flags & SA_SIGINFO) && now.sa_handler == count_sigpipe;
}

void sigpipe_from_threads(const std::string& self) {
  // Item 5: the storm in a child whose SIGPIPE is the default.
  pid_t pid = fork();
  if (pid == 0) {
    signal(SIGPIPE, SIG_DFL);
    execl(self.c_str(), self.c_str(), "--sigpipe-storm", static_cast<char*>(NULL));
    _exit(126);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  std::ostringstream how;
  if (WIFSIGNALED(status)) how << "killed by signal " << WTERMSIG(status);
  if (WIFEXITED(status)) how << "exit status " << WEXITSTATUS(status);
  check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "4 threads x 300 runs into a plugin that exits early: no SIGPIPE gets through", how.str());

  // The process-wide disposition is the agent's: never swapped, not even
  // for a moment, and a SIGPIPE our writes raise never reaches a handler.
  struct sigaction ours, previous;
  memset(&ours, 0, sizeof(ours));
  ours.sa_handler = count_sigpipe;
  sigaction(SIGPIPE, &ours, &previous);
  std::atomic<bool> done(false), swapped(false);
  std::thread watcher([&done, &swapped]() {
    while (!done) {
      if (!is_our_handler()) swapped = true;
    }
  });
  std::vector<std::thread> threads;
  const std::string input(1024 * 1024, 'x');
  for (int t = 0; t < 4; ++t) {
    threads.push_back(std::thread([&input]() {
      for (int i = 0; i < 50; ++i) run_command("/bin/true", input, 10000, 1024);
    }));
  }
  for (size_t t = 0; t < threads.size(); ++t) threads[t].join();
  done = true;
  watcher.join();
  check(!swapped && is_our_handler() && handled == 0,
        "the process-wide SIGPIPE disposition is never touched", swapped ? "it was swapped" : "");

  run_command("/bin/true", input, 10000, 1024);
  sigset_t mask, pending;
  pthread_sigmask(SIG_BLOCK, NULL, &mask);
  sigpending(&pending);
  check(!sigismember(&mask, SIGPIPE) && !sigismember(&pending, SIGPIPE) && handled == 0,
        "the calling thread's signal mask is restored, its SIGPIPE consumed", "");
  sigaction(SIGPIPE, &previous, NULL);
}

// Starts `sleep` every few ms from its own thread, by fork and exec, as
// the agent's other threads start their processes.
class Forker {
public:
  Forker(int every_ms, int life_ms)
      : stop_(false), thread_(&Forker::run, this, every_ms, life_ms) {}
  ~Forker() {
    stop_ = true;
    thread_.join();
    for (size_t i = 0; i < children_.size(); ++i) {
      kill(children_[i], SIGKILL);
      while (waitpid(children_[i], NULL, 0) < 0 && errno == EINTR) {}
    }
  }

private:
  void run(int every_ms, int life_ms) {
    std::ostringstream seconds;
    seconds << life_ms / 1000.0;
    const std::string s = seconds.str();
    while (!stop_) {
      pid_t pid = fork();
      if (pid == 0) {
        execl("/bin/sleep", "sleep", s.c_str(), static_cast<char*>(NULL));
        _exit(127);
      }
      if (pid > 0) children_.push_back(pid);
      // Reap our own children only: waitpid(-1) would take the plugin's.
      for (size_t i = 0; i < children_.size();) {
        if (waitpid(children_[i], NULL, WNOHANG) == children_[i]) {
          children_.erase(children_.begin() + i);
        } else {
          ++i;
        }
      }
      sleep_ms(every_ms);
    }
  }

  std::atomic<bool> stop_;
  std::vector<pid_t> children_;
  std::thread thread_;
};

void forking_threads_beside_calls() {
  // Item 6: fork+exec as the agent does. With pipe() then
  // fcntl(FD_CLOEXEC), a child exec'd in between kept the plugin's pipes
  // and the call timed out although the plugin had exited (2 of 200).
  std::string reader = harness::script("reader.sh", "cat >/dev/null\necho '{\"error\":null}'");
  int failed = 0;
  {
    Forker forker(10, 3000);
    for (int i = 0; i < 200; ++i) {
      ClientOptions o;
      o.timeout_ms = 2000;
      if (!call_plugin(reader, "{\"a\":1}", PLAIN, o).ok) ++failed;
    }
  }
  std::ostringstream e;
  e << failed << " of 200 calls failed";
  check(failed == 0, "fork+exec in another thread never keeps the plugin's pipes", e.str());

  // The plugin exits but leaves a child holding stdout open.
  std::string leaves = harness::script("leaves-child.sh",
                                       "sleep 3 &\necho '{\"error\":null}'");
  ClientOptions o;
  o.timeout_ms = 2000;
  PluginAnswer a = call_plugin(leaves, "{}", PLAIN, o);
  check(a.ok, "a run ends when the plugin exits, even if its child holds stdout", a.error);
}

std::string field(const std::string& status, const std::string& name) {
  size_t at = status.find(name + ":");
  if (at == std::string::npos) return "";
  size_t end = status.find('\n', at);
  std::string v = status.substr(at + name.size() + 1, end - at - name.size() - 1);
  return v.substr(v.find_first_not_of(" \t"));
}

bool dead(pid_t pid) {
  std::string stat = harness::read_file("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  return stat.empty() || (close != std::string::npos && stat.size() > close + 2 &&
                          (stat[close + 2] == 'Z' || stat[close + 2] == 'X'));
}

void what_the_plugin_inherits(const std::string& self) {
  // Item 7: the agent thread's blocked signals and the agent's ignored
  // ones are not the plugin's.
  struct sigaction ignore, previous;
  memset(&ignore, 0, sizeof(ignore));
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGUSR1, &ignore, &previous);
  sigset_t usr2, old;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &usr2, &old);
  // The probe is this test binary (see main): a shell would reset its mask.
  std::string p = harness::dir + "/status-probe";
  unlink(p.c_str());
  bool linked = symlink(self.c_str(), p.c_str()) == 0;
  CommandResult r = run_command(p, "{}", 10000, 65536);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  sigaction(SIGUSR1, &previous, NULL);
  std::string blocked = field(r.out, "SigBlk"), ignored = field(r.out, "SigIgn");
  // Signals 1-31: glibc's spawn sets its own internal 32 and 33 to ignored
  // (the plugin's libc installs its handlers for them anyway).
  unsigned long long ignored_bits = strtoull(ignored.c_str(), NULL, 16);
  check(linked && r.exited && blocked == std::string(16, '0') && !ignored.empty() &&
            (ignored_bits & 0x7fffffffULL) == 0,
        "the plugin starts with no signal blocked or ignored",
        "SigBlk " + blocked + ", SigIgn " + ignored);

  std::string group = field(r.out, "NSpgid"), pid = field(r.out, "Pid");
  check(!pid.empty() && group == pid, "the plugin leads a process group of its own",
        "pid " + pid + ", process group " + group);

  // A timeout kills what the plugin started, too.
  std::string pidfile = harness::dir + "/grandchild.pid";
  p = harness::script("spawns.sh", "sleep 60 &\necho $! > " + pidfile + "\nexec sleep 60");
  run_command(p, "", 500, 1024);
  pid_t grandchild = atoi(harness::read_file(pidfile).c_str());
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = grandchild > 0 && dead(grandchild);
    if (!gone) sleep_ms(20);
  }
  if (!gone && grandchild > 0) kill(grandchild, SIGKILL);
  check(gone, "a timeout kills the plugin's children too", harness::read_file(pidfile));
}

}  // namespace

void sigpipe_storm_main() { sigpipe_storm(); }

void status_probe_main() {
  // Its own /proc status: what a plugin started like this inherits.
  std::string status = harness::read_file("/proc/self/status");
  ssize_t ignored = write(1, status.data(), status.size());
  (void)ignored;
}


void subprocess_tests(const std::string& self) {
  sigpipe_from_threads(self);
  forking_threads_beside_calls();
  what_the_plugin_inherits(self);
}
