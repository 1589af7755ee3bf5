#include "harness.hpp"

#include <sys/stat.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>

namespace harness {

std::string dir;

static int passed_ = 0, failed_ = 0;
static std::mutex mutex_;

void check(bool ok, const std::string& name, const std::string& detail) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (ok) {
    ++passed_;
    std::cout << "ok   " << name << "\n";
  } else {
    ++failed_;
    std::cout << "FAIL " << name << ": " << detail << "\n";
  }
  std::cout.flush();
}

int passed() { return passed_; }
int failed() { return failed_; }

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string script(const std::string& name, const std::string& body) {
  std::string path = dir + "/" + name;
  std::ofstream f(path.c_str());
  f << "#!/bin/sh\n" << body << "\n";
  f.close();
  chmod(path.c_str(), 0755);
  return path;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path.c_str());
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

}  // namespace harness
