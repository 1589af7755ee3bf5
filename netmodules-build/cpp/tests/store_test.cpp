// Tests that a container record is durable before it counts (item 9): the
// file's data is synced before the rename makes it the record, and the
// directory after it. This binary's own fsync() and rename() stand in
// for libc's to see the order (and to make fsync fail on demand).
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <vector>

#include "../container_store.hpp"
#include "harness.hpp"
#include "suites.hpp"

using namespace calico_mesos;
using harness::check;
using harness::contains;

namespace {

std::mutex events_mutex;
std::vector<std::string> events;
bool fail_fsync = false;

std::string fd_path(int fd) {
  char link[64], target[PATH_MAX];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  return n > 0 ? std::string(target, n) : std::string("?");
}

std::string real(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) != NULL ? std::string(buf) : path;
}

}  // namespace

extern "C" int fsync(int fd) {
  {
    std::lock_guard<std::mutex> lock(events_mutex);
    events.push_back("fsync " + fd_path(fd));
    if (fail_fsync) {
      errno = EIO;
      return -1;
    }
  }
  return static_cast<int>(syscall(SYS_fsync, fd));
}

extern "C" int rename(const char* from, const char* to) __THROW {
  {
    std::lock_guard<std::mutex> lock(events_mutex);
    events.push_back("rename " + real(from) + " " + std::string(to));
  }
  return renameat(AT_FDCWD, from, AT_FDCWD, to);
}

namespace {

int index_of(const std::vector<std::string>& v, const std::string& s) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == s) return static_cast<int>(i);
  }
  return -1;
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += v[i] + "\n";
  return out;
}

}  // namespace

void store_tests() {
  const std::string dir = harness::dir + "/durable";
  ContainerStore store(dir);
  std::string error;
  store.prepare(&error);
  const std::string canonical = real(dir);
  ContainerRecord r;
  r.container_id = "c-durable";
  r.ipv4.push_back("198.18.0.4");
  events.clear();
  bool saved = store.save(r, &error);
  std::vector<std::string> seen = events;
  int file = index_of(seen, "fsync " + canonical + "/c-durable.json.tmp");
  int moved = -1;
  for (size_t i = 0; i < seen.size(); ++i) {
    if (contains(seen[i], "rename ") && contains(seen[i], "c-durable.json.tmp")) moved = i;
  }
  int directory = index_of(seen, "fsync " + canonical);
  check(saved && file >= 0 && moved > file, "a record's data is synced before it is renamed",
        error + "\n" + joined(seen));
  check(saved && directory > moved, "the directory is synced after the rename", joined(seen));

  fail_fsync = true;
  r.container_id = "c-unsynced";
  saved = store.save(r, &error);
  fail_fsync = false;
  ContainerRecord back;
  check(!saved && contains(error, "fsync") && !store.load("c-unsynced", &back),
        "a record that cannot be synced is not saved", error);
}
