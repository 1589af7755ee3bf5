#include "module_config.hpp"

#include <unistd.h>

#include "container_store.hpp"

namespace calico_mesos {

namespace {

// Whole seconds, digits only: atoi took "30s" for 30 and "3.5" for 3.
bool parse_seconds(const std::string& value, int* seconds, std::string* error) {
  const int max = 3600;
  long long n = 0;
  bool ok = !value.empty() && value.size() <= 4;
  for (size_t i = 0; ok && i < value.size(); ++i) {
    ok = value[i] >= '0' && value[i] <= '9';
    n = n * 10 + (value[i] - '0');
  }
  if (!ok || n < 1 || n > max) {
    *error = "command_timeout must be a whole number of seconds from 1 to 3600 (digits only), "
             "got '" + value + "'";
    return false;
  }
  *seconds = static_cast<int>(n);
  return true;
}

}  // namespace

bool parse_module_config(const Parameters& parameters, ModuleConfig* config, Strings* warnings,
                         std::string* error) {
  config->state_dir = "/var/lib/calico-mesos/containers";
  int timeout_s = 30;
  for (size_t i = 0; i < parameters.size(); ++i) {
    const std::string& key = parameters[i].first;
    const std::string& value = parameters[i].second;
    if (key == "ipam_command") {
      config->ipam_command = value;
    } else if (key == "isolator_command") {
      config->isolator_command = value;
    } else if (key == "state_dir") {
      config->state_dir = value;
    } else if (key == "command_timeout") {
      if (!parse_seconds(value, &timeout_s, error)) return false;
    } else {
      warnings->push_back("ignoring unknown module parameter '" + key + "'");
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
