// Unit tests of the plugin client core, driven against small shell
// scripts that answer, fail, hang and print too much. Usage:
//   client_test <scratch dir>
// Prints one line per test and "N passed, M failed"; exits 1 on failure.
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <string>

#include "../container_store.hpp"
#include "../json.hpp"
#include "../plugin_client.hpp"
#include "harness.hpp"
#include "suites.hpp"

using namespace calico_mesos;
using harness::check;
using harness::contains;
using harness::dir;
using harness::script;

static PluginAnswer call(const std::string& path, AnswerKind kind, int timeout_ms = 10000) {
  ClientOptions o;
  o.timeout_ms = timeout_ms;
  return call_plugin(path, RequestBuilder("allocate").str("uid", "u").build(), kind, o);
}

static void request_shapes() {
  std::vector<std::string> groups;
  groups.push_back("prod");
  Labels labels;
  labels["rack"] = "3A";
  std::string r = RequestBuilder("allocate")
                      .str("hostname", "h")
                      .str("uid", "u")
                      .num("num_ipv4", 1)
                      .num("num_ipv6", 0)
                      .strings("netgroups", groups)
                      .strings("ipv6_addrs", std::vector<std::string>())
                      .labels(labels)
                      .build();
  std::string want =
      "{\"args\":{\"hostname\":\"h\",\"labels\":[{\"key\":\"rack\",\"value\":\"3A\"}],"
      "\"netgroups\":[\"prod\"],\"num_ipv4\":1,\"num_ipv6\":0,\"uid\":\"u\"},"
      "\"command\":\"allocate\"}";
  check(r == want, "request is compact, sorted, empty lists omitted", r);
  std::set<std::string> ids;
  std::string g = gc_request("h", ids);
  check(g == "{\"args\":{\"containers\":[],\"hostname\":\"h\"},\"command\":\"gc\"}",
        "gc always sends its list, even empty", g);
  ids.insert("c2");
  ids.insert("c1");
  g = gc_request("", ids);
  check(g == "{\"args\":{\"containers\":[\"c1\",\"c2\"],\"hostname\":\"\"},\"command\":\"gc\"}",
        "gc names the containers", g);
  std::string q = RequestBuilder("isolate").str("container_id", "a\"b\n").build();
  check(q == "{\"args\":{\"container_id\":\"a\\\"b\\n\"},\"command\":\"isolate\"}",
        "strings are escaped", q);
}

static void json_parsing() {
  Json j;
  std::string err;
  bool ok = parse_json(" {\"a\":[1,-2.5e1,\"\\u00e9\\ud83d\\ude00\"],\"b\":{\"c\":null},\"d\":true} ", &j, &err);
  check(ok && j["a"].items().size() == 3 && j["a"].items()[1].as_number() == -25 &&
            j["a"].items()[2].as_string() == "\xc3\xa9\xf0\x9f\x98\x80" && j["b"]["c"].is_null() &&
            j["d"].as_bool(),
        "parses nested documents and unicode escapes", err);
  check(!parse_json("{\"a\":1} x", &j, &err), "rejects trailing garbage", "");
  check(!parse_json("{\"a\":", &j, &err) && contains(err, "end of input"), "rejects truncated input", err);
  check(!parse_json(std::string(100, '['), &j, &err), "rejects absurd nesting", "");
}

static void answers() {
  std::string p = script("ok.sh", "cat >/dev/null\necho '{\"ipv4\":[\"198.18.0.4\"],\"ipv6\":[\"fd00::4\"],\"error\":null}'");
  PluginAnswer a = call(p, ADDRESSES);
  check(a.ok && a.ipv4.size() == 1 && a.ipv4[0] == "198.18.0.4" && a.ipv6[0] == "fd00::4",
        "success answer with addresses", a.error);

  p = script("stdin.sh", "cat > " + dir + "/seen.json\necho '{\"error\":null}'");
  a = call(p, PLAIN);
  std::ifstream seen((dir + "/seen.json").c_str());
  std::string got((std::istreambuf_iterator<char>(seen)), std::istreambuf_iterator<char>());
  check(a.ok && got == RequestBuilder("allocate").str("uid", "u").build(),
        "the request arrives on stdin", got);

  p = script("err.sh", "cat >/dev/null\necho '{\"error\": \"IP '\\''198.18.0.5'\\'' already in use.\"}'\nexit 1");
  a = call(p, ADDRESSES);
  check(!a.ok && a.error == "IP '198.18.0.5' already in use.", "error answer is quoted as is", a.error);

  p = script("exit3.sh", "cat >/dev/null\necho 'something broke' >&2\nexit 3");
  a = call(p, PLAIN);
  check(!a.ok && contains(a.error, "exited with status 3") && contains(a.stderr_text, "something broke"),
        "non-zero exit without an answer", a.error);

  p = script("zero-but-error.sh", "cat >/dev/null\necho '{\"error\":\"no pool\"}'");
  a = call(p, PLAIN);
  check(!a.ok && a.error == "no pool", "an error with exit 0 is still an error", a.error);

  p = script("garbage.sh", "cat >/dev/null\necho 'this is not json'");
  a = call(p, PLAIN);
  check(!a.ok && contains(a.error, "not a JSON object") && contains(a.error, "this is not json"),
        "unparsable answer", a.error);

  p = script("extra.sh", "cat >/dev/null\necho '{\"error\":null,\"surprise\":1}'");
  a = call(p, PLAIN);
  check(!a.ok && contains(a.error, "unexpected field 'surprise'"), "undocumented fields are refused", a.error);

  p = script("v4plain.sh", "cat >/dev/null\necho '{\"error\":null,\"ipv4\":[]}'");
  a = call(p, PLAIN);
  check(!a.ok, "addresses in a plain answer are refused", a.error);

  p = script("badlist.sh", "cat >/dev/null\necho '{\"error\":null,\"ipv4\":[1]}'");
  a = call(p, ADDRESSES);
  check(!a.ok && contains(a.error, "lists of strings"), "wrongly typed address lists", a.error);

  a = call(dir + "/does-not-exist", PLAIN);
  // posix_spawn reports it (glibc >= 2.24), or the child exits 127.
  check(!a.ok && (contains(a.error, "status 127") ||
                  (contains(a.error, "does-not-exist") && contains(a.error, "No such file"))),
        "a missing command fails clearly", a.error);
}

static void timeouts_and_volume() {
  std::string p = script("hang.sh", "cat >/dev/null\nexec sleep 60");
  PluginAnswer a = call(p, PLAIN, 500);
  check(!a.ok && contains(a.error, "did not answer within 0.5 s and was killed"), "a hanging plugin is killed",
        a.error);

  p = script("hang-no-read.sh", "exec sleep 60");
  a = call(p, PLAIN, 500);
  check(!a.ok && contains(a.error, "was killed"), "a plugin that never reads stdin is killed", a.error);

  p = script("big-stdout.sh",
             "cat >/dev/null\nhead -c 1048576 /dev/zero | tr '\\0' ' '\necho '{\"error\":null}'");
  a = call(p, PLAIN);
  check(a.ok, "1 MiB on stdout (before the answer) is drained", a.error);

  p = script("big-stderr.sh",
             "cat >/dev/null\nhead -c 1048576 /dev/zero | tr '\\0' x >&2\necho '{\"error\":null}'");
  a = call(p, PLAIN);
  check(a.ok && a.stderr_text.size() == 1048576, "1 MiB on stderr is drained and kept", a.error);

  ClientOptions small;
  small.max_output = 1024;
  a = call_plugin(p, "{}", PLAIN, small);
  check(a.ok, "stderr beyond the limit is drained and dropped", a.error);
  p = script("huge-stdout.sh", "cat >/dev/null\nhead -c 2048 /dev/zero | tr '\\0' ' '\necho '{\"error\":null}'");
  a = call_plugin(p, "{}", PLAIN, small);
  check(!a.ok && contains(a.error, "more than the answer limit"), "stdout beyond the limit is refused", a.error);

  p = script("touch.sh", "cat >/dev/null\ntouch " + dir + "/touched\necho '{\"error\":null}'");
  a = call_plugin(p, "{}", PLAIN, ClientOptions(), Deadline(0));
  check(!a.ok && contains(a.error, "deadline had passed") &&
            access((dir + "/touched").c_str(), F_OK) != 0,
        "nothing runs once the call's deadline has passed", a.error);

  p = script("early-exit.sh", "echo '{\"error\":null}'");
  ClientOptions o;
  a = call_plugin(p, std::string(4 * 1024 * 1024, ' '), PLAIN, o);
  check(a.ok, "a plugin that exits without reading a large request", a.error);
}

static void container_records() {
  ContainerStore store(dir + "/state/containers");
  std::string err;
  check(store.prepare(&err), "the state directory is created", err);
  ContainerRecord r;
  r.container_id = "ba11f1de-fc4d-46fd-9f15-424f4ef05a3a";
  r.executor_id = "web.1";
  r.framework_id = "fw-1";
  r.ipv4.push_back("198.18.0.4");
  r.ipv6.push_back("fd00::4");
  r.netgroups.push_back("prod");
  r.labels["rack"] = "3A";
  check(store.save(r, &err), "a record is saved", err);
  ContainerRecord bad = r;
  bad.container_id = "../escape";
  check(!store.save(bad, &err), "ids that are not file names are refused", "");
  std::ofstream junk((dir + "/state/containers/junk.json").c_str());
  junk << "{not json";
  junk.close();
  std::vector<std::string> problems;
  std::vector<ContainerRecord> all = store.load_all(&problems);
  check(all.size() == 1 && all[0].ipv4 == r.ipv4 && all[0].ipv6 == r.ipv6 &&
            all[0].labels == r.labels && all[0].executor_id == "web.1" && problems.size() == 1,
        "records survive a restart; unreadable files are reported", all.empty() ? "" : all[0].to_json());
  check(store.remove(r.container_id) && store.load_all(&problems).empty(), "a record is removed", "");
}

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--sigpipe-storm") {
    sigpipe_storm_main();
    return 0;
  }
  if (argc == 2 && std::string(argv[1]) == "--workers-without-threads") {
    return workers_without_threads_main();
  }
  const std::string name = argv[0];
  if (name.size() >= 13 && name.compare(name.size() - 13, 13, "/status-probe") == 0) {
    status_probe_main();
    return 0;
  }
  if (argc != 2) {
    std::cerr << "usage: client_test <scratch dir>\n";
    return 2;
  }
  dir = argv[1];
  request_shapes();
  json_parsing();
  answers();
  timeouts_and_volume();
  container_records();
  store_tests();
  isolator_logic_tests();
  config_tests();
  char self[4096] = {0};
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  const std::string self_path = n > 0 ? std::string(self, n) : std::string("/proc/self/exe");
  subprocess_tests(self_path);
  workers_tests(self_path);
  std::cout << harness::passed() << " passed, " << harness::failed() << " failed\n";
  return harness::failed() == 0 ? 0 : 1;
}
