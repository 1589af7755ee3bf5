// The module's parameters (modules.json key/value pairs), checked once in
// create(): anything wrong stops the agent with one clear log line instead
// of leaving tasks silently on the host network. Plain C++11.
#ifndef CALICO_MESOS_MODULE_CONFIG_HPP
#define CALICO_MESOS_MODULE_CONFIG_HPP

#include <string>
#include <utility>
#include <vector>

#include "plugin_client.hpp"

namespace calico_mesos {

struct ModuleConfig {
  std::string ipam_command;
  std::string isolator_command;
  std::string state_dir;
  ClientOptions client;  // client.timeout_ms: command_timeout
};

typedef std::vector<std::pair<std::string, std::string> > Parameters;

// Fills `config` (defaults: command_timeout 30 s, state_dir
// /var/lib/calico-mesos/containers, created here). False with `error`
// when the module must not load; unknown keys land in `warnings`.
bool parse_module_config(const Parameters& parameters, ModuleConfig* config, Strings* warnings,
                         std::string* error);

}  // namespace calico_mesos

#endif
