// A small JSON value with a strict parser and a compact writer: just what
// the plugin protocol needs, in plain C++11 (no Mesos, no third party).
#ifndef CALICO_MESOS_JSON_HPP
#define CALICO_MESOS_JSON_HPP

#include <map>
#include <string>
#include <vector>

namespace calico_mesos {

class Json {
public:
  enum Type { NUL, BOOL, NUMBER, STRING, ARRAY, OBJECT };

  Json() : type_(NUL), boolean_(false), number_(0) {}
  static Json null() { return Json(); }
  static Json boolean(bool b);
  static Json number(double n);
  static Json string(const std::string& s);
  static Json array(const std::vector<Json>& items);
  static Json object(const std::map<std::string, Json>& members);

  Type type() const { return type_; }
  bool is_null() const { return type_ == NUL; }
  bool as_bool() const { return boolean_; }
  double as_number() const { return number_; }
  const std::string& as_string() const { return string_; }
  const std::vector<Json>& items() const { return items_; }
  const std::map<std::string, Json>& members() const { return members_; }
  // The member `key` of an object, or null.
  const Json& operator[](const std::string& key) const;

  // Compact text, object keys sorted (std::map order).
  std::string dump() const;

private:
  Type type_;
  bool boolean_;
  double number_;
  std::string string_;
  std::vector<Json> items_;
  std::map<std::string, Json> members_;
};

// Parses exactly one JSON document (surrounding white space allowed).
// On failure returns false and sets `error`.
bool parse_json(const std::string& text, Json* out, std::string* error);

// Appends the strings of a JSON array to `out`; null counts as empty.
// False when `v` is not an array of strings.
bool json_string_list(const Json& v, std::vector<std::string>* out);

// `s` as a JSON string literal, quotes included.
std::string json_quote(const std::string& s);

}  // namespace calico_mesos

#endif
