// The Mesos network isolator and hook: a thin adapter between the agent and
// the Mesos-free isolator logic. Every plugin call runs on a worker thread
// and completes a libprocess promise, so the isolator's actor never blocks.
//
// Exported under the names existing modules.json files use:
//   com_mesosphere_mesos_NetworkIsolator, com_mesosphere_mesos_NetworkHook.
// Parameters: ipam_command, isolator_command (required), command_timeout
// (seconds, default 30), state_dir (default /var/lib/calico-mesos/containers).

#include <sched.h>

#include <functional>
#include <list>
#include <memory>
#include <set>
#include <string>
#include <utility>
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
#include "../isolator_logic.hpp"
#include "../module_config.hpp"
#include "../registry.hpp"
#include "../workers.hpp"
#include "compat.hpp"

using mesos::slave::ContainerLimitation;
using mesos::slave::ContainerPrepareInfo;
using mesos::slave::ContainerState;

namespace calico_mesos {

// The Mesos version this module was built for, where `calico-mesos doctor`
// finds it (the plugin's doctor.rs VERSION_MARKER).
extern const char kBuiltFor[];
const char kBuiltFor[] __attribute__((used)) = "calico-mesos-module-built-for-mesos=" MESOS_VERSION;

static Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

// At most 8 plugin calls at once, the rest queue; never destroyed (the
// agent exits without unloading modules).
static Workers& workers() {
  static Workers* w = new Workers(8);
  return *w;
}

static void log_line(Severity severity, const std::string& line) {
  switch (severity) {
    case kInfo: LOG(INFO) << line; break;
    case kWarning: LOG(WARNING) << line; break;
    case kError: LOG(ERROR) << line; break;
  }
}

// Runs `work` on a worker; the future is completed from there. The work
// returns an error text ("" for success) and fills `value`.
template <typename T>
static process::Future<T> off_actor(std::function<std::string(T*)> work) {
  std::shared_ptr<process::Promise<T>> promise(new process::Promise<T>());
  std::shared_ptr<T> value(new T());
  workers().submit([work, value]() { return work(value.get()); },
                   [promise, value](const std::string& error) {
                     if (error.empty()) {
                       promise->set(*value);
                     } else {
                       promise->fail(error);
                     }
                   });
  return promise->future();
}

class CalicoNetworkIsolator : public mesos::slave::Isolator {
public:
  explicit CalicoNetworkIsolator(const ModuleConfig& config)
      : logic_(new IsolatorLogic(config, &registry(), log_line)),
        timeout_ms_(config.client.timeout_ms) {}

  virtual process::Future<Nothing> recover(const std::list<ContainerState>& states,
                                           const hashset<mesos::ContainerID>& orphans) {
    std::set<std::string> alive;
    for (std::list<ContainerState>::const_iterator s = states.begin(); s != states.end(); ++s) {
      alive.insert(s->container_id().value());
    }
    foreach (const mesos::ContainerID& id, orphans) {
      alive.insert(id.value());
    }
    std::vector<ContainerRecord> ended = logic_->recover(alive);
    // Not waited for by the agent: the cleanups of what ended while it was
    // down, then one gc with every container still known.
    std::shared_ptr<IsolatorLogic> logic = logic_;
    workers().submit(
        [logic, ended, alive]() {
          logic->finish_recovery(ended, alive);
          return std::string();
        },
        [](const std::string& error) {
          if (!error.empty()) LOG(WARNING) << "calico-mesos: recovery work failed: " << error;
        });
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
    Requested wanted = compat::requested(info);

    ContainerRecord base;
    base.container_id = containerId.value();
    base.executor_id = executorInfo.executor_id().value();
    base.framework_id = executorInfo.framework_id().value();
    for (int i = 0; i < info.groups_size(); ++i) base.netgroups.push_back(info.groups(i));
    if (info.has_labels()) {
      for (int i = 0; i < info.labels().labels_size(); ++i) {
        base.labels[info.labels().labels(i).key()] = info.labels().labels(i).value();
      }
    }
    std::shared_ptr<IsolatorLogic> logic = logic_;
    const Deadline deadline = call_deadline();
    std::function<std::string(Option<ContainerPrepareInfo>*)> work =
        [logic, base, wanted, deadline](Option<ContainerPrepareInfo>* out) {
          ContainerRecord r;
          std::string error = logic->prepare(base, wanted, deadline, &r);
          if (!error.empty()) return error;
          ContainerPrepareInfo prepare;
          prepare.set_namespaces(CLONE_NEWNET);
          Environment env = executor_environment(r);
          for (size_t i = 0; i < env.size(); ++i) {
            mesos::Environment::Variable* v = prepare.mutable_environment()->add_variables();
            v->set_name(env[i].first);
            v->set_value(env[i].second);
          }
          *out = prepare;
          return std::string();
        };
    return off_actor<Option<ContainerPrepareInfo>>(work);
  }

  virtual process::Future<Nothing> isolate(const mesos::ContainerID& containerId, pid_t pid) {
    ContainerRecord r;
    if (!registry().get(containerId.value(), &r)) return Nothing();
    std::shared_ptr<IsolatorLogic> logic = logic_;
    const Deadline deadline = call_deadline();
    std::function<std::string(Nothing*)> work = [logic, r, pid, deadline](Nothing*) {
      return logic->isolate(r, pid, deadline);
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
    // Most containers are not ours: no worker, no plugin (the registry is
    // memory, the state_dir record one small local file).
    ContainerRecord r;
    if (!logic_->knows(containerId.value(), &r)) return Nothing();
    std::shared_ptr<IsolatorLogic> logic = logic_;
    const Deadline deadline = call_deadline();
    std::function<std::string(Nothing*)> work = [logic, r, deadline](Nothing*) {
      return logic->cleanup(r, deadline);
    };
    return off_actor<Nothing>(work);
  }

private:
  // Starts when the agent calls, so time spent waiting for a worker counts.
  Deadline call_deadline() const { return Deadline(timeout_ms_); }

  std::shared_ptr<IsolatorLogic> logic_;
  int timeout_ms_;
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
    if (r.ipv4.empty() && r.ipv6.empty()) return None();  // still preparing, or failed
    mesos::TaskStatus decorated = status;
    mesos::NetworkInfo* info = decorated.mutable_container_status()->add_network_infos();
    compat::report(info, network_report(r, NETMODULES_MESOS_MINOR));
    return decorated;
  }
};

}  // namespace calico_mesos

static mesos::slave::Isolator* create_isolator(const mesos::Parameters& parameters) {
  calico_mesos::Parameters params;
  for (int i = 0; i < parameters.parameter_size(); ++i) {
    params.push_back(std::make_pair(parameters.parameter(i).key(), parameters.parameter(i).value()));
  }
  calico_mesos::ModuleConfig config;
  calico_mesos::Strings warnings;
  std::string error;
  bool ok = calico_mesos::parse_module_config(params, &config, &warnings, &error);
  for (size_t i = 0; i < warnings.size(); ++i) LOG(WARNING) << "calico-mesos: " << warnings[i];
  if (!ok) {
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
