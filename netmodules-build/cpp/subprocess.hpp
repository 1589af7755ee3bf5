// Runs the plugin: one request on stdin, both output pipes drained while
// it runs (a plugin that writes more than a pipe buffer never blocks), and
// killed when it overruns its timeout. Plain POSIX, C++11.
#ifndef CALICO_MESOS_SUBPROCESS_HPP
#define CALICO_MESOS_SUBPROCESS_HPP

#include <string>

namespace calico_mesos {

struct CommandResult {
  bool started;          // false: it could not be started (see `failure`)
  bool timed_out;        // killed after the timeout
  bool exited;           // exited normally (else killed by `signal`)
  int exit_status;
  int signal;
  std::string out;       // stdout, at most `max_output` bytes kept
  std::string err;       // stderr, likewise
  bool out_truncated;
  bool err_truncated;
  std::string failure;   // why it did not start, or why the run failed
  CommandResult()
      : started(false), timed_out(false), exited(false), exit_status(-1), signal(0),
        out_truncated(false), err_truncated(false) {}
};

// Starts `path` with no arguments, writes `input` to its stdin and closes
// it, collects stdout and stderr until it exits (and briefly after: what
// it wrote is read, a child holding its pipes is not waited for). After
// `timeout_ms` the process is killed (SIGKILL) and reaped.
CommandResult run_command(const std::string& path, const std::string& input,
                          int timeout_ms, size_t max_output);

}  // namespace calico_mesos

#endif
