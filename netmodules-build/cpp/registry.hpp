// What the isolator and the hook share inside the agent (one .so, one
// process): the records of the containers the module networked, and the
// agent's hostname once a task was seen. Thread-safe; plain C++11.
#ifndef CALICO_MESOS_REGISTRY_HPP
#define CALICO_MESOS_REGISTRY_HPP

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "container_store.hpp"

namespace calico_mesos {

class Registry {
public:
  void put(const ContainerRecord& r);
  bool get(const std::string& container_id, ContainerRecord* out);
  bool by_executor(const std::string& framework_id, const std::string& executor_id,
                   ContainerRecord* out);
  void erase(const std::string& container_id);
  // Every container id it holds.
  std::vector<std::string> ids();
  void set_hostname(const std::string& h);
  // The agent's hostname, or this machine's until the hook has seen one.
  std::string hostname();

private:
  std::mutex mutex_;
  std::map<std::string, ContainerRecord> records_;
  std::string hostname_;
};

}  // namespace calico_mesos

#endif
