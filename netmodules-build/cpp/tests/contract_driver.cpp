// Drives a real calico-mesos plugin through the module's client core, with
// the module's own request builders: the contract test between the two
// halves (run by plugin/tests/module_contract.rs against a real etcd).
//   contract_driver <plugin> <container id>
// Prints one line per step; exits 1 at the first unexpected answer.
#include <iostream>
#include <set>
#include <string>

#include "../plugin_client.hpp"

using namespace calico_mesos;

static int fail(const std::string& step, const PluginAnswer& a) {
  std::cout << "FAIL " << step << ": " << a.error << "\n" << a.stderr_text;
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: contract_driver <plugin> <container id>\n";
    return 2;
  }
  const std::string plugin = argv[1], cid = argv[2];
  ClientOptions options;
  Strings groups;
  groups.push_back("prod");
  Labels labels;
  labels["rack"] = "3A";

  // The 2016 module sent hostname "" until its hook had seen a task.
  PluginAnswer a = call_plugin(plugin, allocate_request("", cid, 1, 1, groups, labels), ADDRESSES,
                               options);
  if (!a.ok || a.ipv4.size() != 1 || a.ipv6.size() != 1) return fail("allocate", a);
  std::cout << "allocated " << a.ipv4[0] << " " << a.ipv6[0] << "\n";

  Strings taken(1, a.ipv4[0]);
  PluginAnswer r = call_plugin(plugin, reserve_request("agent", "other", taken, Strings(), groups,
                                                       labels),
                               ADDRESSES, options);
  if (r.ok || r.error != "IP '" + a.ipv4[0] + "' already in use.") return fail("reserve conflict", r);
  std::cout << "reserve refused: " << r.error << "\n";

  // cleanup of a container that was never isolated: success, releases its
  // handle (the container id).
  PluginAnswer c = call_plugin(plugin, cleanup_request("agent", cid), PLAIN, options);
  if (!c.ok) return fail("cleanup", c);
  // What the module sends after the plugin's cleanup: by uid, with
  // nothing left to free.
  PluginAnswer rel = call_plugin(plugin, release_request(cid), PLAIN, options);
  if (!rel.ok) return fail("release", rel);
  std::cout << "cleaned up and released\n";

  // recover() at agent start: gc names the survivor; the plugin frees
  // what nobody names and keeps the survivor's addresses.
  const std::string survivor = cid + "-survivor";
  PluginAnswer s = call_plugin(plugin, allocate_request("", survivor, 1, 0, groups, labels),
                               ADDRESSES, options);
  if (!s.ok || s.ipv4.size() != 1) return fail("allocate survivor", s);
  std::set<std::string> known;
  known.insert(survivor);
  PluginAnswer g = call_plugin(plugin, gc_request("", known), PLAIN, options);
  if (!g.ok) return fail("gc", g);
  std::cout << "gc kept " << survivor << " " << s.ipv4[0] << "\n";
  return 0;
}
