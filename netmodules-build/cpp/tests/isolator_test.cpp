// Tests of the isolator logic (what the Mesos adapter runs for prepare,
// isolate, cleanup and recover) against fake plugins that log every
// request they get.
#include <time.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../isolator_logic.hpp"
#include "../json.hpp"
#include "harness.hpp"
#include "suites.hpp"

using namespace calico_mesos;
using harness::check;
using harness::contains;

namespace {

// One fake plugin: logs each request as a line of <name>.log and answers
// per command; `actions` overrides the default answer of a command.
struct FakePlugin {
  std::string path;
  std::string log;
  std::string state_dir;

  FakePlugin(const std::string& name, const std::map<std::string, std::string>& actions) {
    log = harness::dir + "/" + name + ".log";
    state_dir = harness::dir + "/" + name + "-state";
    std::map<std::string, std::string> a;
    a["reserve"] = "echo '{\"ipv4\":[\"198.18.0.5\"],\"ipv6\":[],\"error\":null}'";
    a["allocate"] = "echo '{\"ipv4\":[\"198.18.0.9\"],\"ipv6\":[\"fd00::9\"],\"error\":null}'";
    for (std::map<std::string, std::string>::const_iterator it = actions.begin();
         it != actions.end(); ++it) {
      a[it->first] = it->second;
    }
    std::ostringstream body;
    body << "req=$(cat)\nprintf '%s\\n' \"$req\" >> " << log << "\ncase \"$req\" in\n";
    for (std::map<std::string, std::string>::const_iterator it = a.begin(); it != a.end(); ++it) {
      body << "  *'\"command\":\"" << it->first << "\"'*) " << it->second << " ;;\n";
    }
    body << "  *) echo '{\"error\":null}' ;;\nesac";
    path = harness::script(name + ".sh", body.str());
  }

  ModuleConfig config(int timeout_ms) const {
    ModuleConfig c;
    c.ipam_command = path;
    c.isolator_command = path;
    c.state_dir = state_dir;
    c.client.timeout_ms = timeout_ms;
    ContainerStore store(state_dir);
    std::string error;
    store.prepare(&error);
    return c;
  }

  // The requests received so far, one per entry.
  std::vector<std::string> requests() const {
    std::vector<std::string> out;
    std::istringstream in(harness::read_file(log));
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }

  std::vector<std::string> requests(const std::string& command) const {
    std::vector<std::string> all = requests(), out;
    for (size_t i = 0; i < all.size(); ++i) {
      if (contains(all[i], "\"command\":\"" + command + "\"")) out.push_back(all[i]);
    }
    return out;
  }

  std::string all() const { return harness::read_file(log); }
};

struct Logged {
  std::vector<std::string> lines;
};

LogSink sink(Logged* into) {
  return [into](Severity, const std::string& line) { into->lines.push_back(line); };
}

ContainerRecord record(const std::string& id) {
  ContainerRecord r;
  r.container_id = id;
  r.executor_id = "web.1";
  r.framework_id = "fw-1";
  r.ipv4.push_back("198.18.0.5");
  r.ipv6.push_back("fd00::5");
  return r;
}

// Every release is by the container's uid and names no address.
bool releases_by_uid_only(const FakePlugin& p, const std::string& uid) {
  std::vector<std::string> releases = p.requests("release");
  for (size_t i = 0; i < releases.size(); ++i) {
    if (contains(releases[i], "\"ips\"") || !contains(releases[i], "\"uid\":\"" + uid + "\"")) {
      return false;
    }
  }
  return true;
}

// Item 1: an address freed by the plugin's cleanup may already belong to
// a new container; releasing it by address would free the new owner's.
void release_by_uid_only() {
  FakePlugin p("uid-only", std::map<std::string, std::string>());
  Registry registry;
  Logged logged;
  IsolatorLogic logic(p.config(10000), &registry, sink(&logged));
  ContainerRecord r = record("c-teardown");
  registry.put(r);
  std::string error = logic.cleanup(r, Deadline(10000));
  check(error.empty() && p.requests("cleanup").size() == 1 && releases_by_uid_only(p, "c-teardown"),
        "teardown never releases by address", error + "\n" + p.all());

  std::map<std::string, std::string> failing;
  failing["allocate"] = "echo '{\"error\":\"pool exhausted\"}'; exit 1";
  FakePlugin q("rollback-uid", failing);
  IsolatorLogic rollback(q.config(10000), &registry, sink(&logged));
  Requested wanted;
  wanted.ipv4.push_back("198.18.0.5");
  wanted.any_ipv6 = 1;
  ContainerRecord out;
  error = rollback.prepare(record("c-rollback"), wanted, Deadline(10000), &out);
  check(contains(error, "pool exhausted") && q.requests("release").size() == 1 &&
            releases_by_uid_only(q, "c-rollback"),
        "a failed allocate's rollback releases by uid", error + "\n" + q.all());
}

// Item 4: Mesos calls cleanup for every container, most of them on the
// host network; only the ones the module networked are its business.
void cleanup_only_known_containers() {
  FakePlugin p("known-only", std::map<std::string, std::string>());
  Registry registry;
  Logged logged;
  IsolatorLogic logic(p.config(10000), &registry, sink(&logged));
  ContainerRecord r;
  check(!logic.knows("host-network-container", &r) && p.requests().empty(),
        "cleanup leaves containers the module never networked alone", p.all());

  // A record on disk only (written before an agent restart) is known.
  ContainerStore store(p.state_dir);
  std::string error;
  store.save(record("c-on-disk"), &error);
  check(logic.knows("c-on-disk", &r) && r.ipv4.size() == 1 && r.ipv4[0] == "198.18.0.5",
        "a state_dir record makes a container known", error);
  check(logic.cleanup(r, Deadline(10000)).empty() && !logic.knows("c-on-disk", &r),
        "cleanup forgets the container, on disk too", p.all());

  // A prepare that failed half-way is still known, so the cleanup Mesos
  // runs after it frees what the uid may hold.
  std::map<std::string, std::string> hanging;
  hanging["allocate"] = "exec sleep 60";
  FakePlugin q("known-after-failure", hanging);
  IsolatorLogic failing(q.config(300), &registry, sink(&logged));
  Requested wanted;
  wanted.any_ipv4 = 1;
  ContainerRecord out;
  error = failing.prepare(record("c-half-prepared"), wanted, Deadline(300), &out);
  check(!error.empty() && failing.knows("c-half-prepared", &r),
        "a container whose prepare failed is known to cleanup", error);
}

double seconds_now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// Item 3: a slow reserve, a hung allocate and a hung rollback release
// share one command_timeout; they used to take one each.
void one_deadline_per_call() {
  std::map<std::string, std::string> slow;
  slow["reserve"] = "sleep 0.5; echo '{\"ipv4\":[\"198.18.0.5\"],\"ipv6\":[],\"error\":null}'";
  slow["allocate"] = "exec sleep 60";
  slow["release"] = "exec sleep 60";
  FakePlugin p("deadline", slow);
  Registry registry;
  Logged logged;
  const int timeout_ms = 2000;
  IsolatorLogic logic(p.config(timeout_ms), &registry, sink(&logged));
  Requested wanted;
  wanted.ipv4.push_back("198.18.0.5");
  wanted.any_ipv4 = 1;
  ContainerRecord out;
  double start = seconds_now();
  std::string error = logic.prepare(record("c-deadline"), wanted, Deadline(timeout_ms), &out);
  double took = seconds_now() - start;
  std::ostringstream detail;
  detail << "took " << took << " s: " << error;
  // 0.5 + 2 + 2 s before; 2 s now (the bound leaves room for a slow host).
  check(!error.empty() && took < 3.0, "prepare, rollback included, ends at its deadline",
        detail.str());
  check(contains(error, "allocate failed") && contains(error, "2 s"),
        "the error names the deadline", error);
}

std::string env_value(const Environment& env, const std::string& name) {
  for (size_t i = 0; i < env.size(); ++i) {
    if (env[i].first == name) return env[i].second;
  }
  return "(unset)";
}

// Item 2: libprocess 0.26 parses LIBPROCESS_IP as IPv4 only and aborts
// the executor on anything else.
void libprocess_ip_is_ipv4_only() {
  ContainerRecord dual = record("c-dual");
  check(env_value(executor_environment(dual), "LIBPROCESS_IP") == "198.18.0.5",
        "a dual-stack executor gets its IPv4 address as LIBPROCESS_IP", "");
  ContainerRecord v6 = record("c-v6");
  v6.ipv4.clear();
  Environment env = executor_environment(v6);
  check(env_value(env, "LIBPROCESS_IP") == "(unset)", "an IPv6-only executor gets no LIBPROCESS_IP",
        env_value(env, "LIBPROCESS_IP"));
  ContainerRecord odd = record("c-odd");
  odd.ipv4[0] = "fd00::7";
  odd.ipv4.push_back("198.18.0.7");
  check(env_value(executor_environment(odd), "LIBPROCESS_IP") == "198.18.0.7",
        "only a real IPv4 address becomes LIBPROCESS_IP", env_value(executor_environment(odd), "LIBPROCESS_IP"));

  std::map<std::string, std::string> v6only;
  v6only["allocate"] = "echo '{\"ipv4\":[],\"ipv6\":[\"fd00::9\"],\"error\":null}'";
  FakePlugin p("v6-only", v6only);
  Registry registry;
  Logged logged;
  IsolatorLogic logic(p.config(10000), &registry, sink(&logged));
  Requested wanted;
  wanted.any_ipv6 = 1;
  ContainerRecord out;
  std::string error = logic.prepare(record("c-v6-prepared"), wanted, Deadline(10000), &out);
  std::string lines;
  for (size_t i = 0; i < logged.lines.size(); ++i) lines += logged.lines[i] + "\n";
  check(error.empty() && out.ipv6.size() == 1 && contains(lines, "no LIBPROCESS_IP"),
        "an IPv6-only prepare says in the log what its executor gets", error + lines);
}

// The gc request of a fake plugin's log: its container ids, in order.
std::vector<std::string> gc_containers(const std::string& request) {
  Json j;
  std::string error;
  std::vector<std::string> ids;
  if (parse_json(request, &j, &error)) json_string_list(j["args"]["containers"], &ids);
  return ids;
}

// recover() at agent start: the ended containers are cleaned up first,
// then one gc names every container the module still knows, so the
// plugin frees what nobody knows any more (CNI 1.1's GC verb).
void recovery_sends_gc_after_the_cleanups() {
  std::map<std::string, std::string> actions;
  // c-stuck's cleanup fails: its record stays, so gc must name it.
  actions["cleanup"] =
      "case \"$req\" in *c-stuck*) echo '{\"error\":\"etcd is down\"}'; exit 1 ;; esac; "
      "echo '{\"error\":null}'";
  FakePlugin p("recover-gc", actions);
  Registry registry;
  Logged logged;
  IsolatorLogic logic(p.config(10000), &registry, sink(&logged));
  ContainerStore store(p.state_dir);
  std::string error;
  store.save(record("c-alive"), &error);
  store.save(record("c-ended"), &error);
  store.save(record("c-stuck"), &error);
  // An unreadable record still names a container the module knew.
  std::ofstream(p.state_dir + "/c-garbled.json") << "{not json";
  std::set<std::string> alive;
  alive.insert("c-alive");
  alive.insert("c-host-network");  // recovered, never networked by us
  std::vector<ContainerRecord> ended = logic.recover(alive);
  // A container prepared since the agent came up is known too.
  registry.put(record("c-new"));
  logic.finish_recovery(ended, alive);

  std::vector<std::string> all = p.requests();
  std::vector<std::string> gcs = p.requests("gc");
  check(gcs.size() == 1 && !all.empty() && all.back() == gcs[0],
        "recovery sends one gc, after the cleanups", p.all());
  std::vector<std::string> releases = p.requests("release");
  check(p.requests("cleanup").size() == 2 && releases.size() == 1 &&
            contains(releases[0], "\"uid\":\"c-ended\""),
        "both ended containers were cleaned up first", p.all());
  std::vector<std::string> ids = gc_containers(gcs.empty() ? "" : gcs[0]);
  std::string listed;
  for (size_t i = 0; i < ids.size(); ++i) listed += ids[i] + " ";
  check(listed == "c-alive c-garbled c-host-network c-new c-stuck ",
        "gc names the recovered and every container still known, not the cleaned-up one",
        listed + "\n" + p.all());
  ContainerRecord r;
  check(!store.load("c-ended", &r) && store.load("c-stuck", &r),
        "a cleaned-up record is gone, a failed one kept for the next start", p.all());
}

// A failing or hanging gc is logged and never fails recovery.
void a_failing_gc_is_only_logged() {
  std::map<std::string, std::string> actions;
  actions["gc"] = "echo '{\"error\":\"etcd is unreachable\"}'; exit 1";
  FakePlugin p("gc-fails", actions);
  Registry registry;
  Logged logged;
  IsolatorLogic logic(p.config(10000), &registry, sink(&logged));
  std::set<std::string> none;
  logic.finish_recovery(logic.recover(none), none);
  std::vector<std::string> gcs = p.requests("gc");
  std::string lines;
  for (size_t i = 0; i < logged.lines.size(); ++i) lines += logged.lines[i] + "\n";
  check(gcs.size() == 1 && contains(gcs[0], "\"containers\":[]"),
        "with nothing recovered gc still names the (empty) list", p.all());
  check(contains(lines, "gc after recovery failed") && contains(lines, "etcd is unreachable"),
        "the failure is logged with the plugin's error", lines);
}

}  // namespace

void isolator_logic_tests() {
  release_by_uid_only();
  cleanup_only_known_containers();
  one_deadline_per_call();
  libprocess_ip_is_ipv4_only();
  recovery_sends_gc_after_the_cleanups();
  a_failing_gc_is_only_logged();
}
