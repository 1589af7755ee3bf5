// The plugin client core: builds the protocol's JSON requests, runs the
// plugin command with a timeout, and turns its answer into a result or a
// clear error. Plain C++11, no Mesos headers: unit-tested everywhere; the
// Mesos adapter is a thin layer over it.
#ifndef CALICO_MESOS_PLUGIN_CLIENT_HPP
#define CALICO_MESOS_PLUGIN_CLIENT_HPP

#include <map>
#include <set>
#include <string>
#include <vector>

#include "deadline.hpp"
#include "json.hpp"

namespace calico_mesos {

typedef std::map<std::string, std::string> Labels;

// Builds `{"args":{...},"command":...}` compactly, keys sorted, empty
// lists left out: the shape the 2016 module sent and the plugin accepts.
class RequestBuilder {
public:
  explicit RequestBuilder(const std::string& command) : command_(command) {}
  RequestBuilder& str(const std::string& key, const std::string& value);
  RequestBuilder& num(const std::string& key, long long value);
  RequestBuilder& strings(const std::string& key, const std::vector<std::string>& values);
  // A list that is sent even when empty (the plugin requires it).
  RequestBuilder& list(const std::string& key, const std::vector<std::string>& values);
  RequestBuilder& labels(const Labels& labels);
  std::string build() const;

private:
  std::string command_;
  std::map<std::string, Json> args_;
};

typedef std::vector<std::string> Strings;

// The protocol's requests, exactly as the module sends them. The
// container id is the IPAM uid, so the plugin can release by handle from
// the container id alone.
std::string reserve_request(const std::string& hostname, const std::string& uid,
                            const Strings& ipv4, const Strings& ipv6, const Strings& netgroups,
                            const Labels& labels);
std::string allocate_request(const std::string& hostname, const std::string& uid, int num_ipv4,
                             int num_ipv6, const Strings& netgroups, const Labels& labels);
// By uid only: an address freed earlier (by the plugin's cleanup) may
// already belong to another container, so the module never names one.
std::string release_request(const std::string& uid);
std::string isolate_request(const std::string& hostname, const std::string& container_id,
                            long long pid, const Strings& ipv4, const Strings& ipv6,
                            const Strings& netgroups, const Labels& labels);
std::string cleanup_request(const std::string& hostname, const std::string& container_id);
// Sent once at agent start: every container the module still knows; the
// plugin frees what this node holds for any other.
std::string gc_request(const std::string& hostname, const std::set<std::string>& containers);

struct PluginAnswer {
  bool ok;
  std::string error;               // set when !ok: what the operator sees
  std::vector<std::string> ipv4;
  std::vector<std::string> ipv6;
  std::string stderr_text;         // the plugin's log lines, for the agent log
  PluginAnswer() : ok(false) {}
};

struct ClientOptions {
  int timeout_ms;
  size_t max_output;
  ClientOptions() : timeout_ms(30000), max_output(4 * 1024 * 1024) {}
};

// Which fields an answer may carry.
enum AnswerKind { ADDRESSES, PLAIN };

// Runs `command` with `request` on stdin and validates the answer; the
// run is killed at `deadline` (the isolator call's, shared by its runs).
PluginAnswer call_plugin(const std::string& command, const std::string& request,
                         AnswerKind kind, const ClientOptions& options, const Deadline& deadline);
// One run with a deadline of its own: options.timeout_ms from now.
PluginAnswer call_plugin(const std::string& command, const std::string& request,
                         AnswerKind kind, const ClientOptions& options);

// Validates one answer (exposed for tests): exit status, JSON shape,
// the documented fields only, the plugin's own error text quoted.
PluginAnswer parse_answer(const std::string& stdout_text, bool exited, int exit_status,
                          AnswerKind kind);

}  // namespace calico_mesos

#endif
