#include "subprocess.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace calico_mesos {

namespace {

long long now_ms() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Close-on-exec from the start: with pipe() then fcntl(), a process
// another agent thread started in between kept our pipes open.
bool make_pipe(int fds[2]) {
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  for (int i = 0; i < 2; ++i) {
    // Never 0-2 (an agent with stdin closed gets fd 0 here): dup2 onto
    // the plugin's 0-2 would then be a no-op that keeps close-on-exec.
    if (fds[i] <= 2) {
      int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
      if (moved < 0) return false;
      close(fds[i]);
      fds[i] = moved;
    }
  }
  return true;
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// After the plugin exited, what it wrote is already in the pipes; a child
// it left behind may hold them open, so we read for this long at most.
const int kDrainMs = 100;

void close_fd(int* fd) {
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

// Appends what is readable on `fd` to `into` (up to `max`, the rest is
// read and dropped). Returns false at end of file.
bool drain(int* fd, std::string* into, size_t max, bool* truncated) {
  char buf[65536];
  ssize_t n = read(*fd, buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) {
    close_fd(fd);
    return false;
  }
  size_t room = into->size() < max ? max - into->size() : 0;
  size_t keep = static_cast<size_t>(n) < room ? static_cast<size_t>(n) : room;
  into->append(buf, keep);
  if (keep < static_cast<size_t>(n)) *truncated = true;
  return true;
}

// Writing to a plugin that exited early raises SIGPIPE. The process-wide
// disposition belongs to the agent and other threads run beside us, so
// it is never touched: SIGPIPE is blocked in this thread only while we
// write, and one our writes raised is taken off the pending set before
// the mask is restored. (MSG_NOSIGNAL is for sockets; these are pipes.)
class SigpipeBlock {
public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    was_pending_ = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &saved_);
  }
  ~SigpipeBlock() {
    int saved_errno = errno;
    sigset_t pending;
    sigemptyset(&pending);
    if (!was_pending_ && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
      struct timespec zero = {0, 0};
      while (sigtimedwait(&pipe_, NULL, &zero) < 0 && errno == EINTR) {}
    }
    pthread_sigmask(SIG_SETMASK, &saved_, NULL);
    errno = saved_errno;
  }

private:
  sigset_t pipe_, saved_;
  bool was_pending_;
};

// Starts the plugin with posix_spawn rather than fork(): no copy of a
// large multithreaded agent, nothing but exec in the child. Its stdio are
// the pipes; it gets an empty signal mask and default dispositions (not
// the calling thread's mask, nor what the agent ignores), and a process
// group of its own so a timeout can kill what it started too. Only what
// glibc 2.17 (EL7) has. Returns 0 or an errno value.
int spawn(const std::string& path, int in, int out, int err, pid_t* pid) {
  posix_spawn_file_actions_t files;
  posix_spawnattr_t attr;
  int rc = posix_spawn_file_actions_init(&files);
  if (rc != 0) return rc;
  rc = posix_spawnattr_init(&attr);
  if (rc != 0) {
    posix_spawn_file_actions_destroy(&files);
    return rc;
  }
  // The pipes are close-on-exec and above 2, so only these copies remain.
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&files, in, 0);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&files, out, 1);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&files, err, 2);
  sigset_t none, defaults;
  sigemptyset(&none);
  // The classic signals, not sigfillset(): glibc 2.17's child exits 127
  // when it cannot reset one (SIGKILL, SIGSTOP, the ones NPTL keeps).
  sigemptyset(&defaults);
  for (int sig = 1; sig < 32; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaddset(&defaults, sig);
  }
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &defaults);
  if (rc == 0) rc = posix_spawnattr_setpgroup(&attr, 0);
  if (rc == 0) {
    rc = posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  }
  if (rc == 0) {
    char* argv[] = {const_cast<char*>(path.c_str()), NULL};
    // glibc before 2.24 reports a failed exec as exit status 127 instead.
    rc = posix_spawn(pid, path.c_str(), &files, &attr, argv, environ);
  }
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&files);
  return rc;
}

}  // namespace

CommandResult run_command(const std::string& path, const std::string& input,
                          int timeout_ms, size_t max_output) {
  CommandResult r;
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  if (!make_pipe(in) || !make_pipe(out) || !make_pipe(err)) {
    r.failure = std::string("cannot create pipes: ") + strerror(errno);
    close_fd(&in[0]); close_fd(&in[1]); close_fd(&out[0]);
    close_fd(&out[1]); close_fd(&err[0]); close_fd(&err[1]);
    return r;
  }

  pid_t pid = -1;
  int spawned = spawn(path, in[0], out[1], err[1], &pid);
  if (spawned != 0) {
    r.failure = strerror(spawned);
    close_fd(&in[0]); close_fd(&in[1]); close_fd(&out[0]);
    close_fd(&out[1]); close_fd(&err[0]); close_fd(&err[1]);
    return r;
  }
  r.started = true;
  close_fd(&in[0]);
  close_fd(&out[1]);
  close_fd(&err[1]);
  set_nonblocking(in[1]);
  set_nonblocking(out[0]);
  set_nonblocking(err[0]);
  SigpipeBlock no_sigpipe;

  size_t written = 0;
  if (input.empty()) close_fd(&in[1]);
  const long long deadline = now_ms() + timeout_ms;
  long long drain_until = 0;  // set once the plugin has exited
  bool reaped = false;
  int status = 0;
  for (;;) {
    // The run ends when the plugin has exited, not when its pipes close:
    // another process may hold them (see kDrainMs).
    if (!reaped) {
      pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid) {
        reaped = true;
        drain_until = now_ms() + kDrainMs;
        close_fd(&in[1]);
      } else if (w < 0 && errno != EINTR) {
        r.failure = std::string("cannot wait for the plugin: ") + strerror(errno);
        break;
      }
    }
    const long long now = now_ms();
    if (reaped && ((out[0] < 0 && err[0] < 0) || now >= drain_until)) break;
    if (!reaped && now >= deadline) {
      r.timed_out = true;
      break;
    }
    struct pollfd fds[3];
    int n = 0;
    int idx_in = -1, idx_out = -1, idx_err = -1;
    if (in[1] >= 0) { fds[n].fd = in[1]; fds[n].events = POLLOUT; fds[n].revents = 0; idx_in = n++; }
    if (out[0] >= 0) { fds[n].fd = out[0]; fds[n].events = POLLIN; fds[n].revents = 0; idx_out = n++; }
    if (err[0] >= 0) { fds[n].fd = err[0]; fds[n].events = POLLIN; fds[n].revents = 0; idx_err = n++; }
    // Wake up now and then to see whether the plugin has exited; once it
    // has, only what is already readable is read.
    long long wait = reaped ? 0 : (n > 0 ? 10 : 1);
    if (!reaped && deadline - now < wait) wait = deadline - now;
    int ready = poll(fds, n, static_cast<int>(wait));
    if (ready < 0 && errno != EINTR) {
      r.failure = std::string("poll: ") + strerror(errno);
      break;
    }
    if (ready == 0 && reaped) break;  // drained
    if (ready <= 0) continue;
    if (idx_in >= 0 && fds[idx_in].revents) {
      ssize_t w = write(in[1], input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) {
        close_fd(&in[1]);  // done, or the plugin closed its stdin
      }
    }
    if (idx_out >= 0 && fds[idx_out].revents) drain(&out[0], &r.out, max_output, &r.out_truncated);
    if (idx_err >= 0 && fds[idx_err].revents) drain(&err[0], &r.err, max_output, &r.err_truncated);
  }
  close_fd(&in[1]);
  close_fd(&out[0]);
  close_fd(&err[0]);

  if (!reaped) {
    // The group first, while the plugin (a zombie at worst) still holds
    // its id: whatever the plugin started dies with it.
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    pid_t w;
    while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {}
    reaped = w == pid;
  }
  // Unreaped (someone else took its status): neither exited nor signalled.
  if (reaped && WIFEXITED(status)) {
    r.exited = true;
    r.exit_status = WEXITSTATUS(status);
  } else if (reaped && WIFSIGNALED(status)) {
    r.signal = WTERMSIG(status);
  }
  return r;
}

}  // namespace calico_mesos
