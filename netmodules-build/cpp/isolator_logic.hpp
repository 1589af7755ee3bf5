// What the network isolator does, in plain C++11 without Mesos types: the
// Mesos adapter (mesos/network_isolator.cpp) turns the agent's calls into
// these and runs them on a worker, so all of it is unit-tested.
#ifndef CALICO_MESOS_ISOLATOR_LOGIC_HPP
#define CALICO_MESOS_ISOLATOR_LOGIC_HPP

#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "container_store.hpp"
#include "deadline.hpp"
#include "module_config.hpp"
#include "plugin_client.hpp"
#include "registry.hpp"

namespace calico_mesos {

// What one NetworkInfo asks for: exact addresses, and counts of "any".
struct Requested {
  Strings ipv4;
  Strings ipv6;
  int any_ipv4;
  int any_ipv6;
  Requested() : any_ipv4(0), any_ipv6(0) {}
};

enum Severity { kInfo, kWarning, kError };
typedef std::function<void(Severity, const std::string&)> LogSink;

typedef std::vector<std::pair<std::string, std::string> > Environment;

// The executor's environment for a container with these addresses:
// LIBPROCESS_IP is its first IPv4 address, unset without one.
Environment executor_environment(const ContainerRecord& r);

// What the status hook puts into a TaskStatus's NetworkInfo for a
// container, for the Mesos minor version the module is built for.
struct NetworkReport {
  struct Address {
    bool ipv6;
    std::string ip;
  };
  std::vector<Address> ip_addresses;  // 0.26's repeated field
  bool has_ip_address;                // the single-address fields of 0.25
  Address ip_address;                 // (deprecated, still read, in 0.26)
  Strings groups;
  NetworkReport() : has_ip_address(false) {}
};

NetworkReport network_report(const ContainerRecord& r, int mesos_minor);

class IsolatorLogic {
public:
  IsolatorLogic(const ModuleConfig& config, Registry* registry, const LogSink& log);

  // Saved records of containers Mesos still runs (`alive`) join the
  // registry; the others ended while the agent was down and are returned
  // for the caller to tear down.
  std::vector<ContainerRecord> recover(const std::set<std::string>& alive);

  // What recover() leaves to a worker: the cleanup of each container that
  // ended while the agent was down, one after the other, then one `gc`
  // naming `recovered` plus every container the module still knows (its
  // registry, which holds those prepared since, and its state_dir, which
  // holds those whose cleanup failed), so the plugin frees what nobody
  // knows (CNI 1.1's GC verb). Each run has its own command_timeout;
  // failures are logged, none is fatal.
  void finish_recovery(const std::vector<ContainerRecord>& ended,
                       const std::set<std::string>& recovered);

  // Reserves the exact addresses and allocates the rest for `base`
  // (container, executor, netgroups, labels); all or nothing. On success
  // `out` is the remembered record.
  std::string prepare(const ContainerRecord& base, const Requested& wanted,
                      const Deadline& deadline, ContainerRecord* out);

  std::string isolate(const ContainerRecord& r, long long pid, const Deadline& deadline);

  // Whether the module networked the container (its registry, else its
  // state_dir record); fills `out`. Cleanup acts on these only.
  bool knows(const std::string& container_id, ContainerRecord* out);

  // The plugin's cleanup and the address release; forgets the container.
  std::string cleanup(const ContainerRecord& r, const Deadline& deadline);

private:
  void remember(const ContainerRecord& r);
  std::string assign_addresses(const Requested& wanted, const Deadline& deadline,
                               ContainerRecord* r);
  void release(const ContainerRecord& r, const Deadline& deadline);
  void log_stderr(const std::string& what, const PluginAnswer& a);

  ModuleConfig config_;
  ContainerStore store_;
  Registry* registry_;
  LogSink log_;
};

}  // namespace calico_mesos

#endif
