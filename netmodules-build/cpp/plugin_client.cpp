#include "plugin_client.hpp"

#include <sstream>

#include "subprocess.hpp"

namespace calico_mesos {

RequestBuilder& RequestBuilder::str(const std::string& key, const std::string& value) {
  args_[key] = Json::string(value);
  return *this;
}

RequestBuilder& RequestBuilder::num(const std::string& key, long long value) {
  args_[key] = Json::number(static_cast<double>(value));
  return *this;
}

RequestBuilder& RequestBuilder::strings(const std::string& key,
                                        const std::vector<std::string>& values) {
  if (values.empty()) return *this;
  return list(key, values);
}

RequestBuilder& RequestBuilder::list(const std::string& key,
                                     const std::vector<std::string>& values) {
  std::vector<Json> items;
  for (size_t i = 0; i < values.size(); ++i) items.push_back(Json::string(values[i]));
  args_[key] = Json::array(items);
  return *this;
}

RequestBuilder& RequestBuilder::labels(const Labels& labels) {
  if (labels.empty()) return *this;
  std::vector<Json> items;
  for (Labels::const_iterator it = labels.begin(); it != labels.end(); ++it) {
    std::map<std::string, Json> label;
    label["key"] = Json::string(it->first);
    label["value"] = Json::string(it->second);
    items.push_back(Json::object(label));
  }
  args_["labels"] = Json::array(items);
  return *this;
}

std::string RequestBuilder::build() const {
  std::map<std::string, Json> top;
  top["args"] = Json::object(args_);
  top["command"] = Json::string(command_);
  return Json::object(top).dump();
}

std::string reserve_request(const std::string& hostname, const std::string& uid,
                            const Strings& ipv4, const Strings& ipv6, const Strings& netgroups,
                            const Labels& labels) {
  return RequestBuilder("reserve")
      .str("hostname", hostname)
      .str("uid", uid)
      .strings("ipv4_addrs", ipv4)
      .strings("ipv6_addrs", ipv6)
      .strings("netgroups", netgroups)
      .labels(labels)
      .build();
}

std::string allocate_request(const std::string& hostname, const std::string& uid, int num_ipv4,
                             int num_ipv6, const Strings& netgroups, const Labels& labels) {
  return RequestBuilder("allocate")
      .str("hostname", hostname)
      .str("uid", uid)
      .num("num_ipv4", num_ipv4)
      .num("num_ipv6", num_ipv6)
      .strings("netgroups", netgroups)
      .labels(labels)
      .build();
}

std::string release_request(const std::string& uid) {
  return RequestBuilder("release").str("uid", uid).build();
}

std::string isolate_request(const std::string& hostname, const std::string& container_id,
                            long long pid, const Strings& ipv4, const Strings& ipv6,
                            const Strings& netgroups, const Labels& labels) {
  return RequestBuilder("isolate")
      .str("hostname", hostname)
      .str("container_id", container_id)
      .num("pid", pid)
      .strings("ipv4_addrs", ipv4)
      .strings("ipv6_addrs", ipv6)
      .strings("netgroups", netgroups)
      .labels(labels)
      .build();
}

std::string cleanup_request(const std::string& hostname, const std::string& container_id) {
  return RequestBuilder("cleanup").str("hostname", hostname).str("container_id", container_id).build();
}

std::string gc_request(const std::string& hostname, const std::set<std::string>& containers) {
  return RequestBuilder("gc")
      .str("hostname", hostname)
      .list("containers", std::vector<std::string>(containers.begin(), containers.end()))
      .build();
}

namespace {

std::string first_line(const std::string& s, size_t max) {
  std::string line = s.substr(0, s.find('\n'));
  if (line.size() > max) line = line.substr(0, max) + "...";
  return line;
}

}  // namespace

PluginAnswer parse_answer(const std::string& stdout_text, bool exited, int exit_status,
                          AnswerKind kind) {
  PluginAnswer a;
  Json doc;
  std::string parse_error;
  bool parsed = parse_json(stdout_text, &doc, &parse_error) && doc.type() == Json::OBJECT;

  // The plugin's own error text is the best message there is.
  if (parsed && doc["error"].type() == Json::STRING) {
    a.error = doc["error"].as_string();
    return a;
  }
  if (!exited || exit_status != 0) {
    std::ostringstream s;
    if (exited) {
      s << "the plugin exited with status " << exit_status;
    } else {
      s << "the plugin was killed by a signal";
    }
    if (!parsed) s << " and answered no JSON: '" << first_line(stdout_text, 200) << "'";
    a.error = s.str();
    return a;
  }
  if (!parsed) {
    a.error = "the plugin's answer is not a JSON object (" + parse_error + "): '" +
              first_line(stdout_text, 200) + "'";
    return a;
  }
  if (!doc["error"].is_null()) {
    a.error = "the plugin's answer has an error field that is not a string";
    return a;
  }
  for (std::map<std::string, Json>::const_iterator it = doc.members().begin();
       it != doc.members().end(); ++it) {
    bool known = it->first == "error" ||
                 (kind == ADDRESSES && (it->first == "ipv4" || it->first == "ipv6"));
    if (!known) {
      a.error = "the plugin's answer has an unexpected field '" + it->first + "'";
      return a;
    }
  }
  if (kind == ADDRESSES &&
      (!json_string_list(doc["ipv4"], &a.ipv4) || !json_string_list(doc["ipv6"], &a.ipv6))) {
    a.error = "the plugin's answer has ipv4/ipv6 fields that are not lists of strings";
    return a;
  }
  a.ok = true;
  return a;
}

PluginAnswer call_plugin(const std::string& command, const std::string& request,
                         AnswerKind kind, const ClientOptions& options) {
  return call_plugin(command, request, kind, options, Deadline(options.timeout_ms));
}

PluginAnswer call_plugin(const std::string& command, const std::string& request,
                         AnswerKind kind, const ClientOptions& options, const Deadline& deadline) {
  PluginAnswer a;
  const int left_ms = deadline.remaining_ms();
  const bool whole = left_ms >= deadline.budget_ms();
  std::ostringstream budget;
  budget << deadline.budget_ms() / 1000.0 << " s";
  if (left_ms <= 0) {
    a.error = "not run: the call's " + budget.str() + " deadline had passed";
    return a;
  }
  CommandResult r = run_command(command, request, left_ms, options.max_output);
  if (!r.started) {
    a.error = "cannot run " + command + ": " + r.failure;
    return a;
  }
  if (r.timed_out) {
    std::ostringstream s;
    if (whole) {
      s << command << " did not answer within " << budget.str() << " and was killed";
    } else {
      s << command << " did not answer within what was left of the call's " << budget.str()
        << " deadline and was killed";
    }
    a.error = s.str();
    a.stderr_text = r.err;
    return a;
  }
  if (!r.failure.empty()) {
    a.error = "running " + command + " failed: " + r.failure;
    a.stderr_text = r.err;
    return a;
  }
  if (r.out_truncated) {
    a.error = command + " wrote more than the answer limit to stdout";
    a.stderr_text = r.err;
    return a;
  }
  // The plugin's own error text is passed on as it is (operators grep
  // for it); parse_answer words its other failures itself.
  a = parse_answer(r.out, r.exited, r.exit_status, kind);
  a.stderr_text = r.err;
  return a;
}

}  // namespace calico_mesos
