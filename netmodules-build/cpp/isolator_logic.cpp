#include "isolator_logic.hpp"

#include <arpa/inet.h>

namespace calico_mesos {

Environment executor_environment(const ContainerRecord& r) {
  // libprocess (0.25-0.28) parses LIBPROCESS_IP as IPv4 only and aborts
  // the executor on anything else: IPv6-only executors bind as libprocess
  // does by default instead.
  Environment env;
  for (size_t i = 0; i < r.ipv4.size(); ++i) {
    struct in_addr parsed;
    if (inet_pton(AF_INET, r.ipv4[i].c_str(), &parsed) == 1) {
      env.push_back(std::make_pair(std::string("LIBPROCESS_IP"), r.ipv4[i]));
      break;
    }
  }
  return env;
}

NetworkReport network_report(const ContainerRecord& r, int mesos_minor) {
  NetworkReport report;
  std::vector<NetworkReport::Address> all;
  for (size_t i = 0; i < r.ipv4.size(); ++i) {
    NetworkReport::Address a = {false, r.ipv4[i]};
    all.push_back(a);
  }
  for (size_t i = 0; i < r.ipv6.size(); ++i) {
    NetworkReport::Address a = {true, r.ipv6[i]};
    all.push_back(a);
  }
  if (mesos_minor >= 26) report.ip_addresses = all;
  // 0.25's only fields; 0.26 deprecates them but its own agent still fills
  // them, and Mesos-DNS and Marathon of the time read nothing else.
  if (!all.empty()) {
    report.has_ip_address = true;
    report.ip_address = all[0];
  }
  report.groups = r.netgroups;
  return report;
}

IsolatorLogic::IsolatorLogic(const ModuleConfig& config, Registry* registry, const LogSink& log)
    : config_(config), store_(config.state_dir), registry_(registry), log_(log) {}

void IsolatorLogic::log_stderr(const std::string& what, const PluginAnswer& a) {
  if (!a.stderr_text.empty()) log_(kInfo, "calico-mesos " + what + " log:\n" + a.stderr_text);
}

std::vector<ContainerRecord> IsolatorLogic::recover(const std::set<std::string>& alive) {
  std::vector<std::string> problems;
  std::vector<ContainerRecord> saved = store_.load_all(&problems);
  for (size_t i = 0; i < problems.size(); ++i) {
    log_(kWarning, "calico-mesos: unreadable container record " + problems[i]);
  }
  std::vector<ContainerRecord> ended;
  for (size_t i = 0; i < saved.size(); ++i) {
    if (alive.count(saved[i].container_id) > 0) {
      registry_->put(saved[i]);  // cleanup will find it
    } else {
      ended.push_back(saved[i]);
    }
  }
  return ended;
}

void IsolatorLogic::finish_recovery(const std::vector<ContainerRecord>& ended,
                                    const std::set<std::string>& recovered) {
  const int timeout_ms = config_.client.timeout_ms;
  for (size_t i = 0; i < ended.size(); ++i) {
    log_(kInfo, "calico-mesos: cleaning up container " + ended[i].container_id +
                    " that ended while the agent was down");
    std::string error = cleanup(ended[i], Deadline(timeout_ms));
    if (!error.empty()) {
      log_(kWarning, "calico-mesos: cleanup of " + ended[i].container_id + " failed: " + error);
    }
  }
  // Known now, not at recover(): a container prepared meanwhile is named.
  std::set<std::string> known = recovered;
  std::vector<std::string> ids = registry_->ids();
  known.insert(ids.begin(), ids.end());
  ids = store_.ids();
  known.insert(ids.begin(), ids.end());
  PluginAnswer a = call_plugin(config_.isolator_command, gc_request(registry_->hostname(), known),
                               PLAIN, config_.client, Deadline(timeout_ms));
  log_stderr("gc", a);
  if (a.ok) {
    log_(kInfo, "calico-mesos: gc after recovery done");
  } else {
    log_(kWarning, "calico-mesos: gc after recovery failed (the agent carries on; `calico-mesos "
                   "gc` repairs later): " + a.error);
  }
}

std::string IsolatorLogic::prepare(const ContainerRecord& base, const Requested& wanted,
                                   const Deadline& deadline, ContainerRecord* out) {
  ContainerRecord r = base;
  r.ipv4.clear();  // what IPAM assigns, nothing else
  r.ipv6.clear();
  // Known before the first IPAM call: if prepare fails or the agent dies
  // half-way, cleanup (or recover) still frees whatever the uid holds.
  remember(r);
  std::string error = assign_addresses(wanted, deadline, &r);
  if (!error.empty()) return error;
  remember(r);
  if (r.ipv4.empty()) {
    log_(kWarning, "calico-mesos: container " + r.container_id + " has no IPv4 address, so the "
                   "module sets no LIBPROCESS_IP for its executor; an executor built on "
                   "libprocess (IPv4 only) cannot reach the agent from it");
  }
  *out = r;
  return std::string();
}

void IsolatorLogic::remember(const ContainerRecord& r) {
  std::string error;
  if (!store_.save(r, &error)) {
    log_(kWarning, "calico-mesos: " + error + "; if the agent restarts before this container "
                   "ends, the module cannot clean it up");
  }
  registry_->put(r);
}

std::string IsolatorLogic::assign_addresses(const Requested& wanted, const Deadline& deadline,
                                            ContainerRecord* r) {
  const std::string hostname = registry_->hostname();
  if (!wanted.ipv4.empty() || !wanted.ipv6.empty()) {
    std::string request = reserve_request(hostname, r->container_id, wanted.ipv4, wanted.ipv6,
                                          r->netgroups, r->labels);
    PluginAnswer a =
        call_plugin(config_.ipam_command, request, ADDRESSES, config_.client, deadline);
    log_stderr("reserve", a);
    if (!a.ok) return "calico-mesos reserve failed: " + a.error;
    r->ipv4 = a.ipv4;
    r->ipv6 = a.ipv6;
  }
  if (wanted.any_ipv4 > 0 || wanted.any_ipv6 > 0) {
    std::string request = allocate_request(hostname, r->container_id, wanted.any_ipv4,
                                           wanted.any_ipv6, r->netgroups, r->labels);
    PluginAnswer a =
        call_plugin(config_.ipam_command, request, ADDRESSES, config_.client, deadline);
    log_stderr("allocate", a);
    if (!a.ok) {
      // The 2016 module leaked the reserved addresses here. Within what is
      // left of the deadline; if that fails, the cleanup Mesos runs after a
      // failed prepare releases the uid again.
      release(*r, deadline);
      return "calico-mesos allocate failed: " + a.error;
    }
    r->ipv4.insert(r->ipv4.end(), a.ipv4.begin(), a.ipv4.end());
    r->ipv6.insert(r->ipv6.end(), a.ipv6.begin(), a.ipv6.end());
  }
  if (r->ipv4.empty() && r->ipv6.empty()) return "calico-mesos assigned no address";
  return std::string();
}

void IsolatorLogic::release(const ContainerRecord& r, const Deadline& deadline) {
  PluginAnswer a = call_plugin(config_.ipam_command, release_request(r.container_id), PLAIN,
                               config_.client, deadline);
  log_stderr("release", a);
  if (!a.ok) log_(kWarning, "calico-mesos release of " + r.container_id + " failed: " + a.error);
}

std::string IsolatorLogic::isolate(const ContainerRecord& r, long long pid,
                                   const Deadline& deadline) {
  std::string request = isolate_request(registry_->hostname(), r.container_id, pid, r.ipv4,
                                        r.ipv6, r.netgroups, r.labels);
  PluginAnswer a =
      call_plugin(config_.isolator_command, request, PLAIN, config_.client, deadline);
  log_stderr("isolate", a);
  return a.ok ? std::string() : "calico-mesos isolate failed: " + a.error;
}

bool IsolatorLogic::knows(const std::string& container_id, ContainerRecord* out) {
  // Containers with neither are on the host network (or ended while the
  // agent was down without a record, which recover() cannot see either).
  return registry_->get(container_id, out) || store_.load(container_id, out);
}

std::string IsolatorLogic::cleanup(const ContainerRecord& r, const Deadline& deadline) {
  // The isolator's cleanup (veth, endpoint, addresses), then a release by
  // uid: ipam_command may be another program than isolator_command.
  PluginAnswer a = call_plugin(config_.isolator_command,
                               cleanup_request(registry_->hostname(), r.container_id), PLAIN,
                               config_.client, deadline);
  log_stderr("cleanup", a);
  if (!a.ok) return "calico-mesos cleanup failed: " + a.error;
  release(r, deadline);
  store_.remove(r.container_id);
  registry_->erase(r.container_id);
  return std::string();
}

}  // namespace calico_mesos
