#include "container_store.hpp"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>

#include "json.hpp"

namespace calico_mesos {

namespace {

Json string_array(const std::vector<std::string>& v) {
  std::vector<Json> items;
  for (size_t i = 0; i < v.size(); ++i) items.push_back(Json::string(v[i]));
  return Json::array(items);
}

// Container ids become file names: only the characters Mesos uses.
bool safe_name(const std::string& id) {
  if (id.empty() || id.size() > 200 || id[0] == '.') return false;
  for (size_t i = 0; i < id.size(); ++i) {
    char c = id[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// The whole of `text` in a new file at `path`, on disk when this returns.
bool write_synced(const std::string& path, const std::string& text, std::string* error) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = "cannot create " + path + ": " + strerror(errno);
    return false;
  }
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = "cannot write " + path + ": " + strerror(errno);
      close(fd);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    *error = "cannot fsync " + path + ": " + strerror(errno);
    close(fd);
    return false;
  }
  if (close(fd) != 0) {
    *error = "cannot close " + path + ": " + strerror(errno);
    return false;
  }
  return true;
}

// Makes a rename in `dir` durable.
bool sync_dir(const std::string& dir, std::string* error) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot open " + dir + ": " + strerror(errno);
    return false;
  }
  bool ok = fsync(fd) == 0;
  if (!ok) *error = "cannot fsync " + dir + ": " + strerror(errno);
  close(fd);
  return ok;
}

}  // namespace

std::string ContainerRecord::to_json() const {
  std::map<std::string, Json> m;
  m["container_id"] = Json::string(container_id);
  m["executor_id"] = Json::string(executor_id);
  m["framework_id"] = Json::string(framework_id);
  m["ipv4"] = string_array(ipv4);
  m["ipv6"] = string_array(ipv6);
  m["netgroups"] = string_array(netgroups);
  std::map<std::string, Json> l;
  for (Labels::const_iterator it = labels.begin(); it != labels.end(); ++it) {
    l[it->first] = Json::string(it->second);
  }
  m["labels"] = Json::object(l);
  return Json::object(m).dump();
}

bool ContainerRecord::from_json(const std::string& text, ContainerRecord* out, std::string* error) {
  Json j;
  if (!parse_json(text, &j, error)) return false;
  if (j.type() != Json::OBJECT || j["container_id"].type() != Json::STRING) {
    *error = "not a container record";
    return false;
  }
  ContainerRecord r;
  r.container_id = j["container_id"].as_string();
  r.executor_id = j["executor_id"].as_string();
  r.framework_id = j["framework_id"].as_string();
  if (!json_string_list(j["ipv4"], &r.ipv4) || !json_string_list(j["ipv6"], &r.ipv6) ||
      !json_string_list(j["netgroups"], &r.netgroups)) {
    *error = "bad address or netgroup list";
    return false;
  }
  const std::map<std::string, Json>& labels = j["labels"].members();
  for (std::map<std::string, Json>::const_iterator it = labels.begin(); it != labels.end(); ++it) {
    r.labels[it->first] = it->second.as_string();
  }
  *out = r;
  return true;
}

bool ContainerStore::prepare(std::string* error) const {
  std::string partial;
  for (size_t i = 0; i <= dir_.size(); ++i) {
    if (i == dir_.size() || (dir_[i] == '/' && i > 0)) {
      partial = dir_.substr(0, i);
      if (mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
        *error = "cannot create " + partial + ": " + strerror(errno);
        return false;
      }
    }
  }
  return true;
}

std::string ContainerStore::path_of(const std::string& container_id) const {
  return dir_ + "/" + container_id + ".json";
}

bool ContainerStore::save(const ContainerRecord& record, std::string* error) const {
  if (!safe_name(record.container_id)) {
    *error = "container id '" + record.container_id + "' cannot be a file name";
    return false;
  }
  // Write, fsync, rename, fsync the directory: after a crash or a power
  // loss the record is the old one or the new one, never empty (its
  // container's addresses would leak).
  std::string path = path_of(record.container_id);
  std::string tmp = path + ".tmp";
  if (!write_synced(tmp, record.to_json(), error)) {
    unlink(tmp.c_str());
    return false;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "cannot rename " + tmp + ": " + strerror(errno);
    unlink(tmp.c_str());
    return false;
  }
  return sync_dir(dir_, error);
}

bool ContainerStore::remove(const std::string& container_id) const {
  return safe_name(container_id) && ::remove(path_of(container_id).c_str()) == 0;
}

bool ContainerStore::load(const std::string& container_id, ContainerRecord* out) const {
  if (!safe_name(container_id)) return false;
  std::ifstream f(path_of(container_id).c_str());
  if (!f) return false;
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::string error;
  return ContainerRecord::from_json(text, out, &error) && out->container_id == container_id;
}

std::vector<std::string> ContainerStore::ids() const {
  std::vector<std::string> out;
  DIR* d = opendir(dir_.c_str());
  if (d == NULL) return out;
  for (struct dirent* e = readdir(d); e != NULL; e = readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 6 || name.compare(name.size() - 5, 5, ".json") != 0) continue;
    std::string id = name.substr(0, name.size() - 5);
    if (safe_name(id)) out.push_back(id);
  }
  closedir(d);
  return out;
}

std::vector<ContainerRecord> ContainerStore::load_all(std::vector<std::string>* problems) const {
  std::vector<ContainerRecord> out;
  DIR* d = opendir(dir_.c_str());
  if (d == NULL) return out;
  for (struct dirent* e = readdir(d); e != NULL; e = readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 6 || name.compare(name.size() - 5, 5, ".json") != 0) continue;
    std::ifstream f((dir_ + "/" + name).c_str());
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    ContainerRecord r;
    std::string error;
    if (ContainerRecord::from_json(text, &r, &error)) {
      out.push_back(r);
    } else {
      problems->push_back(name + ": " + error);
    }
  }
  closedir(d);
  return out;
}

}  // namespace calico_mesos
