// The Mesos network isolator and hook: a thin adapter between the agent and
// the plugin client core. Every plugin call runs on its own thread and
// completes a libprocess promise, so the isolator's actor never blocks.
//
// Exported under the names existing modules.json files use:
//   com_mesosphere_mesos_NetworkIsolator, com_mesosphere_mesos_NetworkHook.
// Parameters: ipam_command, isolator_command (required), command_timeout
// (seconds, default 30), state_dir (default /var/lib/calico-mesos/containers).

#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <functional>
#include <list>
#include <set>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <glog/logging.h>

#include <mesos/hook.hpp>
#include <mesos/mesos.hpp>
#include <mesos/module.hpp>
#include <mesos/module/hook.hpp>
#include <mesos/module/isolator.hpp>
#include <mesos/slave/isolator.hpp>

#include <process/future.hpp>

#include <stout/hashset.hpp>
#include <stout/none.hpp>
#include <stout/nothing.hpp>
#include <stout/option.hpp>
#include <stout/result.hpp>
#include <stout/try.hpp>

#include "../container_store.hpp"
#include "../plugin_client.hpp"
#include "compat.hpp"

using mesos::slave::ContainerLimitation;
using mesos::slave::ContainerPrepareInfo;
using mesos::slave::ContainerState;

namespace calico_mesos {

struct ModuleConfig {
  std::string ipam_command;
  std::string isolator_command;
  std::string state_dir;
  ClientOptions client;
};

// Shared by the isolator and the hook (one .so, one process): the
// containers' addresses, and the agent's hostname once a task was seen.
class Registry {
public:
  void put(const ContainerRecord& r) {
    std::lock_guard<std::mutex> lock(mutex_);
    records_[r.container_id] = r;
  }
  bool get(const std::string& container_id, ContainerRecord* out) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::map<std::string, ContainerRecord>::const_iterator it = records_.find(container_id);
    if (it == records_.end()) return false;
    *out = it->second;
    return true;
  }
  bool by_executor(const std::string& framework_id, const std::string& executor_id,
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
  void erase(const std::string& container_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    records_.erase(container_id);
  }
  void set_hostname(const std::string& h) {
    std::lock_guard<std::mutex> lock(mutex_);
    hostname_ = h;
  }
  std::string hostname() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (hostname_.empty()) {
      char buf[256] = {0};
      if (gethostname(buf, sizeof(buf) - 1) == 0) return buf;
    }
    return hostname_;
  }

private:
  std::mutex mutex_;
  std::map<std::string, ContainerRecord> records_;
  std::string hostname_;
};

static Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

// Runs `work` on its own thread; the future is completed from there. The
// work returns an error text ("" for success) and fills `value`.
template <typename T>
static process::Future<T> off_actor(std::function<std::string(T*)> work) {
  std::shared_ptr<process::Promise<T>> promise(new process::Promise<T>());
  process::Future<T> future = promise->future();
  std::thread([promise, work]() {
    T value;
    std::string error = work(&value);
    if (error.empty()) {
      promise->set(value);
    } else {
      promise->fail(error);
    }
  }).detach();
  return future;
}

static void log_plugin_stderr(const std::string& what, const PluginAnswer& a) {
  if (!a.stderr_text.empty()) {
    LOG(INFO) << "calico-mesos " << what << " log:\n" << a.stderr_text;
  }
}

class CalicoNetworkIsolator : public mesos::slave::Isolator {
public:
  explicit CalicoNetworkIsolator(const ModuleConfig& config)
      : config_(config), store_(config.state_dir) {}

  virtual process::Future<Nothing> recover(const std::list<ContainerState>& states,
                                           const hashset<mesos::ContainerID>& orphans) {
    std::vector<std::string> problems;
    std::vector<ContainerRecord> saved = store_.load_all(&problems);
    for (size_t i = 0; i < problems.size(); ++i) {
      LOG(WARNING) << "calico-mesos: unreadable container record " << problems[i];
    }
    std::set<std::string> known;
    for (std::list<ContainerState>::const_iterator s = states.begin(); s != states.end(); ++s) {
      known.insert(s->container_id().value());
    }
    foreach (const mesos::ContainerID& id, orphans) {
      known.insert(id.value());
    }
    for (size_t i = 0; i < saved.size(); ++i) {
      if (known.count(saved[i].container_id) > 0) {
        registry().put(saved[i]);  // cleanup will find it
      } else {
        // Gone while the agent was down: free its addresses now.
        LOG(INFO) << "calico-mesos: cleaning up container " << saved[i].container_id
                  << " that ended while the agent was down";
        ContainerRecord record = saved[i];
        ModuleConfig config = config_;
        ContainerStore store = store_;
        std::thread([record, config, store]() {
          std::string error = teardown(config, record);
          if (error.empty()) {
            store.remove(record.container_id);
          } else {
            LOG(WARNING) << "calico-mesos: cleanup of " << record.container_id << " failed: " << error;
          }
        }).detach();
      }
    }
    return Nothing();
  }

  virtual process::Future<Option<ContainerPrepareInfo>> prepare(
      const mesos::ContainerID& containerId, const mesos::ExecutorInfo& executorInfo,
      const std::string& directory, const Option<std::string>& user) {
    (void)directory;
    (void)user;
    if (!executorInfo.has_container() || executorInfo.container().network_infos_size() == 0) {
      return None();  // not ours: the container keeps the host's network
    }
    if (executorInfo.container().network_infos_size() > 1) {
      return process::Failure("calico-mesos supports one NetworkInfo per container");
    }
    const mesos::NetworkInfo& info = executorInfo.container().network_infos(0);
    compat::Requested wanted = compat::requested(info);

    ContainerRecord record;
    record.container_id = containerId.value();
    record.executor_id = executorInfo.executor_id().value();
    record.framework_id = executorInfo.framework_id().value();
    for (int i = 0; i < info.groups_size(); ++i) record.netgroups.push_back(info.groups(i));
    if (info.has_labels()) {
      for (int i = 0; i < info.labels().labels_size(); ++i) {
        record.labels[info.labels().labels(i).key()] = info.labels().labels(i).value();
      }
    }
    ModuleConfig config = config_;
    ContainerStore store = store_;
    std::function<std::string(Option<ContainerPrepareInfo>*)> work =
        [config, store, record, wanted](Option<ContainerPrepareInfo>* out) {
          ContainerRecord r = record;
          std::string error = assign_addresses(config, wanted, &r);
          if (!error.empty()) return error;
          if (!store.save(r, &error)) {
            LOG(WARNING) << "calico-mesos: " << error << "; cleanup after an agent restart "
                         << "will rely on the plugin alone";
          }
          registry().put(r);
          ContainerPrepareInfo prepare;
          prepare.set_namespaces(CLONE_NEWNET);
          mesos::Environment::Variable* v = prepare.mutable_environment()->add_variables();
          v->set_name("LIBPROCESS_IP");
          v->set_value(!r.ipv4.empty() ? r.ipv4[0] : r.ipv6[0]);
          *out = prepare;
          return std::string();
        };
    return off_actor<Option<ContainerPrepareInfo>>(work);
  }

  virtual process::Future<Nothing> isolate(const mesos::ContainerID& containerId, pid_t pid) {
    ContainerRecord r;
    if (!registry().get(containerId.value(), &r)) return Nothing();
    ModuleConfig config = config_;
    std::function<std::string(Nothing*)> work = [config, r, pid](Nothing*) {
      std::string request = isolate_request(registry().hostname(), r.container_id, pid, r.ipv4,
                                            r.ipv6, r.netgroups, r.labels);
      PluginAnswer a = call_plugin(config.isolator_command, request, PLAIN, config.client);
      log_plugin_stderr("isolate", a);
      return a.ok ? std::string() : "calico-mesos isolate failed: " + a.error;
    };
    return off_actor<Nothing>(work);
  }

  virtual process::Future<ContainerLimitation> watch(const mesos::ContainerID&) {
    return process::Future<ContainerLimitation>();  // no limits to report
  }

  virtual process::Future<Nothing> update(const mesos::ContainerID&, const mesos::Resources&) {
    return Nothing();
  }

  virtual process::Future<mesos::ResourceStatistics> usage(const mesos::ContainerID&) {
    return mesos::ResourceStatistics();
  }

  virtual process::Future<Nothing> cleanup(const mesos::ContainerID& containerId) {
    // Also for containers this process never saw (started before a
    // restart, or recorded nowhere): the plugin cleans up from the id.
    ContainerRecord r;
    if (!registry().get(containerId.value(), &r)) r.container_id = containerId.value();
    ModuleConfig config = config_;
    ContainerStore store = store_;
    std::function<std::string(Nothing*)> work = [config, store, r](Nothing*) {
      std::string error = teardown(config, r);
      if (!error.empty()) return error;
      store.remove(r.container_id);
      registry().erase(r.container_id);
      return std::string();
    };
    return off_actor<Nothing>(work);
  }

  // reserve the exact addresses, allocate the rest; all or nothing.
  static std::string assign_addresses(const ModuleConfig& config, const compat::Requested& wanted,
                                      ContainerRecord* r) {
    const std::string hostname = registry().hostname();
    if (!wanted.ipv4.empty() || !wanted.ipv6.empty()) {
      std::string request = reserve_request(hostname, r->container_id, wanted.ipv4, wanted.ipv6,
                                            r->netgroups, r->labels);
      PluginAnswer a = call_plugin(config.ipam_command, request, ADDRESSES, config.client);
      log_plugin_stderr("reserve", a);
      if (!a.ok) return "calico-mesos reserve failed: " + a.error;
      r->ipv4 = a.ipv4;
      r->ipv6 = a.ipv6;
    }
    if (wanted.any_ipv4 > 0 || wanted.any_ipv6 > 0) {
      std::string request = allocate_request(hostname, r->container_id, wanted.any_ipv4,
                                             wanted.any_ipv6, r->netgroups, r->labels);
      PluginAnswer a = call_plugin(config.ipam_command, request, ADDRESSES, config.client);
      log_plugin_stderr("allocate", a);
      if (!a.ok) {
        // The 2016 module leaked the reserved addresses here.
        release(config, *r);
        return "calico-mesos allocate failed: " + a.error;
      }
      r->ipv4.insert(r->ipv4.end(), a.ipv4.begin(), a.ipv4.end());
      r->ipv6.insert(r->ipv6.end(), a.ipv6.begin(), a.ipv6.end());
    }
    if (r->ipv4.empty() && r->ipv6.empty()) return "calico-mesos assigned no address";
    return std::string();
  }

  static void release(const ModuleConfig& config, const ContainerRecord& r) {
    Strings ips = r.ipv4;
    ips.insert(ips.end(), r.ipv6.begin(), r.ipv6.end());
    PluginAnswer a =
        call_plugin(config.ipam_command, release_request(ips, r.container_id), PLAIN, config.client);
    log_plugin_stderr("release", a);
    if (!a.ok) LOG(WARNING) << "calico-mesos release failed: " << a.error;
  }

  // The plugin's cleanup (veth, endpoint, addresses), then release.
  static std::string teardown(const ModuleConfig& config, const ContainerRecord& r) {
    PluginAnswer a = call_plugin(config.isolator_command,
                                 cleanup_request(registry().hostname(), r.container_id), PLAIN,
                                 config.client);
    log_plugin_stderr("cleanup", a);
    if (!a.ok) return "calico-mesos cleanup failed: " + a.error;
    release(config, r);
    return std::string();
  }

private:
  ModuleConfig config_;
  ContainerStore store_;
};

class CalicoNetworkHook : public mesos::Hook {
public:
  // The 2016 module learnt the agent's hostname here; so do we.
  virtual Result<mesos::Labels> slaveRunTaskLabelDecorator(const mesos::TaskInfo&,
                                                           const mesos::ExecutorInfo&,
                                                           const mesos::FrameworkInfo&,
                                                           const mesos::SlaveInfo& slaveInfo) {
    registry().set_hostname(slaveInfo.hostname());
    return None();
  }

  // Reports the container's addresses, so frameworks, Mesos-DNS and health
  // checks see the task's own IP.
  virtual Result<mesos::TaskStatus> slaveTaskStatusDecorator(const mesos::FrameworkID& frameworkId,
                                                             const mesos::TaskStatus& status) {
    std::string executor =
        status.has_executor_id() ? status.executor_id().value() : status.task_id().value();
    ContainerRecord r;
    if (!registry().by_executor(frameworkId.value(), executor, &r)) return None();
    mesos::TaskStatus decorated = status;
    mesos::NetworkInfo* info = decorated.mutable_container_status()->add_network_infos();
    compat::report(info, r.ipv4, r.ipv6);
    for (size_t i = 0; i < r.netgroups.size(); ++i) info->add_groups(r.netgroups[i]);
    return decorated;
  }
};

static bool parse_parameters(const mesos::Parameters& parameters, ModuleConfig* config,
                             std::string* error) {
  config->state_dir = "/var/lib/calico-mesos/containers";
  int timeout_s = 30;
  for (int i = 0; i < parameters.parameter_size(); ++i) {
    const std::string& key = parameters.parameter(i).key();
    const std::string& value = parameters.parameter(i).value();
    if (key == "ipam_command") {
      config->ipam_command = value;
    } else if (key == "isolator_command") {
      config->isolator_command = value;
    } else if (key == "state_dir") {
      config->state_dir = value;
    } else if (key == "command_timeout") {
      timeout_s = atoi(value.c_str());
      if (timeout_s <= 0 || timeout_s > 3600) {
        *error = "command_timeout must be a number of seconds from 1 to 3600, got '" + value + "'";
        return false;
      }
    } else {
      LOG(WARNING) << "calico-mesos: ignoring unknown module parameter '" << key << "'";
    }
  }
  const char* required[] = {"ipam_command", "isolator_command"};
  const std::string* values[] = {&config->ipam_command, &config->isolator_command};
  for (int i = 0; i < 2; ++i) {
    if (values[i]->empty()) {
      *error = std::string("the module parameter ") + required[i] + " is missing";
      return false;
    }
    // The 2016 module silently did nothing here; refuse loudly instead.
    if (access(values[i]->c_str(), X_OK) != 0) {
      *error = std::string("the module parameter ") + required[i] + " names '" + *values[i] +
               "', which is not an executable file";
      return false;
    }
  }
  config->client.timeout_ms = timeout_s * 1000;
  ContainerStore store(config->state_dir);
  return store.prepare(error);
}

}  // namespace calico_mesos

static mesos::slave::Isolator* create_isolator(const mesos::Parameters& parameters) {
  calico_mesos::ModuleConfig config;
  std::string error;
  if (!calico_mesos::parse_parameters(parameters, &config, &error)) {
    LOG(ERROR) << "calico-mesos network isolator not loaded: " << error;
    return NULL;
  }
  LOG(INFO) << "calico-mesos network isolator loaded for Mesos " << MESOS_VERSION
            << " (plugin " << config.isolator_command << ", timeout "
            << config.client.timeout_ms / 1000 << " s, state in " << config.state_dir << ")";
  return new calico_mesos::CalicoNetworkIsolator(config);
}

static mesos::Hook* create_hook(const mesos::Parameters&) {
  return new calico_mesos::CalicoNetworkHook();
}

mesos::modules::Module<mesos::slave::Isolator> com_mesosphere_mesos_NetworkIsolator(
    MESOS_MODULE_API_VERSION, MESOS_VERSION, "Project Calico", "maintainers@projectcalico.org",
    "Calico network isolator: an IP address per container (calico-mesos)", NULL, create_isolator);

mesos::modules::Module<mesos::Hook> com_mesosphere_mesos_NetworkHook(
    MESOS_MODULE_API_VERSION, MESOS_VERSION, "Project Calico", "maintainers@projectcalico.org",
    "Calico network hook: reports container addresses (calico-mesos)", NULL, create_hook);
