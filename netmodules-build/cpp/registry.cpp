#include "registry.hpp"

#include <unistd.h>

namespace calico_mesos {

void Registry::put(const ContainerRecord& r) {
  std::lock_guard<std::mutex> lock(mutex_);
  records_[r.container_id] = r;
}

bool Registry::get(const std::string& container_id, ContainerRecord* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::map<std::string, ContainerRecord>::const_iterator it = records_.find(container_id);
  if (it == records_.end()) return false;
  *out = it->second;
  return true;
}

bool Registry::by_executor(const std::string& framework_id, const std::string& executor_id,
                           ContainerRecord* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (std::map<std::string, ContainerRecord>::const_iterator it = records_.begin();
       it != records_.end(); ++it) {
    if (it->second.executor_id == executor_id && it->second.framework_id == framework_id) {
      *out = it->second;
      return true;
    }
  }
  return false;
}

void Registry::erase(const std::string& container_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  records_.erase(container_id);
}

std::vector<std::string> Registry::ids() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  for (std::map<std::string, ContainerRecord>::const_iterator it = records_.begin();
       it != records_.end(); ++it) {
    out.push_back(it->first);
  }
  return out;
}

void Registry::set_hostname(const std::string& h) {
  std::lock_guard<std::mutex> lock(mutex_);
  hostname_ = h;
}

std::string Registry::hostname() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (hostname_.empty()) {
    char buf[256] = {0};
    if (gethostname(buf, sizeof(buf) - 1) == 0) return buf;
  }
  return hostname_;
}

}  // namespace calico_mesos
