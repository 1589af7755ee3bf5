// Tests of the module parameters create() reads, and of what the status
// hook reports (item 11).
#include <string>

#include "../isolator_logic.hpp"
#include "../module_config.hpp"
#include "harness.hpp"
#include "suites.hpp"

using namespace calico_mesos;
using harness::check;
using harness::contains;

namespace {

bool parse_timeout(const std::string& value, ModuleConfig* config, std::string* error) {
  Parameters p;
  p.push_back(std::make_pair(std::string("ipam_command"), std::string("/bin/true")));
  p.push_back(std::make_pair(std::string("isolator_command"), std::string("/bin/true")));
  p.push_back(std::make_pair(std::string("state_dir"), harness::dir + "/config-state"));
  p.push_back(std::make_pair(std::string("command_timeout"), value));
  Strings warnings;
  return parse_module_config(p, config, &warnings, error);
}

void command_timeout_is_strict() {
  ModuleConfig config;
  std::string error;
  check(parse_timeout("45", &config, &error) && config.client.timeout_ms == 45000,
        "command_timeout 45 is 45 s", error);
  const char* bad[] = {"30s", "30 ", " 30", "+30", "-5", "3.5", "0x10", "", "0", "3601",
                       "99999999999999999999", "30\n"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
    error.clear();
    bool ok = parse_timeout(bad[i], &config, &error);
    std::string shown = bad[i];
    if (!shown.empty() && shown[shown.size() - 1] == '\n') shown = shown.substr(0, shown.size() - 1) + "\\n";
    check(!ok && contains(error, "command_timeout") && contains(error, "'" + std::string(bad[i]) + "'"),
          "command_timeout '" + shown + "' is refused with a clear message", error);
  }
}

ContainerRecord dual() {
  ContainerRecord r;
  r.container_id = "c";
  r.ipv4.push_back("198.18.0.4");
  r.ipv6.push_back("fd00::4");
  r.netgroups.push_back("prod");
  return r;
}

void status_report() {
  NetworkReport r26 = network_report(dual(), 26);
  check(r26.ip_addresses.size() == 2 && !r26.ip_addresses[0].ipv6 &&
            r26.ip_addresses[0].ip == "198.18.0.4" && r26.ip_addresses[1].ipv6 &&
            r26.groups.size() == 1,
        "0.26: every address in ip_addresses", "");
  check(r26.has_ip_address && !r26.ip_address.ipv6 && r26.ip_address.ip == "198.18.0.4",
        "0.26: the deprecated ip_address too, for older consumers", "");
  ContainerRecord v6 = dual();
  v6.ipv4.clear();
  NetworkReport r26v6 = network_report(v6, 26);
  check(r26v6.has_ip_address && r26v6.ip_address.ipv6 && r26v6.ip_address.ip == "fd00::4",
        "0.26: an IPv6-only container's deprecated ip_address is its IPv6 address", "");
  NetworkReport r25 = network_report(dual(), 25);
  check(r25.ip_addresses.empty() && r25.has_ip_address && r25.ip_address.ip == "198.18.0.4",
        "0.25: one address, in the only fields it has", "");
}

}  // namespace

void config_tests() {
  command_timeout_is_strict();
  status_report();
}
