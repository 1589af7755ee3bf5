#include "json.hpp"

#include <cstdio>
#include <cctype>
#include <cstdlib>
#include <sstream>

namespace calico_mesos {

Json Json::boolean(bool b) {
  Json j;
  j.type_ = BOOL;
  j.boolean_ = b;
  return j;
}

Json Json::number(double n) {
  Json j;
  j.type_ = NUMBER;
  j.number_ = n;
  return j;
}

Json Json::string(const std::string& s) {
  Json j;
  j.type_ = STRING;
  j.string_ = s;
  return j;
}

Json Json::array(const std::vector<Json>& items) {
  Json j;
  j.type_ = ARRAY;
  j.items_ = items;
  return j;
}

Json Json::object(const std::map<std::string, Json>& members) {
  Json j;
  j.type_ = OBJECT;
  j.members_ = members;
  return j;
}

const Json& Json::operator[](const std::string& key) const {
  static const Json null_value;
  std::map<std::string, Json>::const_iterator it = members_.find(key);
  return it == members_.end() ? null_value : it->second;
}

bool json_string_list(const Json& v, std::vector<std::string>* out) {
  if (v.is_null()) return true;
  if (v.type() != Json::ARRAY) return false;
  for (size_t i = 0; i < v.items().size(); ++i) {
    if (v.items()[i].type() != Json::STRING) return false;
    out->push_back(v.items()[i].as_string());
  }
  return true;
}

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string Json::dump() const {
  switch (type_) {
    case NUL: return "null";
    case BOOL: return boolean_ ? "true" : "false";
    case NUMBER: {
      std::ostringstream s;
      if (number_ == static_cast<double>(static_cast<long long>(number_))) {
        s << static_cast<long long>(number_);
      } else {
        s << number_;
      }
      return s.str();
    }
    case STRING: return json_quote(string_);
    case ARRAY: {
      std::string out = "[";
      for (size_t i = 0; i < items_.size(); ++i) {
        if (i > 0) out += ",";
        out += items_[i].dump();
      }
      return out + "]";
    }
    case OBJECT: {
      std::string out = "{";
      bool first = true;
      for (std::map<std::string, Json>::const_iterator it = members_.begin();
           it != members_.end(); ++it) {
        if (!first) out += ",";
        first = false;
        out += json_quote(it->first) + ":" + it->second.dump();
      }
      return out + "}";
    }
  }
  return "null";
}

namespace {

// Recursive-descent parser over the input text.
class Parser {
public:
  explicit Parser(const std::string& text) : text_(text), pos_(0) {}

  bool document(Json* out, std::string* error) {
    skip_space();
    if (!value(out, 0)) {
      *error = error_;
      return false;
    }
    skip_space();
    if (pos_ != text_.size()) {
      *error = at("trailing characters after the JSON document");
      return false;
    }
    return true;
  }

private:
  static const int kMaxDepth = 64;

  std::string at(const std::string& what) {
    std::ostringstream s;
    s << what << " at offset " << pos_;
    return s.str();
  }

  bool fail(const std::string& what) {
    error_ = at(what);
    return false;
  }

  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\r' ||
            text_[pos_] == '\t')) {
      ++pos_;
    }
  }

  bool literal(const char* word) {
    size_t n = std::string(word).size();
    if (text_.compare(pos_, n, word) != 0) return fail("unexpected text");
    pos_ += n;
    return true;
  }

  bool value(Json* out, int depth) {
    if (depth > kMaxDepth) return fail("nesting too deep");
    if (pos_ >= text_.size()) return fail("unexpected end of input");
    char c = text_[pos_];
    if (c == 'n') { *out = Json::null(); return literal("null"); }
    if (c == 't') { *out = Json::boolean(true); return literal("true"); }
    if (c == 'f') { *out = Json::boolean(false); return literal("false"); }
    if (c == '"') {
      std::string s;
      if (!string(&s)) return false;
      *out = Json::string(s);
      return true;
    }
    if (c == '[') return array(out, depth);
    if (c == '{') return object(out, depth);
    if (c == '-' || (c >= '0' && c <= '9')) return number(out);
    return fail("unexpected character");
  }

  bool number(Json* out) {
    size_t start = pos_;
    if (text_[pos_] == '-') ++pos_;
    while (pos_ < text_.size() &&
           (std::isdigit(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.' ||
            text_[pos_] == 'e' || text_[pos_] == 'E' || text_[pos_] == '+' ||
            text_[pos_] == '-')) {
      ++pos_;
    }
    std::string digits = text_.substr(start, pos_ - start);
    char* end = NULL;
    double n = std::strtod(digits.c_str(), &end);
    if (digits.empty() || end != digits.c_str() + digits.size()) {
      return fail("bad number");
    }
    *out = Json::number(n);
    return true;
  }

  static void append_utf8(unsigned cp, std::string* s) {
    if (cp < 0x80) {
      *s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *s += static_cast<char>(0xC0 | (cp >> 6));
      *s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *s += static_cast<char>(0xE0 | (cp >> 12));
      *s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *s += static_cast<char>(0xF0 | (cp >> 18));
      *s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool hex4(unsigned* out) {
    if (pos_ + 4 > text_.size()) return fail("short \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = text_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= h - '0';
      else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
      else return fail("bad \\u escape");
    }
    *out = v;
    return true;
  }

  bool string(std::string* out) {
    ++pos_;  // opening quote
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in string");
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (pos_ >= text_.size()) break;
      char e = text_[pos_++];
      switch (e) {
        case '"': *out += '"'; break;
        case '\\': *out += '\\'; break;
        case '/': *out += '/'; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'n': *out += '\n'; break;
        case 'r': *out += '\r'; break;
        case 't': *out += '\t'; break;
        case 'u': {
          unsigned cp = 0;
          if (!hex4(&cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned low = 0;
            if (text_.compare(pos_, 2, "\\u") != 0) return fail("lone surrogate");
            pos_ += 2;
            if (!hex4(&low) || low < 0xDC00 || low > 0xDFFF) return fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(cp, out);
          break;
        }
        default: return fail("bad escape");
      }
    }
    return fail("unterminated string");
  }

  bool array(Json* out, int depth) {
    ++pos_;
    std::vector<Json> items;
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      *out = Json::array(items);
      return true;
    }
    for (;;) {
      skip_space();
      Json item;
      if (!value(&item, depth + 1)) return false;
      items.push_back(item);
      skip_space();
      if (pos_ >= text_.size()) return fail("unterminated array");
      char c = text_[pos_++];
      if (c == ']') break;
      if (c != ',') return fail("expected , or ] in array");
    }
    *out = Json::array(items);
    return true;
  }

  bool object(Json* out, int depth) {
    ++pos_;
    std::map<std::string, Json> members;
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      *out = Json::object(members);
      return true;
    }
    for (;;) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') return fail("expected a member name");
      std::string key;
      if (!string(&key)) return false;
      skip_space();
      if (pos_ >= text_.size() || text_[pos_++] != ':') return fail("expected :");
      skip_space();
      Json v;
      if (!value(&v, depth + 1)) return false;
      members[key] = v;
      skip_space();
      if (pos_ >= text_.size()) return fail("unterminated object");
      char c = text_[pos_++];
      if (c == '}') break;
      if (c != ',') return fail("expected , or } in object");
    }
    *out = Json::object(members);
    return true;
  }

  const std::string& text_;
  size_t pos_;
  std::string error_;
};

}  // namespace

bool parse_json(const std::string& text, Json* out, std::string* error) {
  Parser p(text);
  return p.document(out, error);
}

}  // namespace calico_mesos
