// What the module remembers about each container it networked, kept on
// disk so that cleanup still works for containers started before an agent
// restart. Plain C++11, no Mesos headers.
#ifndef CALICO_MESOS_CONTAINER_STORE_HPP
#define CALICO_MESOS_CONTAINER_STORE_HPP

#include <string>
#include <vector>

#include "plugin_client.hpp"

namespace calico_mesos {

struct ContainerRecord {
  std::string container_id;
  std::string executor_id;
  std::string framework_id;
  std::vector<std::string> ipv4;
  std::vector<std::string> ipv6;
  std::vector<std::string> netgroups;
  Labels labels;

  std::string to_json() const;
  static bool from_json(const std::string& text, ContainerRecord* out, std::string* error);
};

// One file per container under a directory.
class ContainerStore {
public:
  explicit ContainerStore(const std::string& dir) : dir_(dir) {}
  // Creates the directory (and parents). Returns false with `error`.
  bool prepare(std::string* error) const;
  bool save(const ContainerRecord& record, std::string* error) const;
  bool remove(const std::string& container_id) const;
  // The container's record; false when there is none (or it is unreadable).
  bool load(const std::string& container_id, ContainerRecord* out) const;
  // Every readable record; unreadable files are reported in `problems`.
  std::vector<ContainerRecord> load_all(std::vector<std::string>* problems) const;
  // The container id of every record file, readable or not.
  std::vector<std::string> ids() const;

private:
  std::string path_of(const std::string& container_id) const;
  std::string dir_;
};

}  // namespace calico_mesos

#endif
